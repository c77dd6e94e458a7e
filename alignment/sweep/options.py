"""The sweep section of the round config: the weight grid, named points, merge form, held-out
songs and the utility that picks the chosen point. Axes and metrics are the registered preferences."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.preferences import preferences


def _equal_weights() -> dict[str, dict[str, float]]:
    names = list(preferences())
    return {"dni": {name: 1 / len(names) for name in names}}


def _every_metric() -> dict[str, float]:
    return {p.score: 1.0 for p in preferences().values()}


class AblationOptions(BaseModel):
    """The ablation stage: every model of the round asked for the same fresh held-out songs."""

    model_config = ConfigDict(extra="forbid")

    prompts: int = Field(32, ge=0, description="Fresh held-out prompts (never in the round); 0: no ablation.")
    seeds: int = Field(4, ge=1, description="Songs per prompt and model; the same seeds for every model.")
    songs: int = Field(0, ge=0, description="Of those songs, how many per model are also rendered and scored by the "
                                            "round's own scorers (the audio columns); 0: oracle columns only.")
    edges: float | None = Field(None, gt=0, le=0.5, description="Also sample every simplex edge at this weight step "
                                                                "and report controllability; null: no edges.")
    header_odds: bool = Field(False, description="Also compute each model's exact chance of hitting each prompt's tempo "
                                                 "and mode, from its header distribution (no song noise).")

    @model_validator(mode="after")
    def _songs_within_the_ablation(self):
        if self.songs > self.prompts * self.seeds:
            raise ValueError(f"songs: {self.songs} is more than the ablation's {self.prompts} prompts x {self.seeds} seeds")
        return self


class SweepOptions(BaseModel):
    """DNI merge and weight sweep: grid step, named points, merge form, held-out songs, utility weights."""

    model_config = ConfigDict(extra="forbid")

    step: float = Field(0.5, gt=0, le=1, description="Grid step on the weight simplex (0.5: vertices and midpoints).")
    named: dict[str, dict[str, float]] = Field(
        default_factory=_equal_weights,
        description="Named weight points (preference -> weight), merged by the merge stage and evaluated by the sweep; "
        "default `dni`: equal weights over every preference.",
    )
    form: Literal["linear", "task_vector"] = Field(
        "linear", description="linear: θ = Σ αᵢθᵢ; task_vector: θ₀ + Σ αᵢ(θᵢ − θ₀) with θ₀ the policy before DPO."
    )
    prompts: int = Field(8, ge=1, description="Held-out prompts to sample (the pairs' test split first, then train).")
    seeds: int = Field(2, ge=1, description="Songs per prompt and point; the same seeds for every point.")
    ablation: AblationOptions = Field(
        default_factory=AblationOptions,
        description="The ablation stage (tiny model): oracle metrics of base, every DPO model and named point on fresh songs.",
    )
    utility: dict[str, float] = Field(
        default_factory=_every_metric,
        description="Weights of the declared utility (each preference's metric, by score name, scaled to [0, 1] over "
        "the sweep) that picks the chosen point; default 1 for every metric.",
    )
    keep: str | None = Field(
        "dni", description="The point chosen unless another point's utility beats it on the same songs with a paired "
        "interval over prompts clear of zero, 95 % for all points together (a named point or base); null: the point "
        "of highest mean utility.",
    )

    @field_validator("named")
    @classmethod
    def _known_preferences(cls, named):
        names = list(preferences())
        for point, weights in named.items():
            unknown = sorted(set(weights) - set(names))
            if unknown:
                raise ValueError(f"point {point!r}: unknown preference {unknown[0]!r}; preferences are: {', '.join(names)}")
        return named

    @model_validator(mode="after")
    def _keep_is_a_point(self):
        if self.keep is not None and self.keep != "base" and self.keep not in self.named:
            raise ValueError(f"keep: {self.keep!r} is not a named point ({', '.join(self.named) or 'none'}) nor base; "
                             "name one of them, or null to choose the point of highest mean utility")
        return self

    @field_validator("utility")
    @classmethod
    def _known_metrics(cls, utility):
        metrics = [p.score for p in preferences().values()]
        unknown = sorted(set(utility) - set(metrics))
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; metrics are: {', '.join(metrics)}")
        return utility
