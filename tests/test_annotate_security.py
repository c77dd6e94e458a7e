"""Against a real server (uvicorn subprocess, SQLite): audio Range requests, no way out of the
round's candidate audio, and no token in the server's logs after a whole session."""

from __future__ import annotations

import os
import socket

import httpx
import pytest
from sqlalchemy import create_engine, text

from annotate_helpers import ADMIN_TOKEN, ServerProcess, admin_headers, build_round

PROBES = [
    "/audio/../../manifest.json/mix",
    "/audio/..%2F..%2Fmanifest.json/mix",
    "/audio/%2e%2e%2f%2e%2e%2fmanifest.json/mix",
    "/audio/%252e%252e%252fmanifest.json/mix",
    "/audio/%2Fetc%2Fpasswd/mix",
    "/audio//etc/passwd/mix",
    "/audio/p0c0/..%2F..%2F..%2Fmanifest.json",
    "/audio/p0c0/../../../manifest.json",
    "/audio/p0c0/mix/../../../../manifest.json",
    "/static/../manifest.json",
    "/static/..%2F..%2F..%2F..%2Fmanifest.json",
    "/static/%2Fetc%2Fpasswd",
]


def raw_get(port: int, path: str, cookie: str) -> tuple[int, bytes]:
    """A GET with the path exactly as written (HTTP clients would normalise the dots)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nCookie: songpref_session={cookie}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = build_round(tmp_path_factory.mktemp("round"), prompts=2, per_prompt=3, seconds=2.0)
    (root / "secret.txt").write_text("root:x:0:0 do not serve")
    os.symlink(root / "secret.txt", root / "candidates" / "audio" / "p1c2" / "link.flac")
    db_url = f"sqlite:///{root / 'rankings.db'}"
    server = ServerProcess(root, db_url, root.parent / "server.log")
    client = httpx.Client(base_url=server.url, timeout=20)
    assert client.post("/admin/campaigns", json={"name": "sec", "k": 3}, headers=admin_headers()).status_code == 201
    made = client.post("/admin/campaigns/sec/annotators", json={"names": ["ann", "bob"]}, headers=admin_headers()).json()
    tokens = {a["annotator_id"]: a["token"] for a in made["annotators"]}
    yield server, client, tokens, root, db_url
    client.close()
    server.stop()


def test_audio_supports_range_requests(live):
    server, client, tokens, root, _ = live
    size = (root / "candidates/audio/p0c0/mix.flac").stat().st_size
    auth = {"Authorization": f"Bearer {tokens['ann']}"}
    whole = client.get("/audio/p0c0/mix", headers=auth)
    assert whole.status_code == 200 and len(whole.content) == size and whole.headers["accept-ranges"] == "bytes"
    part = client.get("/audio/p0c0/mix", headers={**auth, "Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == whole.content[:100] and part.headers["content-range"] == f"bytes 0-99/{size}"
    tail = client.get("/audio/p0c0/mix", headers={**auth, "Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == whole.content[-50:]
    assert client.get("/audio/p0c0/mix", headers={**auth, "Range": f"bytes={size + 10}-"}).status_code == 416
    assert client.get("/audio/p0c0/vocals", headers=auth).status_code == 200
    assert client.get("/audio/p0c0/mix").status_code == 401  # nobody signed in
    assert client.get("/audio/broken/mix", headers=auth).status_code == 404  # failed render: not a candidate
    assert client.get("/audio/p0c0/accompaniment", headers=auth).status_code == 404


@pytest.mark.parametrize("path", PROBES)
def test_audio_and_static_routes_cannot_leave_the_round_audio(live, path):
    server, _, tokens, _, _ = live
    status, body = raw_get(server.port, path, tokens["ann"])
    assert status in (400, 404, 405, 422), (path, status)  # 422: the id has characters no id may have
    assert b"stages" not in body and b"root:" not in body


def test_tampered_audio_uris_are_refused(live):
    server, client, tokens, root, db_url = live
    engine = create_engine(db_url)
    auth = {"Authorization": f"Bearer {tokens['bob']}"}
    for candidate, uri in (("p1c0", "../../secret.txt"), ("p1c1", str(root / "secret.txt")), ("p1c2", "candidates/audio/p1c2/link.flac")):
        with engine.begin() as conn:
            conn.execute(text("UPDATE candidate SET mix_uri = :uri WHERE candidate_id = :c"), {"uri": uri, "c": candidate})
        answer = client.get(f"/audio/{candidate}/mix", headers=auth)
        assert answer.status_code == 404 and b"root:" not in answer.content, uri
    engine.dispose()


def test_no_token_reaches_the_logs(live):
    server, client, tokens, _, _ = live
    browser = httpx.Client(base_url=server.url, timeout=20, follow_redirects=True)
    signed = browser.post("/signin", data={"token": tokens["ann"]})
    assert signed.status_code == 200 and "Which song is best?" in signed.text
    task = browser.get("/api/next").json()["task"]
    ids = [c["candidate_id"] for c in task["candidates"]]
    assert browser.post("/api/submit", json={"task_id": task["task_id"], "candidate_ids": ids, "ranks": [1, 2, 3]}).status_code == 201
    assert browser.get("/audio/p0c0/mix", headers={"Range": "bytes=0-9"}).status_code == 206
    wrong = "not-a-real-token-" + tokens["bob"][::-1]
    assert client.get("/api/next", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    assert client.post("/signin", data={"token": wrong}).status_code == 401
    assert client.get("/admin/campaigns", headers={"Authorization": f"Bearer {wrong}"}).status_code == 403
    bobs = client.get("/api/next", headers={"Authorization": f"Bearer {tokens['bob']}"}).json()["task"]  # bob may upload only a task he was handed
    bob_ids = ";".join(c["candidate_id"] for c in bobs["candidates"])
    csv = f"annotator_id,task_id,candidate_ids,ranks\nbob,{bobs['task_id']},{bob_ids},1;2;3\n".encode()
    assert client.post("/api/uploads?format=csv", content=csv, headers={"Authorization": f"Bearer {tokens['bob']}"}).status_code == 201
    browser.close()
    log = server.log_text()
    assert "GET /api/next" in log and "signed in" in log  # the log did record the session
    for secret in [ADMIN_TOKEN, wrong, *tokens.values()]:
        for start in range(0, len(secret) - 12, 6):  # no 12-character piece of any token
            assert secret[start : start + 12] not in log
