"""kill -9 in the middle of the candidates stage, then a rerun: the finished shards are kept, the
one in flight is rebuilt, the GPU slot the killed process held is given back (the rerun waits on
the limit, never fails), and every output is byte-identical to an uninterrupted round's. Killed:
a CLI round (rerun from the CLI), and a worker with the deployment run it was running (retried)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId, LogFilter, LogFilterLevel
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import AwaitingRetry

from flows.deployments import register
from flows.processes import process_alive
from flows.stages import run_stage_locally
from pipeline.config import RoundConfig
from pipeline.manifest import open_round
from pipeline.store import RoundStore

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
RAW = {
    "seed": 8,
    "lyrics": {"count": 2, "shard_size": 1, "generator": {"backend": "template", "min_sentences": 1, "max_sentences": 1, "max_sections": 3}},
    "sampling": {"num_candidates": 2},
    "model": {"options": {"max_frames": 64}},  # short songs: about a second a shard, so the kill lands mid-stage quickly
    "orchestration": {"gpu": {"name": "kill-test-gpu", "slots": 1, "stages": ["candidates"], "only_with_gpu": False},
                      "stages": {"candidates": {"parallelism": 1, "retries": 0}}},
}  # fmt: skip


def outputs(root: Path) -> dict[str, bytes]:
    """Every shard and every audio and token file of the first three stages."""
    return {str(p.relative_to(root)): p.read_bytes() for stage in ("lyrics", "conditions", "candidates")
            for p in sorted((root / stage).rglob("*")) if p.is_file() and p.suffix in (".parquet", ".flac", ".json")}  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, bytes]:
    """The outputs of an uninterrupted round, built in this process."""
    root = tmp_path_factory.mktemp("reference")
    config, store = RoundConfig.model_validate(RAW), RoundStore(str(root))
    open_round(store, config)
    for name in ("lyrics", "conditions", "candidates"):
        assert run_stage_locally(name, config, store)["status"] == "done"
    found = outputs(root)
    assert len(found) > 2 * 2 * 3
    return found


def test_kill_9_mid_candidates_then_rerun_gives_the_uninterrupted_bytes(tmp_path, prefect_api_url, reference):
    config_file, killed = tmp_path / "round.yaml", tmp_path / "killed"
    config_file.write_text(yaml.safe_dump(RAW), encoding="utf-8")
    command = [sys.executable, "-m", "songpref", "round", "run", "--config", str(config_file), "--out", str(killed), "--until", "candidates"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_API_URL": prefect_api_url}
    run = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    holders = Path(os.environ["PREFECT_HOME"], "songpref-slots", "kill-test-gpu")
    # the first shard is written and the second holds the GPU slot: it is in flight
    while not (list((killed / "candidates").glob("shard-*.parquet")) and list(holders.glob("*.json"))):
        assert run.poll() is None and time.monotonic() < deadline, "the round ended before the kill"
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    killed_run = json.loads((killed / "manifest.json").read_text())["flow_run"]["id"]
    finished = len(list((killed / "candidates").glob("shard-*.parquet")))
    assert finished < 2
    assert len(list(holders.glob("*.json"))) == 1  # the killed process still holds the one slot

    started = time.monotonic()
    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    record = json.loads((killed / "manifest.json").read_text())["stages"]["candidates"]
    recomputed = record["metrics"]["shards_built"]
    print(f"kill -9 after {finished} of 2 candidates shards; the rerun recomputed {recomputed} in {time.monotonic() - started:.1f} s")
    assert (recomputed, record["metrics"]["shards_skipped"]) == (2 - finished, finished)
    assert outputs(killed) == reference
    assert not list(holders.glob("*.json"))

    # the server: the killed run is marked Crashed; the rerun's shard logged its items as it went
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(killed_run).state.name == "Crashed"
        logs = [log.message for log in client.read_logs(LogFilter(level=LogFilterLevel(ge_=20)), limit=200)]
    assert "candidates shard 1: 0 of 2 items done" in logs and "candidates shard 1: 2 of 2 items done" in logs
    status = subprocess.run([sys.executable, "-m", "songpref", "round", "status", str(killed)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert "server" in status.stdout and ": Completed on " + prefect_api_url in " ".join(status.stdout.split())
    assert any("candidates" in line and "Completed" in line for line in status.stdout.splitlines())


def _state(api_url: str, run_id) -> str:
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state.name


def _worker(server, pool: str, log: Path) -> subprocess.Popen:
    with log.open("a") as out:  # the worker's log and its flow runs' output
        return subprocess.Popen([sys.executable, "-m", "songpref", "worker", "start", "--pool", pool], cwd=REPO,
                                env=server.env(PREFECT_WORKER_QUERY_SECONDS="1"), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def _wait(condition, what: str, worker: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert worker.poll() is None, f"the worker exited while waiting for {what}: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} after {seconds} s: {log.read_text()[-3000:]}"
        time.sleep(0.1)


def test_kill_9_of_the_worker_mid_candidates_then_retry_resumes_its_round(tmp_path, postgres_prefect_server, reference):
    """A deployment run through a process worker; the worker's process group (the worker and the flow
    run's process) killed with SIGKILL once one candidates shard is written. The next worker start
    marks the run Crashed; Prefect's Retry (what the UI's button sends) resumes its round folder."""
    server, rounds = postgres_prefect_server, tmp_path / "rounds"
    config = RoundConfig.model_validate({**RAW, "rounds": {"directory": str(rounds)},
                                         "orchestration": {**RAW["orchestration"], "gpu": {**RAW["orchestration"]["gpu"], "name": "kill-worker-gpu"}}})  # fmt: skip
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        register(config.resolved(), "kill-pool", until="candidates", name="killed")
        run_id = run_deployment("scheduled-round/killed", timeout=0).id
    folder = rounds / "killed-0001"
    holders = Path(os.environ["PREFECT_HOME"], "songpref-slots", "kill-worker-gpu")
    log = tmp_path / "worker.log"
    worker = _worker(server, "kill-pool", log)
    try:  # the first shard is written and the second holds the GPU slot: it is in flight
        _wait(lambda: list(folder.glob("candidates/shard-*.parquet")) and list(holders.glob("*.json")), "candidates shard", worker, log)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        # Prefect's process worker starts each flow run's process in a session of its own: kill that group too
        with temporary_settings({PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
            flow_process = int(client.read_flow_run(run_id).infrastructure_pid)
        os.killpg(flow_process, signal.SIGKILL)
    finished = len(list(folder.glob("candidates/shard-*.parquet")))
    killed = json.loads((folder / "manifest.json").read_text())
    process, killed_round = killed["scheduled"], killed["flow_run"]["id"]  # the scheduled run, its alignment-round subflow
    assert finished < 2 and process["pid"] == flow_process
    deadline = time.monotonic() + 10
    while process_alive(process["pid"], process["process_started"]):  # SIGKILL is delivered at once, not synchronously
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert _state(server.api_url, run_id) == "Running"  # nobody told the server

    worker = _worker(server, "kill-pool", log)
    try:
        _wait(lambda: _state(server.api_url, run_id) == "Crashed", "Crashed state", worker, log, 60)
        with temporary_settings({PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
            stages = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[killed_round])))
            crashed = {r.name: r.state.name for r in stages} | {"round": client.read_flow_run(killed_round).state.name}
            assert client.set_flow_run_state(run_id, AwaitingRetry(message="Retry from the test")).status.value == "ACCEPT"
        _wait(lambda: _state(server.api_url, run_id) in ("Completed", "Failed", "Crashed"), "the retried run's end", worker, log)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    assert _state(server.api_url, run_id) == "Completed"
    assert crashed == {"lyrics": "Completed", "conditions": "Completed", "candidates": "Crashed", "round": "Crashed"}
    manifest = json.loads((folder / "manifest.json").read_text())
    record = manifest["stages"]["candidates"]
    recomputed = record["metrics"]["shards_built"]
    print(f"worker killed after {finished} of 2 candidates shards; the retry recomputed {recomputed}")
    assert (recomputed, record["metrics"]["shards_skipped"]) == (2 - finished, finished)
    assert manifest["scheduled"]["finished"] and manifest["scheduled"]["flow_run_id"] == str(run_id) and sorted(rounds.iterdir()) == [folder]
    assert outputs(folder) == reference
    assert not list(holders.glob("*.json"))
