"""SongModel plugins by name: the Python entry-point group `songpref.models`.

A plugin is a class with a `name`, an `options_class` (a pydantic model of its options) and a
constructor taking those options; songpref's own `tiny`, `hf-codec` and `levo` register the same
way. A trainable plugin adds a classmethod `trainable_policy(options)` (pipeline.models.base).
"""

from __future__ import annotations

from pydantic import ValidationError

from pipeline.models.base import SongModel, TrainablePolicy
from pipeline.registry import registered, registered_names

GROUP = "songpref.models"


class ModelPluginError(ValueError):
    pass


def available_models() -> list[str]:
    return registered_names(GROUP)


def song_model_class(name: str) -> type[SongModel]:
    """The plugin class called `name`; LookupError when none is installed under that name."""
    plugins = registered(GROUP)
    if name not in plugins:
        raise LookupError(name)
    return plugins[name]


def load_song_model(name: str, options: dict) -> SongModel:
    """The plugin `name` built from `options` (the config's model.options); errors name the key."""
    try:
        cls = song_model_class(name)
    except LookupError:
        raise ModelPluginError(f"model.backend: no song model {name!r}; installed: {', '.join(available_models()) or 'none'}") from None
    try:
        parsed = cls.options_class.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(f"model.options.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ModelPluginError(f"model {name!r}: {problems}") from None
    return cls(parsed)


class NotTrainable(ValueError):
    """The backend has no trainable-policy plugin: its rounds stop before `pairs`."""


def is_trainable(name: str) -> bool:
    """Whether the backend `name` offers a TrainablePolicy (a classmethod `trainable_policy`)."""
    return callable(getattr(song_model_class(name), "trainable_policy", None))


def not_trainable_reason(name: str) -> str:
    return (f"model.backend {name!r} is not trainable here: it has no trainable-policy plugin (TrainablePolicy, "
            "see README), so pairs, dpo, merge and sweep cannot run on its songs")  # fmt: skip


def trainable_policy(name: str, options: dict) -> TrainablePolicy:
    """The TrainablePolicy of backend `name` under `options`; NotTrainable naming the backend otherwise."""
    try:
        cls = song_model_class(name)
    except LookupError:
        raise ModelPluginError(f"model.backend: no song model {name!r}; installed: {', '.join(available_models()) or 'none'}") from None
    if not is_trainable(name):
        raise NotTrainable(not_trainable_reason(name))
    try:
        parsed = cls.options_class.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(f"model.options.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ModelPluginError(f"model {name!r}: {problems}") from None
    return cls.trainable_policy(parsed)
