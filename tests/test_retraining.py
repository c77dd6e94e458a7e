"""Event-driven retraining, end to end against real servers: rankings uploaded to the annotation
service (a uvicorn process) emit a Prefect event to the Prefect server on PostgreSQL; the
`retrain-on-rankings` deployment's trigger starts a flow run on a real process worker, which
waits while too few rankings are new, then retrains the round's reward model on them."""

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from annotate_helpers import ServerProcess, admin_headers
from prefect_server import REPO, songpref

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the session's small round is built first when no test did
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _upload_csv(rows) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["annotator_id", "prompt_id", "candidate_ids", "ranks", "tied"])
    for r in rows:
        writer.writerow([r["annotator_id"], r["prompt_id"], ";".join(r["candidate_ids"]), ";".join(map(str, r["ranks"])), str(bool(r["tied"])).lower()])
    return out.getvalue().encode()


def _runs(api_url, deployment):
    """The flow runs of one deployment (the session's server also holds other tests' runs)."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(deployment)
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found.id])))


def _wait(predicate, seconds, worker):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker exited"
        found = predicate()
        if found:
            return found
        time.sleep(1)
    raise AssertionError("timed out")


def test_an_accepted_upload_triggers_retraining_once_enough_rankings_are_new(postgres_prefect_server, round_dir, tmp_path, monkeypatch):
    server = postgres_prefect_server
    root = tmp_path / "round"
    shutil.copytree(round_dir[0], root)  # the session's round stays as other tests expect it
    manifest = json.loads((root / "manifest.json").read_text())
    built = manifest["stages"]["reward_model"]
    import pyarrow.parquet as pq

    simulated = pq.read_table(root / "reward_model" / next(iter(built["outputs"]))).to_pylist()
    judged, rows = set(), []  # one judgement per annotator and candidate set: without task ids, repeats would be refused
    for r in simulated:
        key = (r["annotator_id"], r["prompt_id"], tuple(sorted(r["candidate_ids"])))
        if not r["is_gold"] and key not in judged:
            judged.add(key)
            rows.append(r)
    first, second = rows[: len(rows) // 3], rows[len(rows) // 3:]

    deployed = songpref("retrain", "deploy", str(root), "--campaign", "people", "--min-rankings", str(len(rows) - 1),
                        "--pool", "retrain-pool", "--until", "pairs", env=server.env())  # fmt: skip
    assert deployed.returncode == 0, deployed.stderr
    worker = subprocess.Popen([sys.executable, "-m", "songpref", "worker", "start", "--pool", "retrain-pool"], cwd=REPO,
                              env=server.env(PREFECT_WORKER_QUERY_SECONDS="1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # fmt: skip
    monkeypatch.setenv("PREFECT_API_URL", server.api_url)  # inherited by the annotation service
    service = ServerProcess(root, f"sqlite:///{root / 'rankings' / 'annotations.db'}", tmp_path / "service.log")
    monkeypatch.delenv("PREFECT_API_URL")
    try:
        admin = admin_headers()
        assert httpx.post(f"{service.url}/admin/campaigns", json={"name": "people", "k": 3, "overlap": 1}, headers=admin).status_code == 201
        names = sorted({r["annotator_id"] for r in rows})
        assert httpx.post(f"{service.url}/admin/campaigns/people/annotators", json={"names": names}, headers=admin).status_code == 201

        def upload(part):
            answer = httpx.post(f"{service.url}/admin/campaigns/people/uploads?format=csv", content=_upload_csv(part), headers=admin, timeout=30)
            assert answer.status_code == 201, answer.text

        def finished(count):
            runs = lambda: _runs(server.api_url, f"retrain-on-rankings/{root.name}-people")  # noqa: E731
            return lambda: len(ended := [r for r in runs() if r.state_type.value in FINAL]) >= count and ended

        upload(first)  # too few new rankings: the run waits and retrains nothing
        assert {r.state_type.value for r in _wait(finished(1), 120, worker)} == {"COMPLETED"}
        assert json.loads((root / "manifest.json").read_text()).get("retraining") is None
        upload(second)  # now enough: reward_model and pairs retrain on the campaign's rankings
        assert {r.state_type.value for r in _wait(finished(2), 300, worker)} == {"COMPLETED"}
    finally:
        service.stop()
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    after = json.loads((root / "manifest.json").read_text())
    assert after["retraining"]["people"]["rankings"] == len(rows)
    record = after["stages"]["reward_model"]
    assert record["status"] == "done" and record["outputs"] != built["outputs"]  # a new reward model
    assert record["metrics"]["rankings"] == len(rows) and not record["metrics"].get("simulated")
    assert after["config"]["reward_model"]["rankings"] == str(root / "rankings" / "people.parquet")
    assert after["stages"]["pairs"]["status"] == "done"
