"""Regression tests for the service's defects under bad input and concurrency, on SQLite and
PostgreSQL: every bad input is a 4xx that names the problem, is small, and changes nothing stored;
concurrent requests hand out every free task and never collide into a 500."""

from __future__ import annotations

import json
import time

import pytest

from annotate_helpers import admin_headers, build_round, campaign_app, database_fingerprint, database_url
from reward_model.service.models import Submission

CSV_HEADER = "annotator_id,task_id,candidate_ids,ranks\n"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tmp_path_factory):
    """Campaign "sec" (2 prompts x 8 songs, k=2: 8 tasks, overlap 3) with annotators ann and bob."""
    root = build_round(tmp_path_factory.mktemp("round"), prompts=2, per_prompt=8, seconds=0.2)
    with campaign_app(root, request.param, {"name": "sec", "k": 2, "overlap": 3}, ["ann", "bob"]) as running:
        yield running


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def upload(client, data: bytes | str, fmt: str, campaign: str = "sec"):
    data = data.encode() if isinstance(data, str) else data
    return client.post(f"/admin/campaigns/{campaign}/uploads", files={"file": ("f", data)}, data={"format": fmt}, headers=admin_headers())


def refused_unchanged(app, send, status: int | tuple = (400, 403, 404, 409, 410, 413, 415, 422)):
    """`send()`'s answer, asserted to be the given 4xx with a small body, the database untouched."""
    before = database_fingerprint(app.state.db.engine)
    answer = send()
    assert answer.status_code in (status if isinstance(status, tuple) else (status,)), (answer.status_code, answer.text[:500])
    assert len(answer.content) < 20_000
    assert database_fingerprint(app.state.db.engine) == before
    return answer


# 3. malformed uploads: 4xx with a reason, never a RecursionError or AttributeError as a 500.
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("fmt", ["json", "label-studio", "argilla"])
def test_deeply_nested_json_upload_is_refused(service, fmt):
    client, app, _ = service
    answer = refused_unchanged(app, lambda: upload(client, DEEP, fmt), 422)
    assert "nests 100000 levels" in answer.json()["detail"]["message"]


def test_deeply_nested_json_body_is_refused(service):
    client, app, tokens = service
    body = '{"task_id": ' + "[" * 20_000 + "]" * 20_000 + "}"
    answer = refused_unchanged(app, lambda: client.post("/api/submit", content=body, headers={**bearer(tokens["ann"]), "content-type": "application/json"}), 422)
    assert "nests 20001 levels" in answer.json()["detail"]


@pytest.mark.parametrize("fmt, document, words", [
    ("label-studio", [{"id": 1, "data": {"task_id": "sec:t0001"}, "annotations": "oops"}], "'annotations' must be a list"),
    ("label-studio", [{"id": 1, "data": {"task_id": "sec:t0001"}, "annotations": ["oops"]}], "annotation must be an object"),
    ("argilla", [{"external_id": "sec:t0001", "responses": {"rank": 3}}], "v2 responses"),
    ("argilla", [{"external_id": "sec:t0001", "responses": [{"values": {"r": {"value": [{"value": "p0c0", "rank": [1]}]}}}]}], "ranks must be integers"),
    ("json", [{"annotator_id": "ann", "task_id": ["sec:t0001"], "candidate_ids": ["p0c0", "p0c1"], "ranks": [1, 2]}], "task_id must be a string"),
    ("label-studio", [{"id": 1, "data": {"task_id": ["sec:t0001"], "left_id": "a", "right_id": "b"},
                       "annotations": [{"completed_by": "ann", "result": [{"type": "pairwise", "value": {"selected": "left"}}]}]}], "task_id"),
])  # fmt: skip
def test_malformed_exports_are_refused_with_a_reason(service, fmt, document, words):
    client, app, _ = service
    answer = refused_unchanged(app, lambda: upload(client, json.dumps(document), fmt), 422)
    assert words in json.dumps(answer.json()["detail"]["problems"])


def test_task_id_as_a_list_in_a_submission_is_refused(service):
    client, app, tokens = service
    body = {"task_id": ["sec:t0001"], "candidate_ids": ["p0c0", "p0c1"], "ranks": [1, 2]}
    refused_unchanged(app, lambda: client.post("/api/submit", json=body, headers=bearer(tokens["ann"])), 422)


