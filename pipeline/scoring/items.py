"""Candidates as scorers see them: a `ScoringItem` per song, its stem chosen by the score kind."""

from __future__ import annotations

from pathlib import Path

from pipeline.scoring.base import ScoringItem

STEMS = ("mix", "vocals", "accompaniment")
TAG_KEYS = ("gender", "genre", "emotion", "instruments", "bpm", "tempo")


def scoring_item(candidate_id: str, stems: dict[str, Path], condition: dict, stem_order) -> ScoringItem | None:
    """The item for one song: the first stem of `stem_order` it has (None if it has none)."""
    chosen = next((stems[s] for s in stem_order if s in stems), None)
    if chosen is None:
        return None
    tags = {k: condition.get(k) for k in TAG_KEYS}
    return ScoringItem(candidate_id, Path(chosen), condition["lyric"], condition["language"], condition["description"],
                       tags, dict(stems))  # fmt: skip


def scoring_items(store, candidates_path: str, conditions: dict, stem_order) -> tuple[list[ScoringItem], list[dict]]:
    """A candidates shard as scoring items, and a failed row for each candidate without audio."""
    items, failed = [], []
    for row in store.read_table(candidates_path).to_pylist():
        stems = {s: Path(store.path(row[f"{s}_uri"])) for s in STEMS if row[f"{s}_uri"]}
        item = scoring_item(row["candidate_id"], stems, conditions[row["condition_id"]], stem_order)
        if item is None:
            failed.append({"candidate_id": row["candidate_id"], "error": f"no audio: {row['error'] or 'no stem'}"})
        else:
            items.append(item)
    return items, failed
