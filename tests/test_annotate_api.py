"""The annotation service's API on SQLite and PostgreSQL: campaigns, assignment, submissions,
who may see and change what, limits, exports."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from annotate_helpers import ADMIN_TOKEN, admin_headers, build_round, database_url
from reward_model.service.app import create_app
from reward_model.service.db import HEAD, current_revision
from reward_model.service.export import RANKINGS_SCHEMA, safe_cell, to_csv
from reward_model.service.settings import ServiceSettings


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tmp_path_factory):
    """A round, a database of the given backend, the app, and a campaign with three annotators."""
    root = build_round(tmp_path_factory.mktemp("round"), prompts=3, per_prompt=4)
    generator = database_url(request.param, root)
    url = next(generator)
    app = create_app(ServiceSettings(root, db_url=url, admin_token=ADMIN_TOKEN))
    with TestClient(app) as client:
        made = client.post("/admin/campaigns", json={"name": "c1", "k": 3, "overlap": 2, "seed": 7,
                                                     "gold": [{"prompt_id": "prompt0", "answer": "p0c1"}]}, headers=admin_headers())  # fmt: skip
        assert made.status_code == 201, made.text
        people = client.post("/admin/campaigns/c1/annotators", json={"names": ["ann", "bob", "cat"]}, headers=admin_headers())
        tokens = {a["annotator_id"]: a["token"] for a in people.json()["annotators"]}
        yield client, app, tokens, root
    app.state.db.dispose()
    generator.close()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def rank_next(client, token: str, ranks=None):
    task = client.get("/api/next", headers=bearer(token)).json()["task"]
    ids = [c["candidate_id"] for c in task["candidates"]]
    return task, client.post("/api/submit", json={"task_id": task["task_id"], "candidate_ids": ids,
                                                  "ranks": ranks or list(range(1, len(ids) + 1))}, headers=bearer(token))  # fmt: skip


def test_schema_is_migrated_to_head(service):
    _, app, _, _ = service
    assert current_revision(app.state.db.engine) == HEAD


def test_tasks_come_from_the_round_and_are_seeded(service):
    client, app, _, _ = service
    spec = {"k": 3, "overlap": 1, "seed": 3}
    for name in ("same-a", "same-b"):
        assert client.post("/admin/campaigns", json={"name": name, **spec}, headers=admin_headers()).status_code == 201
    with app.state.db.read() as session:
        from reward_model.service.campaigns import campaign_by_name

        a, b = (campaign_by_name(session, n).tasks for n in ("same-a", "same-b"))
        assert [(t.candidate_ids, t.position) for t in a] == [(t.candidate_ids, t.position) for t in b]
        assert all(len(t.candidate_ids) == 3 and "broken" not in t.candidate_ids for t in a)
        assert {c for t in a for c in t.candidate_ids} == {f"p{p}c{c}" for p in range(3) for c in range(4)}
    again = client.post("/admin/campaigns", json={"name": "same-a", **spec}, headers=admin_headers())
    assert again.status_code == 422 and "already exists" in again.json()["detail"]
    unknown = client.post("/admin/campaigns", json={"name": "x", "prompts": ["nope"]}, headers=admin_headers())
    assert unknown.status_code == 422 and "nope" in unknown.json()["detail"]


def test_admin_routes_need_the_admin_token(service):
    client, _, tokens, _ = service
    for method, path in (("get", "/admin/campaigns"), ("get", "/admin/campaigns/c1/progress"),
                         ("get", "/admin/campaigns/c1/export"), ("post", "/admin/campaigns/c1/annotators")):  # fmt: skip
        assert getattr(client, method)(path).status_code == 401
        assert getattr(client, method)(path, headers=bearer("wrong-token-0123456789")).status_code == 403
        assert getattr(client, method)(path, headers=bearer(tokens["ann"])).status_code == 403
    assert client.get("/admin/campaigns", headers=admin_headers()).status_code == 200


def test_annotator_ranks_tasks_and_sees_progress(service):
    client, _, tokens, _ = service
    assert client.get("/api/next").status_code == 401
    before = client.get("/api/progress", headers=bearer(tokens["ann"])).json()
    task, answer = rank_next(client, tokens["ann"], ranks=[1, 2, 2])
    assert answer.status_code == 422 and "tie flag" in answer.json()["detail"]  # equal ranks need the flag
    answer = client.post("/api/submit", json={"task_id": task["task_id"], "candidate_ids": [c["candidate_id"] for c in task["candidates"]],
                                              "ranks": [2, 1, 1], "tied": True}, headers=bearer(tokens["ann"]))  # fmt: skip
    assert answer.status_code == 201, answer.text
    row = answer.json()
    assert row["ranks"] == [1, 1, 2] and row["tied"] and row["duration_s"] >= 0  # stored best first
    after = client.get("/api/progress", headers=bearer(tokens["ann"])).json()
    assert after["done"] == before["done"] + 1 and after["total"] >= after["done"]
    changed = client.post("/api/submit", json={"task_id": task["task_id"], "candidate_ids": row["candidate_ids"], "ranks": [1, 2, 3]},
                          headers=bearer(tokens["ann"]))  # fmt: skip
    assert changed.status_code == 201 and changed.json()["id"] == row["id"] and not changed.json()["tied"]
    assert client.get("/api/progress", headers=bearer(tokens["ann"])).json()["done"] == after["done"]


def test_annotators_see_and_change_only_their_own_rows(service):
    client, _, tokens, _ = service
    task, answer = rank_next(client, tokens["bob"])
    assert answer.status_code == 201
    theirs = answer.json()["id"]
    assert client.get(f"/api/submissions/{theirs}", headers=bearer(tokens["bob"])).status_code == 200
    assert client.get(f"/api/submissions/{theirs}", headers=bearer(tokens["cat"])).status_code == 404
    assert theirs not in [s["id"] for s in client.get("/api/submissions", headers=bearer(tokens["cat"])).json()]
    ids = [c["candidate_id"] for c in task["candidates"]]
    cat_next = client.get("/api/next", headers=bearer(tokens["cat"])).json()["task"]["task_id"]
    if cat_next != task["task_id"]:  # a task cat does not hold cannot be ranked by cat
        stolen = client.post("/api/submit", json={"task_id": task["task_id"], "candidate_ids": ids, "ranks": [3, 2, 1]},
                             headers=bearer(tokens["cat"]))  # fmt: skip
        assert stolen.status_code == 403
    elsewhere = client.post("/api/submit", json={"task_id": "same-a:t0001", "candidate_ids": ids, "ranks": [1, 2, 3]}, headers=bearer(tokens["cat"]))
    assert elsewhere.status_code == 403  # another campaign's task
    assert client.get(f"/api/submissions/{theirs}", headers=bearer(tokens["bob"])).json()["ranks"] == [1, 2, 3]


def test_bad_submissions_are_refused(service):
    client, _, tokens, _ = service
    task = client.get("/api/next", headers=bearer(tokens["cat"])).json()["task"]
    ids = [c["candidate_id"] for c in task["candidates"]]
    post = lambda body, **kw: client.post("/api/submit", json={"task_id": task["task_id"], **body}, headers=bearer(tokens["cat"]), **kw)  # noqa: E731
    assert post({"candidate_ids": ids, "ranks": [1, 3, 3], "tied": True}).json()["detail"].count("gaps") == 1
    assert "tie flag" in post({"candidate_ids": ids, "ranks": [1, 1, 2]}).json()["detail"]
    assert post({"candidate_ids": ids[:2] + ["p9c9"], "ranks": [1, 2, 3]}).status_code == 422
    assert post({"candidate_ids": ids, "ranks": [1, 2]}).status_code == 422
    text = client.post("/api/submit", content=b'{"task_id": "x"}', headers={**bearer(tokens["cat"]), "content-type": "text/plain"})
    assert text.status_code in (415, 422)
    huge = client.post("/api/submit", content=b"x" * 200_000, headers={**bearer(tokens["cat"]), "content-type": "application/json"})
    assert huge.status_code == 413


def test_overlap_caps_annotators_per_task(service):
    client, app, tokens, _ = service
    for name in ("ann", "bob", "cat"):
        while (task := client.get("/api/next", headers=bearer(tokens[name])).json()["task"]) is not None:
            ids = [c["candidate_id"] for c in task["candidates"]]
            assert client.post("/api/submit", json={"task_id": task["task_id"], "candidate_ids": ids, "ranks": list(range(1, len(ids) + 1))},
                               headers=bearer(tokens[name])).status_code == 201  # fmt: skip
    progress = client.get("/admin/campaigns/c1/progress", headers=admin_headers()).json()
    assert progress["submissions"] == progress["judgements_wanted"]  # every task: 2 annotators; gold: all 3
    client.cookies.set("songpref_session", tokens["ann"])
    page = client.get("/task")
    client.cookies.clear()
    assert page.status_code == 200 and "All done" in page.text


def test_export_matches_the_rankings_schema_and_snapshots(service):
    client, _, _, root = service
    answer = client.get("/admin/campaigns/c1/export?format=parquet&snapshot=true", headers=admin_headers())
    assert answer.status_code == 200
    table = pq.read_table(root / "rankings" / "c1.parquet")
    assert table.schema == RANKINGS_SCHEMA and table.num_rows > 0
    assert table.to_pylist()[0]["ranks"][0] == 1
    assert sum(table.column("is_gold").to_pylist()) == 3 and set(table.column("gold_answer").to_pylist()) >= {"p0c1"}
    csv_text = client.get("/admin/campaigns/c1/export?format=csv", headers=admin_headers()).text
    assert csv_text.splitlines()[0].split(",") == RANKINGS_SCHEMA.names
    assert not list(root.joinpath("rankings").glob(".tmp-*"))


def test_csv_export_defuses_formulas():
    assert [safe_cell(v) for v in ("=1+2", "+x", "-x", "@x", "\tx", "\rx", "ok")] == ["'=1+2", "'+x", "'-x", "'@x", "'\tx", "'\rx", "ok"]
    row = {n: None for n in RANKINGS_SCHEMA.names} | {"annotator_id": "=HYPERLINK(1)", "prompt_id": "@SUM(A1)", "candidate_ids": ["-a"], "ranks": [1]}
    text = to_csv(pa.Table.from_pylist([row], schema=RANKINGS_SCHEMA)).decode()
    assert "'=HYPERLINK(1)" in text and "'@SUM(A1)" in text and "'-a" in text


def test_sign_in_page_sets_an_http_only_cookie(service):
    client, _, tokens, _ = service
    bad = client.post("/signin", data={"token": "not-a-token"}, follow_redirects=False)
    assert bad.status_code == 401
    good = client.post("/signin", data={"token": tokens["bob"]}, follow_redirects=False)
    assert good.status_code == 303 and good.headers["location"] == "/task"
    cookie = good.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    client.cookies.clear()


def test_expired_campaign_refuses_work(service):
    client, _, _, _ = service
    past = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    assert client.post("/admin/campaigns", json={"name": "old", "k": 2, "expires_at": past}, headers=admin_headers()).status_code == 201
    token = client.post("/admin/campaigns/old/annotators", json={"names": ["late"]}, headers=admin_headers()).json()["annotators"][0]["token"]
    assert client.get("/api/next", headers=bearer(token)).status_code == 410
    refused = client.post("/api/submit", json={"task_id": "old:t0001", "candidate_ids": ["p0c0", "p0c1"], "ranks": [1, 2]}, headers=bearer(token))
    assert refused.status_code == 410 and "expired" in refused.json()["detail"]
    client.cookies.set("songpref_session", token)
    assert client.get("/task").status_code == 410
    client.cookies.clear()


def test_every_route_limits_the_request_body(service):
    client, _, tokens, _ = service
    declared = client.post("/admin/campaigns", content=b"{" + b" " * 100_000 + b"}", headers={**admin_headers(), "content-type": "application/json"})
    assert declared.status_code == 413

    def chunks():  # no Content-Length: the body is counted as it arrives
        for _ in range(100):
            yield b" " * 1024

    streamed = client.post("/api/submit", content=chunks(), headers={**bearer(tokens["ann"]), "content-type": "application/json"})
    assert streamed.status_code == 413
    assert client.post("/signin", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 413
    broken = client.post("/api/submit", content=b'{"task_id": ', headers={**bearer(tokens["ann"]), "content-type": "application/json"})
    assert broken.status_code == 422
