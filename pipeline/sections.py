"""Config sections whose keys come from a registry, validated with the rest of the config.

`pairs` has one key per registered preference, `scoring` one per scorer kind, and the round
config one per section an upper layer registers (`dpo`, `sweep`, `reward_model`). A
`RegisteredSection` validates each registered key with its own class when the config is
validated, fills in the defaults of absent ones and rejects unknown keys, every problem
reported at its full key; registered values are read as attributes (`options.lyrics`).
`schema_model` declares the registered keys as ordinary fields, for the JSON schema.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model, model_validator
from pydantic_core import PydanticCustomError


@dataclass(frozen=True)
class SectionEntry:
    annotation: Any  # a model class, or an Annotated discriminated union of them
    default: Callable[[], Any]
    description: str = ""


class RegisteredSection(BaseModel):
    """Static fields as usual; `registered_entries()` adds the keys a registry defines."""

    model_config = ConfigDict(extra="allow")

    @classmethod
    def registered_entries(cls) -> dict[str, SectionEntry]:
        return {}

    @model_validator(mode="wrap")
    @classmethod
    def _validate_registered(cls, data, handler):
        if isinstance(data, cls) or not isinstance(data, dict):
            return handler(data)
        entries = cls.registered_entries()
        static = {k: v for k, v in data.items() if k in cls.model_fields}
        errors = [line_error("extra_forbidden", "Extra inputs are not permitted", (key,), value)
                  for key, value in data.items() if key not in cls.model_fields and key not in entries]  # fmt: skip
        registered = {}
        for key, entry in entries.items():
            try:
                registered[key] = _adapter(entry.annotation).validate_python(data[key]) if key in data else entry.default()
            except ValidationError as exc:
                errors += prefixed(exc, key)
        instance = None
        try:
            instance = handler(static)
        except ValidationError as exc:
            errors = prefixed(exc) + errors
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        instance.__pydantic_extra__ = registered
        return instance


@lru_cache(maxsize=None)
def _adapter(annotation) -> TypeAdapter:
    return TypeAdapter(annotation)


def line_error(kind: str, message: str, loc: tuple, value) -> dict:
    """One error for `ValidationError.from_exception_data`, keeping its type (for messages and hints)."""
    return {"type": PydanticCustomError(kind, message), "loc": loc, "input": value}  # no context: braces stay as written


def prefixed(exc: ValidationError, *prefix) -> list[dict]:
    """The errors of `exc` with `prefix` put in front of each location."""
    return [line_error(e["type"], e["msg"], (*prefix, *e["loc"]), e.get("input")) for e in exc.errors()]


def schema_model(model: type[BaseModel]) -> type[BaseModel]:
    """`model` with every registered key declared as a field (recursively), for schemas and key hints."""
    fields = {name: (_schema_annotation(f.annotation), f) for name, f in model.model_fields.items()}
    if issubclass(model, RegisteredSection):
        for key, entry in model.registered_entries().items():
            fields[key] = (_schema_annotation(entry.annotation),
                           Field(default_factory=entry.default, description=entry.description))  # fmt: skip
    return create_model(model.__name__, __config__=ConfigDict(extra="forbid"), __doc__=model.__doc__, **fields)


def _schema_annotation(annotation):
    if isinstance(annotation, type) and issubclass(annotation, RegisteredSection):
        return schema_model(annotation)
    return annotation
