"""Merge settings: the options of `alignment.merge.merge` and the mergekit-style YAML config.

`MergeOptions` holds the knobs of one merge (dtype, shard size, extrapolation). `MergeConfig`
reads the subset of mergekit's YAML schema that maps onto our two methods:

    merge_method: linear            # or task_arithmetic (needs base_model)
    base_model: path/to/base        # task_arithmetic only
    models:
      - model: path/to/a
        parameters: {weight: 0.7}
      - model: path/to/b
        parameters: {weight: 0.3}
    parameters: {normalize: true}   # mergekit default: true for linear, false for task_arithmetic
    dtype: bfloat16                 # output dtype; default: the inputs' dtype

Unknown keys are rejected by name, so a mergekit feature we do not implement (slices, per-tensor
weight lists, ties/dare methods) fails loudly instead of being silently ignored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

WEIGHT_SUM_TOLERANCE = 1e-6
OUTPUT_DTYPES = ("float32", "bfloat16", "float16", "float64")
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


class MergeConfigError(ValueError):
    """A merge config, option or weight list that cannot be used; the message names the input."""


def parse_size(size: int | str) -> int:
    """'2GB' -> 2_000_000_000 (decimal, as transformers does), '512MiB' -> 536_870_912, ints pass."""
    if isinstance(size, int):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(size))
        unit = match.group(2).upper() if match else None
        if not match or unit not in _SIZE_UNITS:
            raise MergeConfigError(f"max_shard_size {size!r}: expected a byte count like '2GB', '500MB' or '1GiB'")
        value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise MergeConfigError(f"max_shard_size {size!r}: must be positive")
    return value


def validate_weights(weights: Sequence[float], n_inputs: int, allow_extrapolation: bool) -> tuple[float, ...]:
    """One finite weight per input, summing to 1 and non-negative unless extrapolation is asked for.

    Interpolation (convex weights) stays between the inputs; anything else extrapolates past
    them, which is useful (e.g. 1.2·DPO − 0.2·SFT) but should never happen by a typo.
    """
    weights = tuple(float(w) for w in weights)
    if n_inputs < 2:
        raise MergeConfigError(f"merge needs at least 2 checkpoints, got {n_inputs}")
    if len(weights) != n_inputs:
        raise MergeConfigError(f"{len(weights)} weights for {n_inputs} checkpoints: give exactly one weight per checkpoint")
    bad = [w for w in weights if not math.isfinite(w)]
    if bad:
        raise MergeConfigError(f"weights {list(weights)}: not finite: {bad}")
    if not allow_extrapolation:
        negative = [w for w in weights if w < 0]
        if negative:
            raise MergeConfigError(
                f"weights {list(weights)}: negative weights {negative} extrapolate; pass allow_extrapolation=True to allow")
        total = math.fsum(weights)
        if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
            raise MergeConfigError(
                f"weights {list(weights)} sum to {total!r}, not 1 (tolerance {WEIGHT_SUM_TOLERANCE}); "
                "normalise them or pass allow_extrapolation=True")
    return weights


@dataclass(frozen=True)
class MergeOptions:
    """How a merge runs; the weights and inputs are arguments of `merge` itself."""

    allow_extrapolation: bool = False
    """Allow weights that do not sum to 1 or are negative (moves past the inputs, not between them)."""
    dtype: Optional[str] = None
    """Output dtype, one of float32/bfloat16/float16/float64; None keeps the inputs' dtype."""
    compute_dtype: Literal["float32", "float64"] = "float32"
    """Precision of the weighted sum; every tensor is combined in it, then cast to the output dtype."""
    max_shard_size: int | str = "2GB"
    """Largest output shard ('2GB', '500MB', or bytes); one tensor larger than this gets a shard alone."""
    chunk_elements: int = 1 << 24
    """Elements read per input per step: bounds memory by chunk, not by the largest tensor."""
    copy_files: bool = True
    """Copy non-weight files (config.json, tokenizer, generation_config...) from the first input."""
    overwrite: bool = False
    """Replace an existing output directory (swapped in atomically); otherwise refuse."""
    digest_inputs: bool = True
    """Record the sha256 of every input file in the manifest (one extra read of the inputs)."""

    def __post_init__(self) -> None:
        if self.dtype is not None and self.dtype not in OUTPUT_DTYPES:
            raise MergeConfigError(f"dtype {self.dtype!r}: expected one of {', '.join(OUTPUT_DTYPES)}")
        if self.compute_dtype not in ("float32", "float64"):
            raise MergeConfigError(f"compute_dtype {self.compute_dtype!r}: expected float32 or float64")
        if self.chunk_elements < 1:
            raise MergeConfigError(f"chunk_elements {self.chunk_elements}: must be positive")
        parse_size(self.max_shard_size)

    @property
    def max_shard_bytes(self) -> int:
        return parse_size(self.max_shard_size)


