"""The round configuration: one pydantic tree, loaded from YAML, checked before any work starts.

Every field documents its default. Unknown keys, wrong types and impossible values raise
`ConfigError` with one line per problem naming the file, the dotted key and what is wrong.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.digest import digest_json
from pipeline.lyrics.openai_backend import OpenAIOptions
from pipeline.lyrics.template import TemplateOptions
from pipeline.lyrics.transformers_backend import TransformersOptions
from pipeline.orchestration import OrchestrationConfig, RoundsConfig
from pipeline.pairs.options import PairOptions
from pipeline.registry import registered
from pipeline.sections import RegisteredSection, SectionEntry, line_error, prefixed, schema_model
from pipeline.stages.names import STAGES

# Sections of the upper layers (dpo, sweep, reward_model) register their options class here.
SECTIONS_GROUP = "songpref.config"


UNHASHED_SECTIONS = ("orchestration", "rounds")  # how and where a round runs, not what it makes
# A section may also name fields of its own that say how it runs (`UNHASHED_FIELDS`, e.g. dpo.processes).


class ConfigError(ValueError):
    """A configuration that cannot run; the message is ready to show to a person."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


GeneratorOptions = Annotated[Union[TemplateOptions, TransformersOptions, OpenAIOptions], Field(discriminator="backend")]


