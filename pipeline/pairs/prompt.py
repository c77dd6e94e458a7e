"""Prompt consistency: prefer the candidate that matches its text description better.

Score: `similarity`, text-audio similarity (MuQ-MuLan in the paper; higher is better). A pair needs
the chosen candidate at or above `upper`, the rejected at or below `lower`, and a gap of at least
`min_gap`. With `thresholds="quantile"`, upper and lower are quantile levels of each prompt's own
usable similarities (linear interpolation, as numpy's default), for scorers whose scale drifts
between descriptions; the gap stays in similarity units.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.pairs.base import Candidates, PairSet, Strategy, order_by
from pipeline.pairs.options import PairOptions
from pipeline.pairs.selection import run_strategy


def prompt_quantile(cands: Candidates, column: str, level: float) -> np.ndarray:
    """Per prompt code, the `level` quantile of its finite scores (NaN for a prompt without any)."""
    score = cands.scores[column]
    usable = np.flatnonzero(np.isfinite(score))
    values = score[usable]
    group = cands.prompt[usable]
    order = order_by(group, values)
    values = values[order]
    counts = np.bincount(group, minlength=len(cands.prompt_ids))
    start = np.cumsum(counts) - counts
    has = counts > 0
    position = level * (counts[has] - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, counts[has] - 1)
    frac = position - low
    result = np.full(len(counts), np.nan)
    lo_value, hi_value = values[start[has] + low], values[start[has] + high]
    result[has] = lo_value + (hi_value - lo_value) * frac
    return result


def _rule(cands: Candidates, pairs: PairSet, options: PairOptions) -> np.ndarray:
    o = options.prompt
    if o.thresholds == "quantile":
        prompt = cands.prompt[pairs.chosen]
        upper = prompt_quantile(cands, PROMPT.column, o.upper)[prompt]
        lower = prompt_quantile(cands, PROMPT.column, o.lower)[prompt]
    else:
        upper, lower = o.upper, o.lower
    return (pairs.chosen_score >= upper) & (pairs.rejected_score <= lower) & (pairs.gap >= o.min_gap)


PROMPT = Strategy(name="prompt", column="similarity", higher_is_better=True, rule=_rule)


def prompt_pairs(candidates: pd.DataFrame | pa.Table, options: PairOptions, rng_seed: int) -> tuple[pd.DataFrame, dict]:
    """Prompt-consistency pairs (gap = chosen similarity - rejected similarity) and their counts."""
    return run_strategy(PROMPT, candidates, options, rng_seed)
