"""Preference pairs from scored candidates: one strategy per registered preference, plus their union.

Every strategy is a pure function `(candidates, options, rng_seed) -> (pairs, stats)`:

- `candidates`: a pandas DataFrame (or pyarrow Table), one row per candidate, with
  `candidate_id, prompt_id, genre, language` and the score column the strategy reads (the
  preference's `score`: `per` for lyrics, `similarity` for prompt, `reward` for musicality; all of
  them for joint).
- `options`: a `PairOptions`; `rng_seed`: the seed of every hash-based choice (ties, split, balance).
- `pairs`: a DataFrame with `PAIR_COLUMNS` (prompt_id, chosen_id, rejected_id, strategy,
  chosen_score, rejected_score, gap, genre, language, split), sorted by prompt_id then largest gap.
- `stats`: counts for the caller to report (candidates_in, nan_excluded, single_candidate_prompts,
  tied_pairs, pairs_before_selection, pairs_after_each_rule, pairs_out, per_split, ...). An empty
  `pairs` is a result, not an error: the caller reports it.

`STRATEGIES` reads the preference registry on every lookup, so a preference registered at run
time is a strategy at once. The same inputs, options and seed give the same output whatever the
input row order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import partial
from typing import Callable

import pandas as pd
import pyarrow as pa

from pipeline.pairs.base import PAIR_COLUMNS
from pipeline.pairs.joint import joint_pairs
from pipeline.pairs.options import PairOptions, SelectionOptions
from pipeline.pairs.selection import assign_split, preference_pairs
from pipeline.preferences import JOINT, preferences, strategy_names

PairStrategy = Callable[[pd.DataFrame | pa.Table, PairOptions, int], tuple[pd.DataFrame, dict]]


class _Strategies(Mapping):
    """Strategy name -> its function: every preference, then joint."""

    def __getitem__(self, name: str) -> PairStrategy:
        if name == JOINT:
            return joint_pairs
        found = preferences()
        if name not in found:
            raise KeyError(name)
        return partial(preference_pairs, found[name])

    def __iter__(self) -> Iterator[str]:
        return iter(strategy_names())

    def __len__(self) -> int:
        return len(strategy_names())


STRATEGIES: Mapping[str, PairStrategy] = _Strategies()


def get_strategy(name: str) -> PairStrategy:
    """The strategy called `name`; a ValueError lists the known ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown pair strategy {name!r}; known: {', '.join(STRATEGIES)}") from None


__all__ = ["PAIR_COLUMNS", "STRATEGIES", "PairStrategy", "get_strategy", "assign_split", "PairOptions",
           "SelectionOptions", "preference_pairs", "joint_pairs"]  # fmt: skip
