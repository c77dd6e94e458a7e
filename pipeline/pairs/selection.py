"""From a strategy's candidate pairs to its dataset: the selection rules, applied in this order:

1. `max_uses_per_candidate` (m): each pair is ranked within each of its two candidates (largest gap
   first); it is kept only if it is in the top m of both. A candidate's kept pairs are then a subset
   of its top m, so it is used at most m times. This one-pass rule is vectorised and
   order-independent; a sequential greedy (walk pairs by gap, take one while both ends have uses
   left) keeps a few more but needs a loop: on benchmarks/pairs_scale.py's table, with the
   defaults, this rule keeps 97.8-100% of the greedy's pairs.
2. `max_pairs_per_prompt` (p): the top p surviving pairs of each prompt, largest gap first.
3. split: a prompt is 'test' when the seeded hash of its prompt_id falls below `test_fraction`;
   the hash sees only the prompt_id and the seed, so a prompt keeps its split whatever else is in
   the table, and every strategy with the same seed agrees (no prompt on both sides).
4. `max_group_share`: within each split, no genre and no language above the share. Chosen over
   "downsample to the smallest group" because one rare language would otherwise shrink every
   other group to its size; here only the groups above the cap lose pairs, chosen uniformly by a
   seeded hash so the kept pairs keep the group's gap distribution.

"Largest gap first" ties are broken by a seeded hash of (chosen_id, rejected_id); pairs whose
hashes also agree (top 32 bits) keep the canonical enumeration order, a function of the ids and
scores: never of the input row order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.pairs.base import Candidates, PairSet, enumerate_pairs, load_candidates, order_by, seeded_hash, to_frame
from pipeline.pairs.options import PairOptions, SelectionOptions
from pipeline.preferences.base import Preference

SPLITS = ("train", "test")


def assign_split(prompt_ids: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """True where a prompt is held out: a pure function of (prompt_id, test_fraction, seed)."""
    uniform = (seeded_hash(prompt_ids, seed, "split") >> np.uint64(11)).astype(np.float64) / 2.0**53
    return uniform < test_fraction


def rank_within(groups: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """0-based rank of each element within its group, lowest priority value first (priorities distinct)."""
    order = order_by(groups, priority)
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]]) if len(order) else order
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - run_start
    return rank


def _pair_hash(cands: Candidates, pairs: PairSet, seed: int) -> np.ndarray:
    """A seeded uint64 per pair, a function of (chosen_id, rejected_id, seed) only."""
    h = cands.candidate_hash(seed, "tie")
    with np.errstate(over="ignore"):
        x = h[pairs.chosen] ^ (h[pairs.rejected] * np.uint64(0x9E3779B97F4A7C15))
        x = (x ^ (x >> np.uint64(31))) * np.uint64(0xBF58476D1CE4E5B9)  # splitmix64 finaliser
        return x ^ (x >> np.uint64(29))


def _water_level(counts: np.ndarray, share: float) -> int:
    """The largest K with K <= share * sum(min(counts, K)): cap every group at K pairs."""
    level = int(counts.max())
    while True:
        lower = int(np.floor(share * np.minimum(counts, level).sum() + 1e-9))
        if lower >= level:
            return level
        level = lower


def _cap_shares(keep: np.ndarray, in_split: np.ndarray, dims: tuple[np.ndarray, ...], share: float,
                priority: np.ndarray) -> None:
    """Drop pairs (in place in `keep`) until no group of any dimension exceeds its share of the split."""
    changed = True
    while changed:  # capping one dimension can push another over its share; repeat until stable
        changed = False
        for codes in dims:
            members = np.flatnonzero(keep & in_split)
            counts = np.bincount(codes[members])
            counts = counts[counts > 0]
            if len(counts) < 2:
                continue  # one group is no imbalance
            level = _water_level(counts, max(share, 1.0 / len(counts)))
            if counts.max() <= level:
                continue
            drop = members[rank_within(codes[members], priority[members]) >= level]
            keep[drop] = False
            changed = True


def select(cands: Candidates, pairs: PairSet, options: SelectionOptions, seed: int
           ) -> tuple[PairSet, np.ndarray, dict]:
    """Apply the rules; returns the kept pairs sorted by (prompt_id, largest gap), their test flags, counts."""
    pair_hash = _pair_hash(cands, pairs, seed)
    # One global priority: larger gap first, then the seeded hash (its top 32 bits; the rare equal
    # ones keep the canonical enumeration order, which follows ids and scores, never row order).
    priority = np.empty(len(pairs), dtype=np.int64)
    priority[order_by(np.unique(-pairs.gap, return_inverse=True)[1], pair_hash >> np.uint64(32),
                      stable=True)] = np.arange(len(pairs))
    after = {}

    ends = np.concatenate([pairs.chosen, pairs.rejected])
    use_rank = rank_within(ends, np.concatenate([priority, priority]))
    keep = (use_rank[: len(pairs)] < options.max_uses_per_candidate) & (
        use_rank[len(pairs):] < options.max_uses_per_candidate)
    after["max_uses_per_candidate"] = int(keep.sum())

    prompt = cands.prompt[pairs.chosen]
    kept = np.flatnonzero(keep)
    keep[kept[rank_within(prompt[kept], priority[kept]) >= options.max_pairs_per_prompt]] = False
    after["max_pairs_per_prompt"] = int(keep.sum())

    is_test = assign_split(cands.prompt_ids, options.test_fraction, seed)[prompt]
    if options.max_group_share is not None:
        genre_code = np.unique(cands.genre, return_inverse=True)[1][prompt]
        language_code = np.unique(cands.language, return_inverse=True)[1][prompt]
        balance_priority = np.empty(len(pairs), dtype=np.int64)  # uniform: the hash alone, not the gap
        balance_priority[np.argsort(pair_hash, kind="stable")] = np.arange(len(pairs))
        for flag in (False, True):
            _cap_shares(keep, is_test == flag, (genre_code, language_code), options.max_group_share,
                        balance_priority)
        after["max_group_share"] = int(keep.sum())

    kept = np.flatnonzero(keep)
    kept = kept[order_by(prompt[kept], priority[kept])]
    out, out_test = pairs.take(kept), is_test[kept]
    stats = {"pairs_after_each_rule": after, "pairs_out": len(kept), "per_split": split_counts(cands, out, out_test)}
    return out, out_test, stats


def split_counts(cands: Candidates, pairs: PairSet, is_test: np.ndarray) -> dict:
    """Pairs and distinct prompts per split."""
    prompt = cands.prompt[pairs.chosen]
    return {name: {"pairs": int((is_test == flag).sum()), "prompts": int(len(np.unique(prompt[is_test == flag])))}
            for name, flag in zip(SPLITS, (False, True))}


def strategy_pairs(cands: Candidates, preference: Preference, options: PairOptions, seed: int
                   ) -> tuple[PairSet, np.ndarray, dict]:
    """Enumerate, apply the preference's rule, then the selection rules; arrays plus the counts."""
    pairs, stats = enumerate_pairs(cands, preference)
    pairs = pairs.take(np.flatnonzero(preference.rule(cands, pairs, options.rule_options(preference.name))))
    stats["pairs_before_selection"] = len(pairs)
    pairs, is_test, selected = select(cands, pairs, options.selection, seed)
    return pairs, is_test, {"strategy": preference.name, **stats, **selected}


def preference_pairs(preference: Preference, candidates: pd.DataFrame | pa.Table, options: PairOptions, rng_seed: int
                     ) -> tuple[pd.DataFrame, dict]:
    """One preference's strategy: checked input in, (pairs table, counts) out."""
    cands = load_candidates(candidates, preference.name, (preference.score,))
    pairs, is_test, stats = strategy_pairs(cands, preference, options, rng_seed)
    return to_frame(cands, pairs, np.full(len(pairs), preference.name, dtype=object), is_test), stats
