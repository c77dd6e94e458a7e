"""Lyrics alignment: prefer the candidate whose sung lyrics the ASR recovers better.

Score: `per`, the phoneme error rate x 100 (lower is better), from the transcriber's table
`scores/per`. Within a prompt, a pair needs the rejected PER to exceed the chosen PER by more than
`per_gap` (the paper: 40 points), so only clear intelligibility differences teach the model, not
ASR noise. `max_chosen_per` optionally keeps "less bad" songs from being taught as good. The
signal lives in what is sung: the vocals track and the mixed stream that plans it.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from pipeline.preferences.base import Preference, RuleOptions


class LyricsOptions(RuleOptions):
    per_gap: float = Field(
        40.0, ge=0,
        description="A pair needs rejected PER minus chosen PER (both x100) strictly above this (the paper: 40).",
    )
    max_chosen_per: float | None = Field(
        None, ge=0,
        description="If set, the chosen candidate's PER (x100) must be at most this; None: no ceiling.",
    )


def _rule(cands, pairs, options: LyricsOptions) -> np.ndarray:
    ok = pairs.gap > options.per_gap
    if options.max_chosen_per is not None:
        ok &= pairs.chosen_score <= options.max_chosen_per
    return ok


def _describe(options: LyricsOptions) -> str:
    ceiling = f", chosen PER <= {options.max_chosen_per}" if options.max_chosen_per is not None else ""
    return f"PER gap > {options.per_gap}{ceiling}"


LYRICS = Preference(
    name="lyrics", table="per", column="per", higher_is_better=False, options_class=LyricsOptions,
    rule=_rule, describe_rule=_describe, score_label="PER x100 (lower is better)", metric_label="PER ↓",
    card="Lyrics alignment: the chosen song's sung words are recovered better by speech recognition "
         "(phoneme error rate against the lyric).",
    streams=("mixed", "vocals"), oracles=("symbolic_wer",), order=10,
)  # fmt: skip