# ---- mergekit-style YAML ------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ModelParameters(_Strict):
    weight: float = Field(description="This model's coefficient αᵢ (mergekit: `weight`; a scalar only).")


class ModelEntry(_Strict):
    model: str = Field(description="Checkpoint directory, safetensors file, or PEFT adapter directory.")
    parameters: ModelParameters = Field(description="Per-model parameters; only `weight` is supported.")


class MethodParameters(_Strict):
    normalize: Optional[bool] = Field(
        default=None, description="Divide the weights by their sum; default true for linear, false for task_arithmetic (as mergekit).")
    lambda_: float = Field(
        default=1.0, alias="lambda", description="task_arithmetic only: scale of the summed task vectors (mergekit's `lambda`).")


class MergeConfig(_Strict):
    """The mergekit YAML subset: one method, N weighted models, an optional base, an output dtype."""

    merge_method: Literal["linear", "task_arithmetic"] = Field(
        description="linear: θ = Σ αᵢθᵢ; task_arithmetic: θ = θ₀ + Σ αᵢ(θᵢ − θ₀) with base_model θ₀.")
    models: list[ModelEntry] = Field(description="The checkpoints to merge with their weights (at least 2).")
    base_model: Optional[str] = Field(default=None, description="θ₀ for task_arithmetic; not used by linear.")
    dtype: Optional[Literal["float32", "bfloat16", "float16", "float64"]] = Field(
        default=None, description="Output dtype; default: the inputs' dtype.")
    parameters: MethodParameters = Field(default_factory=MethodParameters, description="Method-wide parameters.")
    allow_extrapolation: bool = Field(
        default=False, description="songpref extension: allow weights (after normalize) that are negative or do not sum to 1.")

    def resolved_weights(self) -> tuple[float, ...]:
        """The αᵢ actually applied: normalised if asked (or by the method's default), times lambda."""
        weights = [entry.parameters.weight for entry in self.models]
        normalize = self.parameters.normalize
        if normalize is None:
            normalize = self.merge_method == "linear"
        if normalize:
            total = math.fsum(weights)
            if total == 0:
                raise MergeConfigError(f"parameters.normalize: the weights {weights} sum to 0")
            weights = [w / total for w in weights]
        if self.parameters.lambda_ != 1.0:
            if self.merge_method != "task_arithmetic":
                raise MergeConfigError("parameters.lambda: only task_arithmetic scales its task vectors")
            weights = [w * self.parameters.lambda_ for w in weights]
        return validate_weights(weights, len(weights), self.allow_extrapolation)

    def checkpoints(self, relative_to: Path | None = None) -> list[Path]:
        return [_resolve(entry.model, relative_to) for entry in self.models]

    def base(self, relative_to: Path | None = None) -> Path | None:
        return _resolve(self.base_model, relative_to) if self.base_model else None


def _resolve(path: str, relative_to: Path | None) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() or relative_to is None else relative_to / candidate


def load_merge_config(path: Path) -> MergeConfig:
    """Read and check a YAML merge config; every problem is reported with its key path."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MergeConfigError(f"{path}: cannot read: {exc}") from None
    if not isinstance(raw, dict):
        raise MergeConfigError(f"{path}: expected a mapping at the top level")
    try:
        config = MergeConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise MergeConfigError(f"{path}: invalid merge config\n" + "\n".join(lines)) from None
    if config.merge_method == "task_arithmetic" and not config.base_model:
        raise MergeConfigError(f"{path}: merge_method task_arithmetic needs base_model")
    if config.merge_method == "linear" and config.base_model:
        raise MergeConfigError(
            f"{path}: base_model with merge_method linear is ambiguous here; use task_arithmetic for θ₀ + Σ αᵢ(θᵢ − θ₀)")
    try:
        config.resolved_weights()
    except MergeConfigError as exc:
        raise MergeConfigError(f"{path}: {exc}") from None
    return config
