"""Benchmark: 200 annotators at once against one annotation server, 20,000 rankings.

For each backend (the local PostgreSQL, and SQLite in WAL mode) a round of 500 prompts x 16
songs gets a campaign of 4,000 tasks (k=2) with overlap 5 (20,000 judgements wanted); one
uvicorn process (`create_app_from_env`, 127.0.0.1 only) serves it, and 200 annotator threads,
each on its own keep-alive connection (http.client, cheap on the client side), take the task in
hand, rank it and get the next one in the same request (`POST /api/submit?next=true`) until
nothing is left. Measured: every request's latency (p50, p99), rankings per second, 5xx
answers, connections the server closed; then the database is checked: every acknowledged ranking
is stored exactly once (0 lost, 0 duplicated) and no task has more annotators than its overlap.
Results: benchmarks/results/annotate_load.json.

    PYTHONPATH=. .venv/bin/python benchmarks/annotate_load.py [--backends postgresql sqlite] [--annotators 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the round builder and server runner the service's tests use
from annotate_helpers import ServerProcess, admin_headers, build_round, database_url  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "annotate_load.json"
PROMPTS, PER_PROMPT, K, OVERLAP = 500, 16, 2, 5  # 500 x 8 tasks x 5 = 20,000 judgements


class Tally:
    """What the annotator threads saw (lists are appended to under the GIL)."""

    def __init__(self):
        self.latencies, self.acknowledged, self.failures, self.statuses, self.closed = [], [], [], {}, 0
        self.lock = threading.Lock()

    def count(self, status: int, closed: bool) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.closed += closed


def annotate(url: str, token: str, tally: Tally, barrier: threading.Barrier) -> None:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(method: str, path: str, body: dict | None = None):
        started = time.perf_counter()
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = conn.getresponse()
        data = response.read()
        tally.latencies.append(time.perf_counter() - started)
        tally.count(response.status, (response.getheader("connection") or "").lower() == "close")
        return response.status, data

    try:
        conn.connect()
        barrier.wait()
        status, data = call("GET", "/api/next")
        task = json.loads(data)["task"] if status == 200 else tally.failures.append(("next", status, data[:200]))
        while task is not None:
            ids = [c["candidate_id"] for c in task["candidates"]]
            status, data = call("POST", "/api/submit?next=true", {"task_id": task["task_id"], "candidate_ids": ids, "ranks": [1, 2]})
            if status != 201:
                return tally.failures.append(("submit", status, data[:200]))
            tally.acknowledged.append((token, task["task_id"]))
            task = json.loads(data)["next"]["task"]
    except (OSError, http.client.HTTPException) as exc:
        tally.failures.append(("connection", type(exc).__name__, str(exc)))
    finally:
        conn.close()


def run_backend(backend: str, annotators: int, folder: Path) -> dict:
    root = build_round(folder / "round", prompts=PROMPTS, per_prompt=PER_PROMPT, audio=False)
    generator = database_url(backend, folder)
    db_url = next(generator)
    server = ServerProcess(root, db_url, folder / "server.log")
    try:
        with httpx.Client(base_url=server.url, timeout=300, headers=admin_headers()) as admin:
            made = admin.post("/admin/campaigns", json={"name": "load", "k": K, "overlap": OVERLAP})
            assert made.status_code == 201, made.text
            people = admin.post("/admin/campaigns/load/annotators", json={"names": [f"a{i:03d}" for i in range(annotators)]}).json()
        tally, barrier = Tally(), threading.Barrier(annotators + 1)
        threads = [threading.Thread(target=annotate, args=(server.url, a["token"], tally, barrier)) for a in people["annotators"]]
        for thread in threads:
            thread.start()
        barrier.wait()
        load_before, started, server_cpu = os.getloadavg(), time.monotonic(), server.cpu_seconds()
        for thread in threads:
            thread.join()
        seconds, server_cpu = time.monotonic() - started, server.cpu_seconds() - server_cpu
        load_after = os.getloadavg()
        engine = create_engine(db_url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT COUNT(*) FROM submission")).scalar()
            distinct = conn.execute(text("SELECT COUNT(*) FROM (SELECT DISTINCT annotator_id, task_id FROM submission) AS d")).scalar()
            busiest = conn.execute(text("SELECT MAX(n) FROM (SELECT task_id, COUNT(*) AS n FROM submission GROUP BY task_id) AS t")).scalar()
            stored = set(conn.execute(text("SELECT a.name, t.task_key FROM submission s JOIN annotator a ON a.id = s.annotator_id "
                                           "JOIN task t ON t.id = s.task_id")).all())  # fmt: skip
        engine.dispose()
    finally:
        server.stop()
        generator.close()
    latencies = np.array(tally.latencies) * 1000
    acknowledged = len(tally.acknowledged)
    names = {a["token"]: a["annotator_id"] for a in people["annotators"]}
    acknowledged_pairs = {(names[token], task) for token, task in tally.acknowledged}
    return {
        "backend": backend, "annotators": annotators, "rankings_acknowledged": acknowledged, "rankings_stored": rows,
        "lost": len(acknowledged_pairs - {tuple(r) for r in stored}), "acknowledged_twice": acknowledged - len(acknowledged_pairs),
        "duplicated": rows - distinct, "max_annotators_per_task": busiest, "overlap": OVERLAP,
        "server_errors": sum(n for status, n in tally.statuses.items() if status >= 500), "statuses": tally.statuses,
        "failures": tally.failures[:5], "connections_closed_by_server": tally.closed,
        "requests": len(latencies), "seconds": round(seconds, 1), "rankings_per_second": round(acknowledged / seconds, 1),
        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1), "latency_ms_p99": round(float(np.percentile(latencies, 99)), 1),
        "server_cpu_seconds": round(server_cpu, 1), "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["postgresql", "sqlite"], choices=["postgresql", "sqlite"])
    parser.add_argument("--annotators", type=int, default=200)
    args = parser.parse_args()
    results = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    for backend in args.backends:
        with tempfile.TemporaryDirectory() as folder:
            results[backend] = run_backend(backend, args.annotators, Path(folder))
        print(json.dumps(results[backend], indent=1), flush=True)
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(json.dumps(results, indent=1) + "\n")
    bad = [b for b in args.backends if results[b]["lost"] or results[b]["duplicated"] or results[b]["server_errors"] or results[b]["failures"]]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