class LyricsConfig(Strict):
    count: int = Field(64, ge=1, le=10_000_000, description="How many lyrics to write: the round's scale knob (the paper: 20,000).")
    shard_size: int | None = Field(None, ge=1, description="Lyrics per shard; None picks count/4 clamped to 16..1000.")
    languages: dict[Literal["en", "zh"], float] = Field(
        default_factory=lambda: {"en": 1.0}, description="Share of lyrics per language (weights, normalised)."
    )
    max_tokens: int = Field(300, ge=16, description="LeVo's lyric conditioner limit; longer lyrics are invalid.")
    generator: GeneratorOptions = Field(default_factory=TemplateOptions, description="The backend that writes lyrics.")

    @model_validator(mode="after")
    def _languages_positive(self):
        if not self.languages or any(w < 0 for w in self.languages.values()) or sum(self.languages.values()) <= 0:
            raise ValueError("languages: weights must be non-negative with a positive sum")
        return self

    @property
    def effective_shard_size(self) -> int:
        return self.shard_size or min(1000, max(16, -(-self.count // 4)))


class ConditionsConfig(Strict):
    vocabulary: Path | None = Field(None, description="A tags YAML like pipeline/vocab/tags.yaml; None = the shipped one.")
    min_instruments: int = Field(2, ge=1, description="Fewest instrument tags in a description.")
    max_instruments: int = Field(3, ge=1, description="Most instrument tags in a description.")
    prompt_library: Path | None = Field(None, description="Folder of reference clips (wav/flac/ogg/mp3); None = auto prompts only.")
    library_share: float = Field(1.0, ge=0, le=1, description="With a library: share of conditions given a clip; the rest get an auto-prompt type.")
    auto_prompt: Literal["genre", "random"] = Field("genre", description="Auto-prompt type: the genre's own, or uniformly random.")

    @model_validator(mode="after")
    def _instrument_range(self):
        if self.min_instruments > self.max_instruments:
            raise ValueError("min_instruments must not exceed max_instruments")
        return self


class ModelConfig(Strict):
    """Consumed by the candidates stage: which SongModel plugin samples songs."""

    backend: str = Field("tiny", description="A name in the `songpref.models` entry-point group.")
    options: dict[str, Any] = Field(default_factory=dict, description="Backend options, checked by the backend's options class.")

    @model_validator(mode="wrap")
    @classmethod
    def _known_plugin(cls, data, handler):
        """The backend must be installed and its options valid, both checked when the config loads."""
        from pipeline.models.registry import available_models, song_model_class

        config = handler(data)
        try:
            plugin = song_model_class(config.backend)
        except LookupError:
            message = f"no song model {config.backend!r}; installed: {', '.join(available_models()) or 'none'}"
            raise ValidationError.from_exception_data(cls.__name__, [line_error("unknown_backend", message, ("backend",), config.backend)])
        try:
            plugin.options_class.model_validate(config.options)
        except ValidationError as exc:
            raise ValidationError.from_exception_data(cls.__name__, prefixed(exc, "options")) from None
        return config


class SamplingConfig(Strict):
    num_candidates: int = Field(4, ge=2, description="Songs sampled per condition (pairs need at least two).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_k: int = Field(0, ge=0, description="Top-k filter; 0 = off.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus filter; 1 = off.")
    cfg_coef: float | None = Field(None, ge=0, description="Classifier-free guidance where the model has it.")


class ScoringConfig(RegisteredSection):
    """One key per scorer kind with backends (`transcriber`, `similarity`): the backend and its options."""

    @classmethod
    def registered_entries(cls) -> dict[str, SectionEntry]:
        from pipeline.scoring.registry import score_kinds

        return {k.config_key: SectionEntry(k.options_annotation, k.default_options, f"Backend of the `{k.name}` score "
                                           f"(scores/{k.name}); one of: {', '.join(k.backends)}.")
                for k in score_kinds().values() if k.config_key}  # fmt: skip


class RoundConfig(RegisteredSection):
    name: str = Field("round", min_length=1, description="A label for the round.")
    seed: int = Field(0, ge=0, description="Root seed; every shard and candidate seed derives from it.")
    parent: str | None = Field(
        None, description="Semi-online: the round this one continues. Its chosen policy (<parent>/sweep/chosen) samples "
        "this round's candidates and is where DPO starts (it becomes model.options.checkpoint when that is unset); "
        "recorded in the manifest with the config.",
    )
    lyrics: LyricsConfig = Field(default_factory=LyricsConfig)
    conditions: ConditionsConfig = Field(default_factory=ConditionsConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig, description="Scorer backends, one per score kind.")
    pairs: PairOptions = Field(default_factory=PairOptions, description="Preference-pair rules (one section per preference) and selection rules.")
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig, description=OrchestrationConfig.__doc__)
    rounds: RoundsConfig = Field(default_factory=RoundsConfig, description=RoundsConfig.__doc__)

    @classmethod
    def registered_entries(cls) -> dict[str, SectionEntry]:
        """The sections of the upper layers: reward_model, dpo, sweep (entry-point group songpref.config)."""
        sections = sorted(registered(SECTIONS_GROUP).items(), key=lambda s: STAGES.index(s[0]) if s[0] in STAGES else len(STAGES))
        return {name: SectionEntry(options, options, (options.__doc__ or "").strip().split("\n")[0]) for name, options in sections}

    @model_validator(mode="after")
    def _continue_the_parent(self):
        if self.parent is None:
            return self
        from pipeline.models.checkpoint import NoCheckpointOption, checkpoint_option

        try:
            key = checkpoint_option(self.model.backend)
        except NoCheckpointOption as exc:
            raise ValueError(f"parent: {exc}") from None
        self.model.options.setdefault(key, str(Path(self.parent) / "sweep" / "chosen"))
        return self

    def resolved(self) -> dict:
        return self.model_dump(mode="json")

    def digest(self) -> str:
        """The hash of everything that shapes the round's outputs (orchestration and rounds do not)."""
        hashed = {}
        for key, value in self.resolved().items():
            if key in UNHASHED_SECTIONS:
                continue
            unhashed = getattr(getattr(self, key, None), "UNHASHED_FIELDS", ())
            hashed[key] = {k: v for k, v in value.items() if k not in unhashed} if unhashed else value
        return digest_json(hashed)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RoundConfig:
    """Read YAML, apply `key.path=value` overrides, validate; every problem in one ConfigError."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    for item in overrides:
        _apply_override(raw, item, path)
    return config_from_dict(raw, source=str(path))


def config_with_overrides(raw: dict, overrides: list[str] | tuple[str, ...], source: str) -> RoundConfig:
    """A config dict (a round's recorded config, say) with `key.path=value` overrides applied, validated."""
    raw = json.loads(json.dumps(raw))
    for item in overrides:
        _apply_override(raw, item, Path(source))
    return config_from_dict(raw, source=source)


def config_from_dict(raw: dict, source: str = "<config>") -> RoundConfig:
    try:
        return RoundConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("\n".join(_describe(error, source) for error in exc.errors())) from None


def _apply_override(raw: dict, item: str, source: Path) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE")
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: --set {key}: '{part}' is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(text)


def config_schema() -> dict:
    """The JSON schema of the whole config: every key (registered sections included), type, default, description."""
    return schema_model(RoundConfig).model_json_schema()


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [t for arg in getattr(annotation, "__args__", ()) for t in _model_types(arg)]


def _backend_tags(model: type[BaseModel]) -> tuple:
    field = model.model_fields.get("backend")
    return get_args(field.annotation) if field else ()


def _walk(loc: list[str]) -> tuple[list[str], set[str]]:
    """The location as a person wrote it (discriminated unions insert the backend tag, e.g.
    'template', which nobody wrote) and the keys valid beside its last part, for hints."""
    nodes: list[Any] = [schema_model(RoundConfig)]
    written, siblings = [], set()
    for part in loc:
        if any(get_origin(n) is dict for n in nodes):  # a mapping's own key, e.g. dpo.per_strategy.joint
            nodes, siblings = [get_args(n)[1] for n in nodes if get_origin(n) is dict], set()
            written.append(part)
            continue
        models = [m for n in nodes for m in _model_types(n)]
        tagged = [m for m in models if part in _backend_tags(m)]
        if len(models) > 1 and tagged and not any(part in m.model_fields for m in models):
            nodes = tagged
            continue
        siblings = {k for m in models for k in m.model_fields}
        nodes = [m.model_fields[part].annotation for m in models if part in m.model_fields]
        written.append(part)
    return written, siblings


def _describe(error: dict, source: str) -> str:
    written = [str(p) for p in error["loc"]]
    mapping_key = written[-1:] == ["[key]"]  # a mapping's key itself is wrong (orchestration.stages.<key>)
    loc, siblings = _walk(written[:-1] if mapping_key else written)
    key = ".".join(loc) or "(top level)"
    if mapping_key:
        return f"{source}: {key}: not a valid key: {error['msg']}"
    if error["type"] == "extra_forbidden":
        hint = difflib.get_close_matches(loc[-1], sorted(siblings), n=1)
        return f"{source}: {key}: unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else "")
    message = error["msg"].removeprefix("Value error, ")
    given = error.get("input")
    shown = "" if isinstance(given, dict) or error["type"] == "missing" else f" (got {given!r})"
    return f"{source}: {key}: {message}{shown}"
