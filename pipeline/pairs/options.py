"""Options of the pairs stage: each preference's rule options, and the selection rules after them.

`PairOptions` holds one section per registered preference (its own options class, e.g.
`pairs.lyrics.per_gap`) beside `selection` and `hub`, so every strategy function has the same
signature `(candidates, options, rng_seed)` and the joint strategy sees exactly the settings its
parts would. Defaults follow the LeVo paper where it gives a number (the 40-point PER gap).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pipeline.sections import RegisteredSection, SectionEntry


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class PairOptions(RegisteredSection):
    """One section per registered preference (its rule options), then `selection` and `hub`."""

    selection: SelectionOptions = Field(default_factory=SelectionOptions, description="Rules applied after every strategy.")
    hub: HubOptions = Field(default_factory=HubOptions, description="Publishing the datasets to the Hugging Face Hub.")

    @classmethod
    def registered_entries(cls) -> dict[str, SectionEntry]:
        from pipeline.preferences import preferences

        return {name: SectionEntry(p.options_class, p.options_class, f"The {name} preference's pair rule: {p.card}")
                for name, p in preferences().items()}  # fmt: skip

    def rule_options(self, preference: str):
        """The rule options of one preference."""
        return getattr(self, preference)
