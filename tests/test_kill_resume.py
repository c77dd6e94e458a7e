"""kill -9 in the middle of the candidates stage, then a rerun: the finished shards are kept, the
one in flight is rebuilt, the GPU slot the killed process held is given back (the rerun waits on
the limit, never fails), and every output is byte-identical to an uninterrupted round's."""

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
from prefect.client.schemas.filters import LogFilter, LogFilterLevel

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
    "orchestration": {"gpu": {"name": "kill-test-gpu", "slots": 1, "stages": ["candidates"], "only_with_gpu": False},
                      "stages": {"candidates": {"parallelism": 1, "retries": 0}}},
}  # fmt: skip


def outputs(root: Path) -> dict[str, bytes]:
    """Every shard and every audio and token file of the first three stages."""
    return {str(p.relative_to(root)): p.read_bytes() for stage in ("lyrics", "conditions", "candidates")
            for p in sorted((root / stage).rglob("*")) if p.is_file() and p.suffix in (".parquet", ".flac", ".json")}  # fmt: skip


def test_kill_9_mid_candidates_then_rerun_gives_the_uninterrupted_bytes(tmp_path, prefect_api_url):
    reference = tmp_path / "reference"
    config = RoundConfig.model_validate(RAW)
    store = RoundStore(str(reference))
    open_round(store, config)
    for name in ("lyrics", "conditions", "candidates"):
        assert run_stage_locally(name, config, store)["status"] == "done"

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
    assert outputs(killed) == outputs(reference) and len(outputs(reference)) > 2 * 2 * 3
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
