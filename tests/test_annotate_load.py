"""Load: 50 annotators at once against a real server (uvicorn subprocess) submit 2,100
rankings; every acknowledged submission is in the database exactly once, and no task gets more
annotators than its overlap. SQLite (WAL, serialised writes) and PostgreSQL.

The annotators are threads speaking HTTP/1.1 over keep-alive connections with the standard
library's http.client: it costs a fraction of the CPU of a full-featured client, so on a small
machine the time measured is the server's."""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import create_engine, text

from annotate_helpers import ServerProcess, admin_headers, build_round, database_url

ANNOTATORS, PROMPTS, PER_PROMPT, K, OVERLAP = 50, 100, 14, 2, 3  # 700 tasks x 3 = 2,100 judgements


def annotate(base_url: str, token: str, acknowledged: list, failures: list) -> None:
    """One annotator: rank the task in hand until nothing is left; each answer carries the next task."""
    address = urlsplit(base_url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(method: str, path: str, body: dict | None = None) -> tuple[int, dict | str]:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if response.status < 300 else data[:200].decode(errors="replace")

    try:
        status, answer = call("GET", "/api/next")
        task = answer["task"] if status == 200 else failures.append(("next", status, answer))
        while task is not None:
            ids = [c["candidate_id"] for c in task["candidates"]]
            status, answer = call("POST", "/api/submit?next=true", {"task_id": task["task_id"], "candidate_ids": ids, "ranks": [1, 2]})
            if status != 201:
                return failures.append(("submit", status, answer))
            acknowledged.append((token, task["task_id"]))  # list.append is atomic under the GIL
            task = answer["next"]["task"]
    except (OSError, http.client.HTTPException) as exc:
        failures.append(("connection", type(exc).__name__, str(exc)))
    finally:
        conn.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_fifty_annotators_lose_and_duplicate_nothing(backend, tmp_path):
    root = build_round(tmp_path / "round", prompts=PROMPTS, per_prompt=PER_PROMPT, audio=False)
    generator = database_url(backend, tmp_path)
    db_url = next(generator)
    server = ServerProcess(root, db_url, tmp_path / "server.log")
    try:
        admin = httpx.Client(base_url=server.url, timeout=60, headers=admin_headers())
        assert admin.post("/admin/campaigns", json={"name": "load", "k": K, "overlap": OVERLAP}).status_code == 201
        made = admin.post("/admin/campaigns/load/annotators", json={"names": [f"a{i:02d}" for i in range(ANNOTATORS)]}).json()
        acknowledged, failures = [], []
        threads = [threading.Thread(target=annotate, args=(server.url, a["token"], acknowledged, failures)) for a in made["annotators"]]
        started, client_cpu, server_cpu = time.monotonic(), time.process_time(), server.cpu_seconds()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.monotonic() - started
        print(f"{backend}: {len(acknowledged)} rankings from {ANNOTATORS} annotators in {seconds:.1f} s "
              f"(CPU: server {server.cpu_seconds() - server_cpu:.1f} s, clients {time.process_time() - client_cpu:.1f} s)")  # fmt: skip
        assert not failures, failures[:5]
        assert len(acknowledged) == PROMPTS * (PER_PROMPT // K) * OVERLAP >= 2000
        engine = create_engine(db_url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT COUNT(*) FROM submission")).scalar()
            distinct = conn.execute(text("SELECT COUNT(*) FROM (SELECT DISTINCT annotator_id, task_id FROM submission) AS d")).scalar()
            busiest = conn.execute(text("SELECT MAX(n) FROM (SELECT task_id, COUNT(*) AS n FROM submission GROUP BY task_id) AS t")).scalar()
        engine.dispose()
        assert rows == distinct == len(acknowledged) == len(set(acknowledged))
        assert busiest == OVERLAP
        progress = admin.get("/admin/campaigns/load/progress").json()
        assert progress["submissions"] == progress["judgements_wanted"] == len(acknowledged)
        admin.close()
    finally:
        server.stop()
        generator.close()
