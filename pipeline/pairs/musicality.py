"""Musicality: prefer the candidate the reward model (trained on human rankings) scores higher.

Score: `reward` (higher is better). Within a prompt, a pair needs a margin of at least
`reward_margin`: the Bradley-Terry scores are only meaningful as differences, and small ones are
within the model's error.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.pairs.base import Candidates, PairSet, Strategy
from pipeline.pairs.options import PairOptions
from pipeline.pairs.selection import run_strategy


def _rule(cands: Candidates, pairs: PairSet, options: PairOptions) -> np.ndarray:
    return pairs.gap >= options.musicality.reward_margin


MUSICALITY = Strategy(name="musicality", column="reward", higher_is_better=True, rule=_rule)


def musicality_pairs(candidates: pd.DataFrame | pa.Table, options: PairOptions, rng_seed: int
                     ) -> tuple[pd.DataFrame, dict]:
    """Musicality pairs (gap = chosen reward - rejected reward) and their counts; see `pipeline.pairs`."""
    return run_strategy(MUSICALITY, candidates, options, rng_seed)
