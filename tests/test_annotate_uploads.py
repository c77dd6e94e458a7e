"""Ranking files: the pure parser on every accepted shape and every kind of bad input, and the
upload routes on SQLite and PostgreSQL (whole file or nothing, re-upload is a no-op)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from annotate_helpers import ADMIN_TOKEN, admin_headers, build_round, database_url
from reward_model.service.app import create_app
from reward_model.service.settings import ServiceSettings
from reward_model.service.uploads import CampaignView, TaskView, UploadRejected, parse_rankings

VIEW = CampaignView(
    name="c",
    tasks={"c:t0001": TaskView("prompt0", frozenset({"a", "b", "c"})), "c:t0002": TaskView("prompt1", frozenset({"x", "y"}))},
    prompt_candidates={"prompt0": frozenset({"a", "b", "c", "d"}), "prompt1": frozenset({"x", "y"})},
    annotators=frozenset({"ann", "bob"}),
)
HEADER = "annotator_id,task_id,candidate_ids,ranks,tied,started_at,submitted_at,duration_s\n"


def rejected(data: bytes | str, fmt: str = "csv", view: CampaignView = VIEW) -> UploadRejected:
    with pytest.raises(UploadRejected) as caught:
        parse_rankings(data.encode() if isinstance(data, str) else data, fmt, view)
    return caught.value


def reasons(error: UploadRejected) -> dict[int, str]:
    out: dict[int, str] = {}
    for problem in error.problems:
        out[problem["row"]] = (out.get(problem["row"], "") + " | " + problem["reason"]).strip(" |")
    return out


def test_csv_rankings_pairs_and_ties_parse():
    text = HEADER + (
        "ann,c:t0001,c;a;b,2;1;3,false,2026-01-01T10:00:00Z,2026-01-01T10:00:30Z,\n"
        "bob,c:t0001,a;b;c,1;1;2,true,,,12.5\n"
    )
    parsed = parse_rankings(text.encode(), "csv", VIEW)
    first, second = parsed.rows
    assert first.candidate_ids == ["a", "c", "b"] and first.ranks == [1, 2, 3] and first.duration_s == 30.0
    assert second.tied and second.ranks == [1, 1, 2] and second.duration_s == 12.5 and len(parsed.sha256) == 64
    pairs = "annotator_id,prompt_id,chosen_id,rejected_id,tied\nann,prompt0,d,a,false\nbob,prompt0,a,d,true\n"
    pa, pb = parse_rankings(pairs.encode(), "csv", VIEW).rows
    assert (pa.candidate_ids, pa.ranks, pa.tied) == (["d", "a"], [1, 2], False) and pb.ranks == [1, 1] and pb.tied


def test_json_rows_parse():
    rows = [{"annotator_id": "ann", "task_id": "c:t0002", "candidate_ids": ["y", "x"], "ranks": [1, 2]},
            {"annotator_id": "bob", "prompt_id": "prompt0", "chosen_id": "b", "rejected_id": "d"}]  # fmt: skip
    parsed = parse_rankings(json.dumps({"rankings": rows}).encode(), "json", VIEW)
    assert [r.candidate_ids for r in parsed.rows] == [["y", "x"], ["b", "d"]]
    bad = rejected(json.dumps([rows[0], "text", {**rows[1], "colour": "red"}]), "json")
    assert sorted(reasons(bad)) == [2, 3] and "unknown fields ['colour']" in reasons(bad)[3]


def test_label_studio_pairwise_and_ranker_exports_parse():
    export = [
        {"id": 1, "data": {"task_id": "c:t0002", "left_id": "x", "right_id": "y"},
         "annotations": [{"completed_by": {"id": 3, "email": "ann"}, "lead_time": 8.5, "updated_at": "2026-01-01T10:00:00Z",
                          "result": [{"type": "pairwise", "from_name": "pw", "to_name": ["left", "right"], "value": {"selected": "right"}}]},
                         {"completed_by": 4, "was_cancelled": True, "result": []}]},
        {"id": 2, "data": {"task_id": "c:t0001", "items": [{"id": "a"}, {"id": "b"}, {"id": "c"}]},
         "annotations": [{"completed_by": {"email": "bob"}, "result": [{"type": "ranker", "value": {"ranker": {"rank": ["b", "c", "a"]}}}]}]},
    ]  # fmt: skip
    parsed = parse_rankings(json.dumps(export).encode(), "label-studio", VIEW)
    assert [(r.annotator_id, r.candidate_ids, r.ranks) for r in parsed.rows] == [("ann", ["y", "x"], [1, 2]), ("bob", ["b", "c", "a"], [1, 2, 3])]
    assert parsed.rows[0].duration_s == 8.5 and parsed.skipped == 1
    export[1]["annotations"][0]["result"][0]["value"]["ranker"] = {"rank": ["b"], "_": ["c", "a"]}
    assert "unranked" in reasons(rejected(json.dumps(export), "label-studio"))[3]


def test_argilla_v1_and_v2_ranking_exports_parse():
    v1 = [{"fields": {"prompt": "..."}, "metadata": {"task_id": "c:t0001"},
           "responses": [{"user_id": "ann", "status": "submitted",
                          "values": {"ranking": {"value": [{"value": "a", "rank": 2}, {"value": "b", "rank": 1}, {"value": "c", "rank": 2}]}}},
                         {"user_id": "bob", "status": "draft", "values": {"ranking": {"value": []}}}]}]  # fmt: skip
    parsed = parse_rankings(json.dumps(v1).encode(), "argilla", VIEW)
    assert [(r.candidate_ids, r.ranks, r.tied) for r in parsed.rows] == [(["b", "a", "c"], [1, 2, 2], True)] and parsed.skipped == 1
    v2 = {"records": [{"external_id": "c:t0002", "responses": {"ranking": [{"user_id": "bob", "status": "submitted", "value": ["y", "x"]}]}}]}
    assert parse_rankings(json.dumps(v2).encode(), "argilla", VIEW).rows[0].candidate_ids == ["y", "x"]
    v2["records"][0]["responses"]["ranking"][0]["value"] = [{"value": "y", "rank": 1}, {"value": "x", "rank": 3}]
    assert "from 1 to 2" in reasons(rejected(json.dumps(v2), "argilla"))[1]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (HEADER + 'ann,c:t0001,"a;b;c,1;2;3\n', "malformed or truncated"),  # cut inside a quoted cell
        ("annotator_id,task_id,candidate_ids,ranks,colour\nann,c:t0001,a;b;c,1;2;3,red\n", "unknown or repeated columns"),
        (b"annotator_id,task_id,candidate_ids,ranks\nann,c:t0001,a;b;\xff,1;2;3\n", "not UTF-8"),
        (b"", "empty"),
        ("[{]", "JSON is malformed"),
    ],
)
def test_unreadable_files_are_refused_whole(data, expected):
    fmt = "json" if str(data).startswith("[") else "csv"
    assert expected in rejected(data, fmt).message


def test_every_bad_row_is_reported_with_its_reason():
    text = HEADER + "\n".join([
        "ann,c:t0001,a;b;c,1;2;3,,,,",  # 1: fine
        "ann,c:t0001,a;b",  # 2: truncated row
        "ann,c:t9999,a;b;c,1;2;3,,,,",  # 3: unknown task
        "ann,c:t0002,x;zz,1;2,,,,",  # 4: unknown candidate
        "bob,c:t0001,a;b;c,1;3;4,,,,",  # 5: rank gap
        "bob,c:t0002,x;y,1;1,false,,,",  # 6: equal ranks without the tie flag
        "eve,c:t0002,x;y,1;2,,,,",  # 7: unknown annotator
        "ann,c:t0001,a;b;c,1;2;3,,,,",  # 8: repeats row 1
        "bob,c:t0002,x;y,1;2,,2026-01-02,2026-01-01,",  # 9: submitted before started
        "bob,c:t0002,x;y,one;2,,,,",  # 10: ranks not integers
        ",c:t0002,x;y,1;2,,,,",  # 11: no annotator
    ]) + "\n"  # fmt: skip
    error = rejected(text)
    found = reasons(error)
    assert sorted(found) == list(range(2, 12)) and error.status == 422
    for row, words in {2: "fields", 3: "unknown task_id", 4: "unknown candidate", 5: "from 1 to 3", 6: "tie flag", 7: "unknown annotator_id",
                       8: "repeats the judgement of row 1", 9: "before started_at", 10: "integers", 11: "annotator_id is missing"}.items():  # fmt: skip
        assert words in found[row], (row, found[row])


def test_missing_columns_rows_of_others_and_stored_judgements():
    assert "either candidate_ids with ranks" in reasons(rejected("annotator_id,task_id\nann,c:t0001\n"))[1]
    assert "task_id or prompt_id" in reasons(rejected("annotator_id,candidate_ids,ranks\nann,a;b,1;2\n"))[1]
    as_ann = CampaignView(**{**VIEW.__dict__, "uploader": "ann", "assigned": frozenset({"c:t0002"})})
    foreign = rejected(HEADER + "bob,c:t0002,x;y,1;2,,,,\nann,c:t0002,x;y,1;2,,,,\n", view=as_ann)
    assert foreign.status == 403 and list(reasons(foreign)) == [1] and "belongs to annotator 'bob'" in reasons(foreign)[1]
    first = parse_rankings((HEADER + "ann,c:t0002,x;y,1;2,,,,\n").encode(), "csv", VIEW).rows[0]
    stored = CampaignView(**{**VIEW.__dict__, "existing_keys": frozenset({first.dedupe_key})})
    assert "already stored" in reasons(rejected(HEADER + "ann,c:t0002,y;x,2;1,,,,\n", view=stored))[1]
    assert "unknown format" in rejected("x", "xlsx").message


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    root = build_round(tmp_path_factory.mktemp("round"), prompts=2, per_prompt=3, audio=False)
    generator = database_url(request.param, root)
    app = create_app(ServiceSettings(root, db_url=next(generator), admin_token=ADMIN_TOKEN, max_upload_bytes=4096))
    with TestClient(app) as client:
        assert client.post("/admin/campaigns", json={"name": "up", "k": 3, "overlap": 2}, headers=admin_headers()).status_code == 201
        people = client.post("/admin/campaigns/up/annotators", json={"names": ["ann", "bob"]}, headers=admin_headers()).json()
        yield client, {a["annotator_id"]: a["token"] for a in people["annotators"]}
    app.state.db.dispose()
    generator.close()


def upload(client, data: bytes, fmt: str = "csv", token: str | None = None, path: str = "/admin/campaigns/up/uploads"):
    headers = admin_headers() if token is None else {"Authorization": f"Bearer {token}"}
    return client.post(path if token is None else "/api/uploads", files={"file": ("r." + fmt, data)}, data={"format": fmt}, headers=headers)


def stored(client) -> int:
    return client.get("/admin/campaigns/up/progress", headers=admin_headers()).json()["submissions"]


def test_upload_is_stored_once_and_reupload_changes_nothing(server):
    client, _ = server
    good = (HEADER + "ann,up:t0001,p0c0;p0c1;p0c2,1;2;3,,,,\nbob,up:t0001,p0c0;p0c1;p0c2,1;1;2,true,,,4\n").encode()
    first = upload(client, good)
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "imported" and first.json()["rows"] == 2 and stored(client) == 2
    again = upload(client, good)
    assert again.status_code == 200 and again.json()["status"] == "already imported" and stored(client) == 2


def test_a_bad_file_stores_nothing(server):
    client, tokens = server
    before = stored(client)
    mixed = (HEADER + "ann,up:t0002,p1c0;p1c1;p1c2,1;2;3,,,,\nann,up:t0002,p1c0;p1c1;p1c2,1;3;4,,,,\n").encode()
    answer = upload(client, mixed)
    assert answer.status_code == 422 and answer.json()["detail"]["problems"][0]["row"] == 2 and stored(client) == before
    assert upload(client, b"\xff\xfe", "csv").status_code == 422
    assert upload(client, b"annotator_id\n" + b"x" * 5000, "csv").status_code == 413  # over the 4 KB limit
    assert upload(client, b"[]", "json").status_code == 422 and stored(client) == before


def test_annotators_upload_only_their_own_rows(server):
    client, tokens = server
    before = stored(client)
    held = client.get("/api/next", headers={"Authorization": f"Bearer {tokens['bob']}"}).json()["task"]
    ids = ";".join(c["candidate_id"] for c in held["candidates"])
    bobs = (HEADER + f"bob,{held['task_id']},{ids},2;1;3,,,,\n").encode()
    assert upload(client, bobs, token=tokens["ann"]).status_code == 403 and stored(client) == before
    own = upload(client, bobs, token=tokens["bob"])
    assert own.status_code == 201 and stored(client) == before + 1
    theirs = client.get("/api/submissions", headers={"Authorization": f"Bearer {tokens['bob']}"}).json()
    assert any(s["source"] == "upload" for s in theirs)


def test_uploads_to_an_expired_campaign_are_refused(server):
    client, _ = server
    assert client.post("/admin/campaigns", json={"name": "gone", "k": 3, "expires_at": "2020-01-01T00:00:00Z"}, headers=admin_headers()).status_code == 201
    client.post("/admin/campaigns/gone/annotators", json={"names": ["ann"]}, headers=admin_headers())
    late = upload(client, (HEADER + "ann,gone:t0001,p0c0;p0c1;p0c2,1;2;3,,,,\n").encode(), path="/admin/campaigns/gone/uploads")
    assert late.status_code == 410 and "expired" in late.json()["detail"]["message"]
    assert upload(client, b"x", path="/admin/campaigns/none/uploads").status_code == 404
