"""Options for the pair strategies and the selection rules that follow them.

One `PairOptions` tree holds every strategy's thresholds and the shared selection rules, so each
strategy function has the same signature `(candidates, options, rng_seed)` and the joint strategy
sees exactly the settings its three parts would. Defaults follow the LeVo paper where it gives a
number (the 40-point PER gap) and the project's earlier `PairsConfig` otherwise.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LyricsOptions(_Strict):
    per_gap: float = Field(
        40.0, ge=0,
        description="A pair needs rejected PER minus chosen PER (both x100) strictly above this (the paper: 40).",
    )
    max_chosen_per: float | None = Field(
        None, ge=0,
        description="If set, the chosen candidate's PER (x100) must be at most this; None: no ceiling.",
    )


class PromptOptions(_Strict):
    thresholds: Literal["absolute", "quantile"] = Field(
        "absolute",
        description="'absolute': upper/lower are similarity values; 'quantile': they are quantile levels in "
        "[0, 1] of each prompt's own similarities (linear interpolation), for scorers whose scale drifts by prompt.",
    )
    upper: float = Field(0.6, description="The chosen candidate's similarity must be at least this (or this quantile).")
    lower: float = Field(0.4, description="The rejected candidate's similarity must be at most this (or this quantile).")
    min_gap: float = Field(0.1, ge=0, description="Chosen minus rejected similarity must be at least this (similarity units).")

    @model_validator(mode="after")
    def _ordered(self):
        if self.lower > self.upper:
            raise ValueError(f"prompt.lower ({self.lower}) must not exceed prompt.upper ({self.upper})")
        if self.thresholds == "quantile" and not (0.0 <= self.lower <= 1.0 and 0.0 <= self.upper <= 1.0):
            raise ValueError("prompt.upper and prompt.lower are quantile levels when thresholds='quantile': use 0..1")
        return self


class MusicalityOptions(_Strict):
    reward_margin: float = Field(
        1.0, ge=0, description="Chosen minus rejected reward-model score must be at least this."
    )


class SelectionOptions(_Strict):
    max_pairs_per_prompt: int = Field(
        4, ge=1, description="At most this many pairs per prompt and strategy; the largest gaps are kept."
    )
    max_uses_per_candidate: int = Field(
        2, ge=1,
        description="A pair is kept only if it is among the top-ranked (largest gap) pairs of both its candidates, "
        "this many per candidate; so no candidate appears in more pairs than this per strategy.",
    )
    max_group_share: float | None = Field(
        None, gt=0, le=1,
        description="If set, no genre and no language holds more than this share of a split's pairs; larger groups "
        "are downsampled (seeded, uniform). A share below 1/groups is raised to 1/groups (equal groups). None: off.",
    )
    test_fraction: float = Field(
        0.1, ge=0, le=1,
        description="Share of prompts held out as 'test', chosen by a seeded hash of prompt_id alone.",
    )


class HubOptions(_Strict):
    repo_id: str | None = Field(
        None, description="Hugging Face dataset repository to push each strategy's dataset to (a config per strategy); "
        "null: never push.",
    )
    private: bool = Field(True, description="Create the repository private.")
    token_env: str = Field("HF_TOKEN", description="Environment variable holding the Hub token (never logged).")


class PairOptions(_Strict):
    lyrics: LyricsOptions = Field(default_factory=LyricsOptions, description="The lyrics (PER) strategy.")
    prompt: PromptOptions = Field(default_factory=PromptOptions, description="The prompt (similarity) strategy.")
    musicality: MusicalityOptions = Field(default_factory=MusicalityOptions, description="The musicality (reward) strategy.")
    selection: SelectionOptions = Field(default_factory=SelectionOptions, description="Rules applied after every strategy.")
    hub: HubOptions = Field(default_factory=HubOptions, description="Publishing the datasets to the Hugging Face Hub.")
