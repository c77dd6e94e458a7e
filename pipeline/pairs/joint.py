"""Joint: the union of every registered preference's dataset, for one DPO run on all of them.

Each part is built exactly as on its own (its rule, then the selection rules, so caps hold per
strategy, not over the union). A (chosen, rejected) pair found by several strategies is kept once,
labelled with the first in registry order; the `strategy` column says where each pair came from and
`chosen_score`/`rejected_score`/`gap` are in that strategy's units. Opposite pairs (A over B by one
score, B over A by another) are both kept, as the paper's union does, and counted as `contradicting_pairs`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.pairs.base import PairSet, load_candidates, order_by, to_frame
from pipeline.pairs.options import PairOptions
from pipeline.pairs.selection import split_counts, strategy_pairs
from pipeline.preferences import JOINT, preferences


def joint_pairs(candidates: pd.DataFrame | pa.Table, options: PairOptions, rng_seed: int) -> tuple[pd.DataFrame, dict]:
    """Union of every preference's pairs and the counts: per part under `strategies`, then the union's."""
    order = list(preferences().values())
    cands = load_candidates(candidates, JOINT, tuple(p.score for p in order))
    parts, tests, stats = [], [], {}
    for strategy in order:
        pairs, is_test, part_stats = strategy_pairs(cands, strategy, options, rng_seed)
        parts.append(pairs)
        tests.append(is_test)
        stats[strategy.name] = part_stats
    origin = np.concatenate([np.full(len(p), i, dtype=np.int64) for i, p in enumerate(parts)])
    union = PairSet(*(np.concatenate([getattr(p, f) for p in parts])
                      for f in ("chosen", "rejected", "gap", "chosen_score", "rejected_score")))
    is_test = np.concatenate(tests)

    key = union.chosen.astype(np.int64) * len(cands) + union.rejected
    first = np.sort(np.unique(key, return_index=True)[1])  # first occurrence = earliest strategy
    # each part is sorted by (prompt, largest gap); a stable sort by (prompt, strategy) keeps that
    first = first[order_by(cands.prompt[union.chosen[first]], origin[first], stable=True)]
    union, origin, is_test, key = union.take(first), origin[first], is_test[first], key[first]
    reverse = union.rejected.astype(np.int64) * len(cands) + union.chosen

    names = np.array([p.name for p in order], dtype=object)
    summary = {
        "strategy": JOINT,
        "candidates_in": len(cands),
        "prompts_in": len(cands.prompt_ids),
        "strategies": stats,
        "duplicates_removed": int(sum(len(p) for p in parts) - len(union)),
        "contradicting_pairs": int(np.isin(reverse, key).sum()),
        "pairs_out": len(union),
        "per_split": split_counts(cands, union, is_test),
    }
    return to_frame(cands, union, names[origin], is_test), summary
