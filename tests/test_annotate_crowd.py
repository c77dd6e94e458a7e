"""The simulated crowd's rankings go through the annotation service's upload path: the export
returns what the crowd said, a second submission stores nothing, a bad row refuses the whole frame."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import func, select

from annotate_helpers import build_round
from pipeline.models.tiny.score import Chord, Score, Section, SungWord
from reward_model.crowd import CrowdConfig, SimulatedCrowd
from reward_model.rankings import rankings_to_pairs
from reward_model.service.crowd_upload import submit_simulated_rankings
from reward_model.service.db import Database
from reward_model.service.models import Annotator, Campaign, Submission, Task, Upload
from reward_model.service.uploads import UploadRejected

CROWD_COLUMNS = ["annotator_id", "task_id", "prompt_id", "candidate_ids", "ranks", "tied", "is_gold", "gold_answer", "duration_s"]


def score(badness: int) -> Score:
    """A short song; each step of `badness` moves one more sung note off the key (and off the beat)."""
    vocals = [SungWord(4 * i + (1 if i < badness else 0), 4, 61 if i < badness else 60 + (0, 4, 7, 12)[i % 4], "la", 0) for i in range(8)]
    return Score(tempo_bpm=120, key=0, mode="major", gender="male", genre="pop", instruments=["piano"],
                 sections=[Section("[verse]", 0, 32 + 4 * badness)], vocals=vocals, chords=[Chord(0, 32, 0, "maj")])  # fmt: skip


@pytest.fixture(scope="module")
def crowd_round(tmp_path_factory):
    root = build_round(tmp_path_factory.mktemp("round"), prompts=3, per_prompt=4, audio=False)
    frame = pd.DataFrame([{"candidate_id": f"p{p}c{c}", "prompt_id": f"prompt{p}", "score": score((c * 3 + p) % 7)}
                          for p in range(3) for c in range(4)])  # fmt: skip
    config = CrowdConfig(seed=3, annotators=5, candidates_per_task=3, tasks_per_prompt=2, annotators_per_task=3,
                         careless_share=0.2, gold_min_gap=0.05, tie_width=0.05)  # fmt: skip
    rankings, _ = SimulatedCrowd(config).rank(frame)
    return root, rankings


def dense(ranks) -> list[int]:
    order = sorted(set(ranks))
    return [order.index(r) + 1 for r in ranks]


def assert_same_pairs(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pairs = lambda frame: sorted(map(tuple, rankings_to_pairs(frame)[["annotator_id", "task_id", "winner", "loser"]].to_numpy().tolist()))  # noqa: E731
    assert pairs(got) == pairs(want)


def counts(root) -> dict:
    return counts_at(f"sqlite:///{root / 'rankings' / 'annotations.db'}")


def test_crowd_rankings_go_through_the_service_once(crowd_round):
    root, rankings = crowd_round
    assert rankings["is_gold"].any() and not rankings["is_gold"].all() and rankings["tied"].any()  # gold, plain and tied rows
    assert any(list(r) == [1, 1, 3] for r in rankings["ranks"])  # the crowd's ties skip a rank
    exported = submit_simulated_rankings(root, rankings)
    assert (root / "rankings" / "annotations.db").is_file()
    assert list(exported.columns) == CROWD_COLUMNS + ["simulated", "excluded"]
    assert exported["simulated"].all() and len(exported) == len(rankings) == 18
    got, want = exported[CROWD_COLUMNS].reset_index(drop=True), rankings[CROWD_COLUMNS].reset_index(drop=True)
    assert got["candidate_ids"].map(list).tolist() == want["candidate_ids"].map(list).tolist()
    assert got["ranks"].map(list).tolist() == want["ranks"].map(dense).tolist()  # the service's ranks: 1, 1, 2 not 1, 1, 3
    assert_same_pairs(got, want)
    for column in ("annotator_id", "task_id", "prompt_id", "tied", "is_gold"):
        assert got[column].tolist() == want[column].tolist(), column
    assert got["gold_answer"].where(got["is_gold"]).tolist() == want["gold_answer"].where(want["is_gold"]).tolist()
    assert got["duration_s"].tolist() == want["duration_s"].tolist()
    first = counts(root)
    tasks = rankings.groupby("task_id").agg(prompt=("prompt_id", "first"), ids=("candidate_ids", lambda s: sorted(s.iloc[0])),
                                            gold=("gold_answer", "first"))  # fmt: skip
    assert first == {"Campaign": 1, "Task": len(tasks), "Annotator": rankings["annotator_id"].nunique(), "Upload": 1, "Submission": 18}
    db = Database(f"sqlite:///{root / 'rankings' / 'annotations.db'}")
    with db.read() as session:
        stored = {t.task_key: (t.prompt_id, sorted(t.candidate_ids), t.gold_answer, t.is_gold) for t in session.scalars(select(Task))}
        positions = sorted(session.scalars(select(Task.position)))
        names = sorted(session.scalars(select(Annotator.name)))
    db.dispose()
    assert stored == {f"simulated-crowd:{k}": (r.prompt, r.ids, None if pd.isna(r.gold) else r.gold, not pd.isna(r.gold)) for k, r in tasks.iterrows()}
    assert positions == list(range(len(tasks))) and names == sorted(rankings["annotator_id"].unique())

    again = submit_simulated_rankings(root, rankings)  # the same rankings: "already imported"
    assert counts(root) == first
    pd.testing.assert_frame_equal(again, exported)


def test_a_frame_with_a_bad_row_is_refused_whole(crowd_round, tmp_path):
    root, rankings = crowd_round
    bad = rankings.copy()
    bad.at[4, "candidate_ids"] = ["nope", *bad.at[4, "candidate_ids"][1:]]
    bad.at[7, "ranks"] = [1, 2, 4]  # skips rank 3
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    with pytest.raises(UploadRejected) as caught:
        submit_simulated_rankings(root, bad, db_url=url)  # a new campaign: refused whole, nothing created
    rows = {p["row"]: p["reason"] for p in caught.value.problems}
    assert sorted(rows) == [5, 8] and "unknown candidate ids ['nope']" in rows[5] and "ranks" in rows[8]
    db = Database(url)
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Campaign)) == 0
    db.dispose()

    submit_simulated_rankings(root, rankings, db_url=url)  # the good frame; then the bad one against the stored tasks
    before = counts_at(url)
    wrong_gold = rankings.copy()
    wrong_gold.at[0, "is_gold"] = not wrong_gold.at[0, "is_gold"]
    wrong_gold.at[0, "gold_answer"] = wrong_gold.at[0, "candidate_ids"][0] if wrong_gold.at[0, "is_gold"] else None
    for frame, row, reason in ((bad, 5, "unknown candidate ids ['nope']"), (wrong_gold, 1, "is_gold/gold_answer")):
        with pytest.raises(UploadRejected) as caught:
            submit_simulated_rankings(root, frame, db_url=url)
        assert any(p["row"] == row and reason in p["reason"] for p in caught.value.problems), caught.value.report()
    assert counts_at(url) == before


def counts_at(url: str) -> dict:
    db = Database(url)
    try:
        with db.read() as session:
            return {table.__name__: session.scalar(select(func.count()).select_from(table)) for table in (Campaign, Task, Annotator, Upload, Submission)}
    finally:
        db.dispose()
