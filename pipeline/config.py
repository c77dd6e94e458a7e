"""The round configuration: one pydantic tree, loaded from YAML, checked before any work starts.

Every field documents its default. Unknown keys, wrong types and impossible values raise
`ConfigError` with one line per problem naming the file, the dotted key and what is wrong.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.digest import digest_json
from pipeline.lyrics.openai_backend import OpenAIOptions
from pipeline.lyrics.template import TemplateOptions
from pipeline.lyrics.transformers_backend import TransformersOptions
from pipeline.pairs.options import PairOptions
from pipeline.scoring.attributes import AttributesOptions
from pipeline.scoring.clap import ClapOptions
from pipeline.scoring.mulan import MulanOptions
from pipeline.scoring.pocketsphinx_asr import PocketsphinxOptions
from pipeline.scoring.whisper_asr import WhisperOptions

STAGES = ("lyrics", "conditions", "candidates", "scores", "reward_model", "pairs", "dpo", "merge", "sweep")


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
    options: dict[str, Any] = Field(default_factory=dict, description="Backend options, checked by the backend.")


class SamplingConfig(Strict):
    num_candidates: int = Field(4, ge=2, description="Songs sampled per condition (pairs need at least two).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_k: int = Field(0, ge=0, description="Top-k filter; 0 = off.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus filter; 1 = off.")
    cfg_coef: float | None = Field(None, ge=0, description="Classifier-free guidance where the model has it.")


TranscriberOptions = Annotated[Union[PocketsphinxOptions, WhisperOptions], Field(discriminator="backend")]
SimilarityOptions = Annotated[Union[AttributesOptions, MulanOptions, ClapOptions], Field(discriminator="backend")]


class ScoringConfig(Strict):
    transcriber: TranscriberOptions = Field(
        default_factory=PocketsphinxOptions, description="ASR for the phoneme error rate (lyrics strategy)."
    )
    similarity: SimilarityOptions = Field(
        default_factory=AttributesOptions, description="Text-audio similarity scorer (prompt strategy)."
    )


class RoundConfig(Strict):
    name: str = Field("round", min_length=1, description="A label for the round.")
    seed: int = Field(0, ge=0, description="Root seed; every shard and candidate seed derives from it.")
    lyrics: LyricsConfig = Field(default_factory=LyricsConfig)
    conditions: ConditionsConfig = Field(default_factory=ConditionsConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    reward_model: dict[str, Any] = Field(
        default_factory=dict,
        description="Reward-model stage options (rankings source, crowd, embedding, training), checked by "
        "reward_model.stage.RewardStageOptions when the stage starts; {} = the embedded defaults.",
    )
    pairs: PairOptions = Field(default_factory=PairOptions, description="Preference-pair strategies and selection rules.")
    dpo: dict[str, Any] = Field(
        default_factory=dict,
        description="DPO stage options (strategies, policy, run defaults, per-strategy overrides), checked by "
        "alignment.dpo.stage.DpoStageOptions when the stage starts; {} = the embedded defaults.",
    )
    sweep: dict[str, Any] = Field(
        default_factory=dict,
        description="DNI merge and weight-sweep options (grid step, named points, merge form, held-out prompts, "
        "seeds, utility weights), checked by alignment.sweep.stage.SweepOptions; {} = the defaults.",
    )

    def resolved(self) -> dict:
        return self.model_dump(mode="json")

    def digest(self) -> str:
        return digest_json(self.resolved())


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


def _known_keys(model: type[BaseModel] = RoundConfig, seen: set | None = None) -> set[str]:
    """Every field name in the config tree, for 'did you mean' hints."""
    seen = set() if seen is None else seen
    for name, field in model.model_fields.items():
        seen.add(name)
        for arg in _model_types(field.annotation):
            _known_keys(arg, seen)
    return seen


# Discriminated-union fields and their tags, which pydantic inserts into error locations.
UNION_FIELDS = {
    "generator": ("template", "transformers", "openai"),
    "transcriber": ("pocketsphinx", "whisper"),
    "similarity": ("attributes", "muq-mulan", "clap"),
}


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [t for arg in getattr(annotation, "__args__", ()) for t in _model_types(arg)]


def _describe(error: dict, source: str) -> str:
    loc = [str(p) for p in error["loc"]]
    # Discriminated unions insert the tag ("template") into the location; a person never wrote it.
    loc = [p for i, p in enumerate(loc) if not (i > 0 and loc[i - 1] in UNION_FIELDS and p in UNION_FIELDS[loc[i - 1]])]
    key = ".".join(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        hint = difflib.get_close_matches(loc[-1], _known_keys(), n=1)
        return f"{source}: {key}: unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else "")
    message = error["msg"].removeprefix("Value error, ")
    given = error.get("input")
    shown = "" if isinstance(given, dict) or error["type"] == "missing" else f" (got {given!r})"
    return f"{source}: {key}: {message}{shown}"
