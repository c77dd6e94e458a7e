"""Preference pairs from scored candidates: one strategy per score, plus their union.

Every strategy is a pure function `(candidates, options, rng_seed) -> (pairs, stats)`:

- `candidates`: a pandas DataFrame (or pyarrow Table), one row per candidate, with
  `candidate_id, prompt_id, genre, language` and the score column the strategy reads
  (`per` for lyrics, `similarity` for prompt, `reward` for musicality, all three for joint).
- `options`: a `PairOptions`; `rng_seed`: the seed of every hash-based choice (ties, split, balance).
- `pairs`: a DataFrame with `PAIR_COLUMNS` (prompt_id, chosen_id, rejected_id, strategy,
  chosen_score, rejected_score, gap, genre, language, split), sorted by prompt_id then largest gap.
- `stats`: counts for the caller to report (candidates_in, nan_excluded, single_candidate_prompts,
  tied_pairs, pairs_before_selection, pairs_after_each_rule, pairs_out, per_split, ...). An empty
  `pairs` is a result, not an error: the caller reports it.

The same inputs, options and seed give the same output whatever the input row order.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd
import pyarrow as pa

from pipeline.pairs.base import PAIR_COLUMNS
from pipeline.pairs.joint import joint_pairs
from pipeline.pairs.lyrics import lyrics_pairs
from pipeline.pairs.musicality import musicality_pairs
from pipeline.pairs.options import (
    LyricsOptions,
    MusicalityOptions,
    PairOptions,
    PromptOptions,
    SelectionOptions,
)
from pipeline.pairs.prompt import prompt_pairs
from pipeline.pairs.selection import assign_split

PairStrategy = Callable[[pd.DataFrame | pa.Table, PairOptions, int], tuple[pd.DataFrame, dict]]

STRATEGIES: dict[str, PairStrategy] = {
    "lyrics": lyrics_pairs,
    "prompt": prompt_pairs,
    "musicality": musicality_pairs,
    "joint": joint_pairs,
}


def get_strategy(name: str) -> PairStrategy:
    """The registered strategy called `name`; a ValueError lists the known ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown pair strategy {name!r}; known: {', '.join(STRATEGIES)}") from None


__all__ = [
    "PAIR_COLUMNS", "STRATEGIES", "PairStrategy", "get_strategy", "assign_split",
    "PairOptions", "LyricsOptions", "PromptOptions", "MusicalityOptions", "SelectionOptions",
    "lyrics_pairs", "prompt_pairs", "musicality_pairs", "joint_pairs",
]
