"""Shared machinery of the pair strategies: input checks, seeded hashes, pair enumeration, output.

Input contract: a pandas DataFrame with one row per scored candidate and the columns
`candidate_id, prompt_id, genre, language` (strings, no nulls; genre and language constant within a
prompt, as they come from the prompt's condition) plus the score columns a strategy reads:
`per` (phoneme error rate x 100, lower is better), `similarity` and `reward` (higher is better).
A pyarrow Table is accepted too and converted once here; nothing else needs to know.

Everything runs on numpy arrays of integer codes: candidates are put in a canonical order
(prompt_id, then candidate_id, both lexicographic), so the output never depends on input row order,
and a prompt's pairs are enumerated by index arithmetic rather than a loop over prompts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.preferences.base import Preference


ID_COLUMNS = ("candidate_id", "prompt_id", "genre", "language")
PAIR_COLUMNS = ("prompt_id", "chosen_id", "rejected_id", "strategy", "chosen_score", "rejected_score",
                "gap", "genre", "language", "split")


def seeded_hash(values: np.ndarray, seed: int, purpose: str) -> np.ndarray:
    """A uint64 per value that depends on the value, the seed and the purpose only.

    SipHash (pandas' hash_array) keyed by a digest of (purpose, seed): stable across processes
    and independent of what else is in the array, which is what makes splits and tie-breaks
    reproducible whatever the rest of the table holds. tests/test_pairs.py pins known values, so
    a pandas release that changed the hash (and so moved prompts between splits) fails loudly.
    """
    key = hashlib.sha256(f"songpref.pairs:{purpose}:{int(seed)}".encode()).hexdigest()[:16]
    return pd.util.hash_array(np.asarray(values, dtype=object), hash_key=key, categorize=False)


def order_by(groups: np.ndarray, values: np.ndarray, stable: bool = False) -> np.ndarray:
    """Indexes sorting by (groups, values): np.lexsort's result, at a third of its cost.

    Both keys fold into one int64 (group, dense rank of value). Elements equal in both keep
    their order only with `stable=True`; callers that need no such order pass unique keys or
    do not care (e.g. equal scores, which never pair).
    """
    if len(values) == 0:
        return np.empty(0, dtype=np.int64)
    if values.dtype.kind in "iu" and values.min() >= 0:
        rank, size = values.astype(np.int64), int(values.max()) + 1  # already ranks: skip a sort
    else:
        uniques, rank = np.unique(values, return_inverse=True)
        size = len(uniques)
    if (int(groups.max()) + 1) * size >= 2**63:
        return np.lexsort((values, groups))
    combined = np.asarray(groups, dtype=np.int64) * size + rank
    return np.argsort(combined, kind="stable" if stable else "quicksort")


@dataclass
class Candidates:
    """Validated candidates in canonical order; prompt-level fields are indexed by prompt code."""

    candidate_id: np.ndarray  # object, sorted within each prompt
    prompt: np.ndarray  # int64 prompt code per candidate, non-decreasing
    prompt_ids: np.ndarray  # object, unique prompt ids in lexicographic order (code -> id)
    genre: np.ndarray  # object, per prompt
    language: np.ndarray  # object, per prompt
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # float64 per candidate
    _hashes: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.candidate_id)

    def candidate_hash(self, seed: int, purpose: str) -> np.ndarray:
        """seeded_hash of the candidate ids, computed once per (seed, purpose) for the joint strategy."""
        if (seed, purpose) not in self._hashes:
            self._hashes[seed, purpose] = seeded_hash(self.candidate_id, seed, purpose)
        return self._hashes[seed, purpose]


@dataclass
class PairSet:
    """Pairs as indexes into a Candidates; `gap` is always positive (chosen strictly better)."""

    chosen: np.ndarray
    rejected: np.ndarray
    gap: np.ndarray
    chosen_score: np.ndarray
    rejected_score: np.ndarray

    def __len__(self) -> int:
        return len(self.chosen)

    def take(self, index: np.ndarray) -> "PairSet":
        return PairSet(self.chosen[index], self.rejected[index], self.gap[index],
                       self.chosen_score[index], self.rejected_score[index])


def _string_column(frame: pd.DataFrame, column: str) -> pd.Series:
    series = frame[column]
    if series.isna().any():
        raise ValueError(f"candidates.{column}: {int(series.isna().sum())} null value(s); every row needs one")
    kind = pd.api.types.infer_dtype(series, skipna=False)
    if kind not in ("string", "empty"):
        raise ValueError(f"candidates.{column} must hold strings (found {kind})")
    return series


def load_candidates(candidates: pd.DataFrame | pa.Table, strategy: str, score_columns: tuple[str, ...]) -> Candidates:
    """Check the table for `strategy` and put it in canonical order; raises ValueError naming the problem."""
    if isinstance(candidates, pa.Table):  # convert only the columns read here
        wanted = (*ID_COLUMNS, *score_columns)
        candidates = candidates.select([c for c in candidates.column_names if c in wanted]).to_pandas()
    if not isinstance(candidates, pd.DataFrame):
        raise TypeError(f"candidates must be a pandas DataFrame or pyarrow Table, not {type(candidates).__name__}")
    for column in ID_COLUMNS:
        if column not in candidates.columns:
            raise ValueError(f"candidates: column {column!r} is missing (strategy {strategy!r} needs {list(ID_COLUMNS)})")
    for column in score_columns:
        if column not in candidates.columns:
            raise ValueError(f"candidates: score column {column!r} is missing; strategy {strategy!r} needs it")
        if not pd.api.types.is_numeric_dtype(candidates[column]) or pd.api.types.is_bool_dtype(candidates[column]):
            raise ValueError(f"candidates.{column} must be numeric for strategy {strategy!r} "
                             f"(found {candidates[column].dtype})")
    ids = _string_column(candidates, "candidate_id")
    candidate_rank, unique_ids = pd.factorize(ids, sort=True)
    if len(unique_ids) < len(ids):
        repeated = np.flatnonzero(np.bincount(candidate_rank) > 1)
        raise ValueError(f"candidates.candidate_id: {len(repeated)} id(s) appear more than once, "
                         f"e.g. {unique_ids[repeated[0]]!r}")
    prompt_code, prompt_ids = pd.factorize(_string_column(candidates, "prompt_id"), sort=True)
    order = order_by(prompt_code, candidate_rank)
    prompt_code = prompt_code[order].astype(np.int64)

    block_size = np.bincount(prompt_code, minlength=len(prompt_ids))
    block_start = np.cumsum(block_size) - block_size
    per_prompt = {}
    for column in ("genre", "language"):
        codes, labels = pd.factorize(_string_column(candidates, column), sort=True)
        codes = codes[order]
        first = codes[block_start]  # the prompt's first candidate's value
        mixed = codes != first[prompt_code]
        if mixed.any():
            bad = np.asarray(prompt_ids, dtype=object)[prompt_code[np.argmax(mixed)]]
            raise ValueError(f"candidates.{column}: prompt_id {bad!r} has more than one {column}; "
                             f"it belongs to the prompt's condition and must be the same for all its candidates")
        per_prompt[column] = np.asarray(labels, dtype=object)[first]

    scores = {c: candidates[c].to_numpy(dtype=np.float64, na_value=np.nan)[order] for c in score_columns}
    return Candidates(ids.to_numpy(dtype=object)[order], prompt_code, np.asarray(prompt_ids, dtype=object),
                      per_prompt["genre"], per_prompt["language"], scores)


def enumerate_pairs(cands: Candidates, preference: Preference) -> tuple[PairSet, dict]:
    """Every within-prompt pair of usable candidates with different scores, better one as chosen.

    Non-finite scores (NaN, inf) are excluded and counted. Equal scores never make a pair: there
    is no preference to learn from a tie, whatever the threshold (counted as `tied_pairs`).
    """
    score = cands.scores[preference.score]
    usable = np.flatnonzero(np.isfinite(score))
    key = -score[usable] if preference.higher_is_better else score[usable]  # ascending key = better first
    order = order_by(cands.prompt[usable], key)
    members, key = usable[order], key[order]
    group = cands.prompt[members]
    counts = np.bincount(group, minlength=len(cands.prompt_ids))
    end = np.cumsum(counts)[group]  # exclusive end of each member's prompt block
    later = end - np.arange(len(members)) - 1  # partners after each member in its block
    left = np.repeat(np.arange(len(members)), later)
    run_start = np.repeat(np.cumsum(later) - later, later)
    right = left + (np.arange(len(left)) - run_start) + 1
    gap = key[right] - key[left]
    distinct = gap > 0
    left, right = left[distinct], right[distinct]
    chosen, rejected = members[left], members[right]
    pairs = PairSet(chosen, rejected, gap[distinct], score[chosen], score[rejected])
    stats = {
        "candidates_in": len(cands),
        "prompts_in": len(cands.prompt_ids),
        "nan_excluded": int(len(cands) - len(usable)),
        "single_candidate_prompts": int((counts == 1).sum()),
        "candidate_pairs": int(len(gap)),
        "tied_pairs": int((~distinct).sum()),
    }
    return pairs, stats


def to_frame(cands: Candidates, pairs: PairSet, strategy: np.ndarray, is_test: np.ndarray) -> pd.DataFrame:
    """The output table, columns in PAIR_COLUMNS order (rows already in their final order)."""
    prompt = cands.prompt[pairs.chosen]
    return pd.DataFrame({
        "prompt_id": pd.array(cands.prompt_ids[prompt], dtype="str"),
        "chosen_id": pd.array(cands.candidate_id[pairs.chosen], dtype="str"),
        "rejected_id": pd.array(cands.candidate_id[pairs.rejected], dtype="str"),
        "strategy": pd.array(strategy, dtype="str"),
        "chosen_score": pairs.chosen_score.astype(np.float64),
        "rejected_score": pairs.rejected_score.astype(np.float64),
        "gap": pairs.gap.astype(np.float64),
        "genre": pd.array(cands.genre[prompt], dtype="str"),
        "language": pd.array(cands.language[prompt], dtype="str"),
        "split": pd.array(np.where(is_test, "test", "train").astype(object), dtype="str"),
    }, columns=list(PAIR_COLUMNS))
