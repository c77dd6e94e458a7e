"""The sweep section of the round config: the weight grid, named points, merge form, held-out
songs and the utility that picks the chosen point. Axes and metrics are the registered preferences."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.preferences import preferences


def _equal_weights() -> dict[str, dict[str, float]]:
    names = list(preferences())
    return {"dni": {name: 1 / len(names) for name in names}}


def _every_metric() -> dict[str, float]:
    return {p.score: 1.0 for p in preferences().values()}


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
    utility: dict[str, float] = Field(
        default_factory=_every_metric,
        description="Weights of the declared utility (each preference's metric, by score name, scaled to [0, 1] over "
        "the sweep) that picks the chosen point; default 1 for every metric.",
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

    @field_validator("utility")
    @classmethod
    def _known_metrics(cls, utility):
        metrics = [p.score for p in preferences().values()]
        unknown = sorted(set(utility) - set(metrics))
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; metrics are: {', '.join(metrics)}")
        return utility