# 4. rank values are bounded by the ranking's size before any work; error reports are bounded.
def test_huge_rank_is_refused_at_once_with_a_short_answer(service):
    client, app, tokens = service
    started = time.monotonic()
    answer = refused_unchanged(app, lambda: upload(client, CSV_HEADER + "ann,sec:t0001,p0c3;p0c2,1;10000000\n", "csv"), 422)
    assert time.monotonic() - started < 2 and len(answer.content) < 2_000
    assert "from 1 to 2" in answer.json()["detail"]["problems"][0]["reason"]
    task = client.get("/api/next", headers=bearer(tokens["ann"])).json()["task"]
    ids = [c["candidate_id"] for c in task["candidates"]]
    body = {"task_id": task["task_id"], "candidate_ids": ids, "ranks": [1, 10_000_000]}
    answer = refused_unchanged(app, lambda: client.post("/api/submit", json=body, headers=bearer(tokens["ann"])), 422)
    assert len(answer.content) < 2_000


def test_error_report_lists_at_most_fifty_problems_then_a_count(service):
    client, app, _ = service
    rows = "".join(f"nobody{i},prompt0,p0c0;p0c1,1;2\n" for i in range(2000))
    report = refused_unchanged(app, lambda: upload(client, "annotator_id,prompt_id,candidate_ids,ranks\n" + rows, "csv"), 422).json()["detail"]
    assert len(report["problems"]) == 50 and report["more_problems"] == 1950 and "2000 bad row(s)" in report["message"]


# 5. a time whose UTC instant is out of range is refused; the campaign's exports keep working.
@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1066-10-14T09:00:00Z"])
def test_out_of_range_times_are_refused_and_exports_keep_working(service, moment):
    client, app, tokens = service
    row = [{"annotator_id": "ann", "prompt_id": "prompt1", "candidate_ids": ["p1c0", "p1c1"], "ranks": [1, 2], "started_at": moment}]
    answer = refused_unchanged(app, lambda: upload(client, json.dumps(row), "json"), 422)
    assert "started_at" in answer.json()["detail"]["problems"][0]["reason"]
    spec = {"name": "late", "k": 2, "expires_at": moment}
    refused_unchanged(app, lambda: client.post("/admin/campaigns", json=spec, headers=admin_headers()), 422)
    for form in ("csv", "parquet"):
        assert client.get(f"/admin/campaigns/sec/export?format={form}", headers=admin_headers()).status_code == 200
    assert client.get("/api/submissions", headers=bearer(tokens["ann"])).status_code == 200


# 6. a NUL byte (or any character outside the id alphabet) in an id is a 4xx on both backends.
@pytest.mark.parametrize("method, path", [
    ("get", "/audio/p0c0%00/mix"), ("get", "/audio/p0c0/mix?campaign=sec%00"), ("get", "/admin/campaigns/sec%00/progress"),
    ("get", "/admin/campaigns/sec%00/export"), ("post", "/admin/campaigns/sec%00/close"), ("post", "/admin/campaigns/sec%00/uploads"),
    ("get", "/api/submissions/99999999999"),
])  # fmt: skip
def test_nul_bytes_and_out_of_range_ids_in_paths_are_refused(service, method, path):
    client, app, tokens = service
    headers = admin_headers() if "admin" in path or "campaign=" in path else bearer(tokens["ann"])
    refused_unchanged(app, lambda: getattr(client, method)(path, headers=headers), (404, 422))


def test_nul_bytes_in_submitted_and_uploaded_ids_are_refused(service):
    client, app, tokens = service
    body = {"task_id": "sec:t0001\u0000", "candidate_ids": ["p0c0", "p0c1"], "ranks": [1, 2]}
    refused_unchanged(app, lambda: client.post("/api/submit", json=body, headers=bearer(tokens["ann"])), 422)
    for field in ("annotator_id", "task_id", "candidate_ids"):
        row = {"annotator_id": "ann", "task_id": "sec:t0002", "candidate_ids": "p0c0;p0c1", "ranks": "1;2"}
        row[field] = row[field].replace("0", "0\u0000", 1) if field != "annotator_id" else "an\u0000n"
        answer = refused_unchanged(app, lambda: upload(client, json.dumps([row]), "json"), 422)
        assert "must be 1-200 letters" in answer.json()["detail"]["problems"][0]["reason"]


