"""Rankings -> preference pairs, gold checks, and the annotators' own agreement ceiling.

Breaking. Each ranking of a task's k candidates is broken into every pair it orders ("full
breaking"): k(k-1)/2 pairs (winner, loser), tied candidates giving no pair. Full breaking is the
breaking that keeps the pairwise estimate consistent: Azari Soufiani, Parkes & Xia (2014),
"Computing parametric ranking models via rank-breaking" (ICML), show that for Plackett-Luce and
for normal random-utility models (our simulated crowd is one) the estimator on full-breaking
counts is consistent, while breakings that keep only some positions (adjacent pairs, say) are
not in general. The reason is visible for Plackett-Luce: the marginal probability that i is
ranked above j in a PL ranking of any subset is exactly Bradley-Terry, w_i / (w_i + w_j), so
with every pair of every ranking counted once, the Bradley-Terry pair likelihood is an unbiased
composite likelihood of the ranking model. Pairs from one ranking are dependent, so the pair
count overstates the evidence (standard errors, not the estimate). A tie is symmetric evidence
with no winner; it is dropped rather than split, so the fitted scale is that of decisive
judgements.

Agreement ceiling. For one annotator's pair (i over j), the majority of the *other* annotators'
judgements of the same unordered pair (any task of that prompt) either agrees or not; the mean
over every pair with a strict majority is how well one annotator's call can be predicted from
the rest of the crowd. A reward model is measured on the same pairs.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd
import pyarrow as pa

# One ranking per row: one annotator's answer to one task. The reward_model stage writes its
# snapshot in this schema and the annotation service exports in it.
RANKINGS_SCHEMA = pa.schema(
    [
        ("annotator_id", pa.string()),
        ("task_id", pa.string()),
        ("prompt_id", pa.string()),
        ("candidate_ids", pa.list_(pa.string())),  # best first
        ("ranks", pa.list_(pa.int32())),  # 1 = best, aligned with candidate_ids; ties share a rank
        ("tied", pa.bool_()),
        ("is_gold", pa.bool_()),
        ("gold_answer", pa.string()),
        ("duration_s", pa.float64()),
        ("simulated", pa.bool_()),
        ("excluded", pa.bool_()),  # quality control excluded the annotator; not used for training
    ]
)
PAIR_COLUMNS = ["annotator_id", "task_id", "prompt_id", "winner", "loser", "winner_rank", "loser_rank"]


def break_ranking(candidate_ids: list[str], ranks: list[int]) -> list[tuple[str, str]]:
    """Full rank-breaking of one ranking: every (winner, loser) with rank(winner) < rank(loser)."""
    if len(candidate_ids) != len(ranks):
        raise ValueError(f"{len(candidate_ids)} candidates but {len(ranks)} ranks")
    return [(a, b) for a, ra in zip(candidate_ids, ranks) for b, rb in zip(candidate_ids, ranks) if ra < rb]


def validate_rankings(rankings: pd.DataFrame, known: set[str] | None = None) -> None:
    """Raises ValueError naming the row (annotator, task) of the first malformed ranking."""
    missing = {"annotator_id", "task_id", "prompt_id", "candidate_ids", "ranks"} - set(rankings.columns)
    if missing:
        raise ValueError(f"rankings lack columns {sorted(missing)}")
    for row in rankings.itertuples(index=False):
        where = f"ranking of task {row.task_id!r} by annotator {row.annotator_id!r}"
        ids, ranks = list(row.candidate_ids), list(row.ranks)
        if len(ids) != len(ranks):
            raise ValueError(f"{where}: {len(ids)} candidates but {len(ranks)} ranks")
        if len(set(ids)) != len(ids):
            raise ValueError(f"{where}: names a candidate twice: {ids}")
        if any(not isinstance(r, (int, np.integer)) or r < 1 for r in ranks):
            raise ValueError(f"{where}: ranks must be integers >= 1, got {ranks}")
        if known is not None:
            unknown = [c for c in ids if c not in known]
            if unknown:
                raise ValueError(f"{where}: unknown candidate(s) {unknown}")


def rankings_to_pairs(rankings: pd.DataFrame, known: set[str] | None = None) -> pd.DataFrame:
    """One row per ordered pair of every ranking (full breaking; ties give none): PAIR_COLUMNS."""
    validate_rankings(rankings, known)
    rows = []
    for row in rankings.itertuples(index=False):
        rank_of = dict(zip(row.candidate_ids, row.ranks))
        for winner, loser in break_ranking(list(row.candidate_ids), list(row.ranks)):
            rows.append((row.annotator_id, row.task_id, row.prompt_id, winner, loser, rank_of[winner], rank_of[loser]))
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def gold_accuracy(rankings: pd.DataFrame) -> pd.DataFrame:
    """Per annotator: gold tasks answered and the share where the gold answer was ranked first alone."""
    gold = rankings[rankings["is_gold"].astype(bool)]
    rows = []
    for annotator, group in gold.groupby("annotator_id", sort=True):
        answers = zip(group["candidate_ids"], group["ranks"], group["gold_answer"])
        hits = [ids[0] == answer and (len(ranks) < 2 or ranks[1] > ranks[0]) for ids, ranks, answer in answers]
        rows.append({"annotator_id": annotator, "gold_tasks": len(hits), "gold_accuracy": float(np.mean(hits))})
    return pd.DataFrame(rows, columns=["annotator_id", "gold_tasks", "gold_accuracy"])


def drop_failed_gold(rankings: pd.DataFrame, min_accuracy: float = 0.5,
                     min_tasks: int = 2) -> tuple[pd.DataFrame, list[str]]:  # fmt: skip
    """Rankings without annotators who answered >= min_tasks gold tasks below min_accuracy; and who they were."""
    scores = gold_accuracy(rankings)
    failed = scores[(scores["gold_tasks"] >= min_tasks) & (scores["gold_accuracy"] < min_accuracy)]["annotator_id"]
    failed = sorted(failed)
    return rankings[~rankings["annotator_id"].isin(failed)].reset_index(drop=True), failed


def _votes(pairs: pd.DataFrame) -> dict[tuple[str, str, str], dict[str, int]]:
    """(prompt, a, b) with a < b -> {annotator: net votes for a over b}."""
    votes: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    rows = zip(pairs["prompt_id"], pairs["annotator_id"], pairs["winner"], pairs["loser"])
    for prompt, annotator, winner, loser in rows:
        a, b = sorted((winner, loser))
        votes[(prompt, a, b)][annotator] += 1 if winner == a else -1
    return votes


def majority_of_others(pairs: pd.DataFrame) -> np.ndarray:
    """Per pair row: +1 if the other annotators' majority agrees with it, -1 if it disagrees, 0 if
    there is no strict majority (no other annotator, or a tie among them)."""
    votes = _votes(pairs)
    out = np.zeros(len(pairs), dtype=int)
    for n, (prompt, annotator, winner, loser) in enumerate(
        zip(pairs["prompt_id"], pairs["annotator_id"], pairs["winner"], pairs["loser"])
    ):
        a, b = sorted((winner, loser))
        others = sum(np.sign(v) for who, v in votes[(prompt, a, b)].items() if who != annotator)
        out[n] = int(np.sign(others)) * (1 if winner == a else -1)
    return out


def agreement_ceiling(pairs: pd.DataFrame) -> dict:
    """How often an annotator's pair agrees with the majority of the others on the same pair."""
    majority = majority_of_others(pairs)
    decided = majority != 0
    return {
        "agreement": float(np.mean(majority[decided] > 0)) if decided.any() else None,
        "pairs_compared": int(decided.sum()),
        "pairs_without_majority": int((~decided).sum()),
    }
