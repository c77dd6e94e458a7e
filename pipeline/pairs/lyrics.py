"""Lyrics alignment: prefer the candidate whose sung lyrics the ASR recovers better.

Score: `per`, the phoneme error rate x 100 (lower is better). Within a prompt, a pair needs the
rejected PER to exceed the chosen PER by more than `per_gap` (the paper: 40 points), so only clear
intelligibility differences teach the model, not ASR noise. `max_chosen_per` optionally keeps
"less bad" songs from being taught as good.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.pairs.base import Candidates, PairSet, Strategy
from pipeline.pairs.options import PairOptions
from pipeline.pairs.selection import run_strategy


def _rule(cands: Candidates, pairs: PairSet, options: PairOptions) -> np.ndarray:
    o = options.lyrics
    ok = pairs.gap > o.per_gap
    if o.max_chosen_per is not None:
        ok &= pairs.chosen_score <= o.max_chosen_per
    return ok


LYRICS = Strategy(name="lyrics", column="per", higher_is_better=False, rule=_rule)


def lyrics_pairs(candidates: pd.DataFrame | pa.Table, options: PairOptions, rng_seed: int) -> tuple[pd.DataFrame, dict]:
    """Lyrics pairs (gap = rejected PER - chosen PER) and their counts; see `pipeline.pairs`."""
    return run_strategy(LYRICS, candidates, options, rng_seed)