# 7. SQLite keeps the instant of a time given with a zone (stored as UTC, like PostgreSQL's timestamptz).
def test_times_with_a_zone_keep_their_instant(service):
    from datetime import datetime, timezone

    client, app, _ = service
    row = [{"annotator_id": "bob", "prompt_id": "prompt1", "candidate_ids": ["p1c2", "p1c3"], "ranks": [2, 1],
            "started_at": "2024-01-01T12:00:00+02:00", "submitted_at": "2024-01-01T12:00:30+02:00"}]  # fmt: skip
    assert upload(client, json.dumps(row), "json").status_code == 201
    with app.state.db.read() as session:
        stored = session.query(Submission).filter(Submission.prompt_id == "prompt1", Submission.candidate_ids.is_not(None)).all()
        stored = [s for s in stored if s.started_at is not None and s.duration_s == 30.0]
    assert len(stored) == 1
    assert stored[0].started_at == datetime(2024, 1, 1, 10, tzinfo=timezone.utc) and stored[0].started_at.utcoffset().total_seconds() == 0
    assert stored[0].submitted_at == datetime(2024, 1, 1, 10, 0, 30, tzinfo=timezone.utc)


# The assignment hole: rankings of tasks never handed out.
def test_annotators_cannot_upload_rankings_of_tasks_not_handed_to_them(service):
    client, app, tokens = service
    row = CSV_HEADER + "bob,sec:t0008,{},1;2\n"
    with app.state.db.read() as session:
        from reward_model.service.models import Task

        ids = ";".join(session.query(Task).filter(Task.task_key == "sec:t0008").one().candidate_ids)
    send = lambda: client.post("/api/uploads", files={"file": ("f", row.format(ids).encode())}, data={"format": "csv"}, headers=bearer(tokens["bob"]))  # noqa: E731
    answer = refused_unchanged(app, send, 403)
    assert "not assigned to you" in answer.json()["detail"]["problems"][0]["reason"]


def test_a_task_ranked_by_upload_is_not_handed_out_again(service):
    client, app, _ = service
    assert client.post("/admin/campaigns", json={"name": "hole", "prompts": ["prompt0"], "k": 2, "overlap": 3}, headers=admin_headers()).status_code == 201
    token = client.post("/admin/campaigns/hole/annotators", json={"names": ["cat"]}, headers=admin_headers()).json()["annotators"][0]["token"]
    with app.state.db.read() as session:
        from reward_model.service.models import Task

        first = session.query(Task).filter(Task.task_key == "hole:t0001").one().candidate_ids
    assert upload(client, CSV_HEADER + f"cat,hole:t0001,{';'.join(first)},1;2\n", "csv", campaign="hole").status_code == 201
    handed = []
    while (task := client.get("/api/next", headers=bearer(token)).json()["task"]) is not None:
        handed.append(task["task_id"])
        ids = [c["candidate_id"] for c in task["candidates"]]
        assert client.post("/api/submit", json={"task_id": task["task_id"], "candidate_ids": ids, "ranks": [1, 2]}, headers=bearer(token)).status_code == 201
        assert len(handed) <= 4
    assert "hole:t0001" not in handed and len(handed) == 3
    assert client.get("/api/progress", headers=bearer(token)).json() == {"done": 4, "total": 4}
    mine = client.get("/api/submissions", headers=bearer(token)).json()
    assert sorted(s["task_id"] for s in mine) == [f"hole:t000{i}" for i in range(1, 5)]
    assert [s["source"] for s in mine if s["task_id"] == "hole:t0001"] == ["upload"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrading_an_existing_database_marks_full_tasks(backend, tmp_path):
    """Revision 0002 adds task.has_room; a database written at 0001 gets it from the slot counts."""
    from sqlalchemy import text

    from reward_model.service.db import make_engine, migrate

    generator = database_url(backend, tmp_path)
    engine = make_engine(next(generator))
    try:
        migrate(engine, "0001")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO campaign (id, name, round_dir, k, overlap, seed, status, created_at) VALUES (1, 'old', '/r', 2, 2, 0, 'open', CURRENT_TIMESTAMP)"))
            for key, gold, taken in (("old:t0001", False, 2), ("old:t0002", False, 1), ("old:t0003", True, 5)):
                conn.execute(text("INSERT INTO task (campaign_id, task_key, prompt_id, candidate_ids, is_gold, position, slots_taken) "
                                  "VALUES (1, :key, 'p', '[\"a\", \"b\"]', :gold, 0, :taken)"), {"key": key, "gold": gold, "taken": taken})  # fmt: skip
        migrate(engine)
        with engine.connect() as conn:
            rows = dict(conn.execute(text("SELECT task_key, has_room FROM task")).all())
        assert {key: bool(value) for key, value in rows.items()} == {"old:t0001": False, "old:t0002": True, "old:t0003": True}
    finally:
        engine.dispose()
        generator.close()
