"""Checks shared by web submissions and uploaded files: one ranking of candidates, and the key
that makes the same judgement impossible to store twice."""

from __future__ import annotations

import hashlib

from reward_model.service.bounds import MAX_CANDIDATES, shown


def ranking_problems(candidate_ids: list, ranks: list, tied: bool | None) -> list[str]:
    """Why a ranking is malformed (empty list when it is fine).

    Ranks are dense: 1..m with no gap, tied candidates sharing a rank (1, 1, 2 is a tie for first).
    Equal ranks need the tie flag; `tied=None` means "derive the flag from the ranks".
    """
    problems = []
    if not 2 <= len(candidate_ids) <= MAX_CANDIDATES:
        problems.append(f"a ranking needs 2 to {MAX_CANDIDATES} candidates, got {len(candidate_ids)}")
    if len(candidate_ids) != len(ranks) or len(ranks) > MAX_CANDIDATES:
        problems.append(f"{len(candidate_ids)} candidate ids but {len(ranks)} ranks")
        return problems
    if len(set(candidate_ids)) != len(candidate_ids):
        problems.append(f"a candidate appears twice: {shown(candidate_ids)}")
    if any(isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= len(ranks) for r in ranks):
        # checked before the gaps: a rank of 10,000,000 must not make us list ten million missing ranks
        return problems + [f"ranks must be integers from 1 to {len(ranks)} (the number of candidates), got {shown(ranks)}"]
    used = sorted(set(ranks))
    if used != list(range(1, len(used) + 1)):
        missing = sorted(set(range(1, max(used) + 1)) - set(used))
        problems.append(f"ranks {ranks} skip {missing}: ranks must run 1, 2, ... without gaps (tied candidates share a rank)")
    has_ties = len(used) < len(ranks)
    if has_ties and tied is False:
        problems.append(f"ranks {ranks} repeat a rank but the tie flag is not set")
    if tied and not has_ties:
        problems.append(f"the tie flag is set but ranks {ranks} have no equal ranks")
    return problems


def in_ranked_order(candidate_ids: list[str], ranks: list[int]) -> tuple[list[str], list[int]]:
    """Candidates sorted best first (stable within a tie)."""
    order = sorted(range(len(ranks)), key=lambda i: ranks[i])
    return [candidate_ids[i] for i in order], [ranks[i] for i in order]


def dedupe_key(annotator: str, scope: str, candidate_ids: list[str]) -> str:
    """One judgement = one annotator, one task (or prompt) and one set of candidates."""
    text = "\x1f".join([annotator, scope, *sorted(candidate_ids)])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
