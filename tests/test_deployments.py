"""`songpref deploy` / `worker start` / `rounds history` against a real Prefect server on PostgreSQL:
a cron deployment is registered, then scheduled runs (every 3 s) go through a real process worker,
each into a new round folder, the second chained to the first."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.deployments import register
from prefect_server import REPO, songpref

pytestmark = pytest.mark.slow


def _deployment(api_url, name):
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"scheduled-round/{name}")
        pool = client.read_work_pool(deployment.work_pool_name)
    return deployment, pool


def _finished(rounds):
    found = []
    for path in sorted(rounds.glob("chained-*")):
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        if manifest.get("scheduled", {}).get("finished"):
            found.append((path, manifest))
    return found


def test_scheduled_rounds_run_through_a_worker_into_new_chained_folders(postgres_prefect_server, tmp_path):
    server, rounds = postgres_prefect_server, tmp_path / "rounds"
    config = tmp_path / "c.yaml"
    config.write_text(f"seed: 2\nlyrics: {{count: 8}}\nrounds: {{directory: {rounds}, chain: true}}\n", encoding="utf-8")
    deploy = ["deploy", "--config", str(config), "--pool", "test-pool", "--until", "lyrics", "--name", "chained"]
    made = songpref(*deploy, "--cron", "0 3 * * *", env=server.env())
    assert made.returncode == 0, made.stderr
    deployment, pool = _deployment(server.api_url, "chained")
    assert pool.type == "process" and [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]
    assert deployment.parameters["config"]["rounds"]["chain"] is True and deployment.parameters["until"] == "lyrics"

    with temporary_settings({PREFECT_API_URL: server.api_url}):  # the same registration, in process: due now, and every 3 s
        register(deployment.parameters["config"], "test-pool", interval=3, until="lyrics", name="chained")
    worker = subprocess.Popen([sys.executable, "-m", "songpref", "worker", "start", "--pool", "test-pool"], cwd=REPO,
                              env=server.env(PREFECT_WORKER_QUERY_SECONDS="1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 150
        while len(_finished(rounds)) < 2 and time.monotonic() < deadline:
            assert worker.poll() is None, "the worker exited"
            time.sleep(1)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and the run it may be in
        worker.wait()
    (first, one), (second, two) = _finished(rounds)[:2]
    assert (first.name, second.name) == ("chained-0001", "chained-0002")
    assert one["config"]["parent"] is None and two["config"]["parent"] == str(first)
    assert (one["scheduled"]["iteration"], two["scheduled"]["iteration"]) == (1, 2) and two["scheduled"]["parent"] == str(first)
    shards = lambda path: {p.name: p.read_bytes() for p in (path / "lyrics").glob("*.parquet")}  # noqa: E731
    assert shards(first) == shards(second) and shards(first)

    shown = songpref("rounds", "history", str(first), str(second), "--plot", str(tmp_path / "h.png"))
    assert shown.returncode == 0, shown.stderr
    assert f"2: {second} (parent {first})" in shown.stderr and "lyrics.valid" in shown.stderr
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    missing = songpref("rounds", "history", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "not a round (no manifest.json)" in missing.stderr
