"""`orchestration.task_runner: ray`: a round through prefect-ray's RayTaskRunner on a real local
Ray head (started here, stopped by its pid) writes the same bytes as the thread runner, with
shards spread over GPUs by `num_gpus` (the head declares two; on a CPU host they are only labels
Ray hands out through CUDA_VISIBLE_DEVICES, as it does on a GPU host)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.round import run_round
from pipeline.config import RoundConfig
from prefect_server import REPO, free_port

pytestmark = pytest.mark.slow
RAY = Path(sys.executable).with_name("ray")


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    port, log = free_port(), tmp_path_factory.mktemp("ray") / "head.log"
    with open(log, "wb") as out:
        head = subprocess.Popen([str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2", "--num-gpus", "2",
                                 "--include-dashboard=false", "--disable-usage-stats", "--block"],
                                env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while b"--block" not in log.read_bytes():  # printed once the head is up
            assert head.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops its processes on SIGTERM
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


def _shards(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("shard-*.parquet"))}


def test_ray_runner_writes_the_thread_runners_bytes(ray_head, tmp_path, prefect_api_url):
    raw = {"seed": 6, "lyrics": {"count": 24, "shard_size": 8}}
    threads = run_round(str(tmp_path / "threads"), RoundConfig.model_validate(raw), ["lyrics", "conditions"])
    on_ray = RoundConfig.model_validate({**raw, "orchestration": {"task_runner": "ray", "ray": {"address": ray_head},
                                                                  "stages": {"conditions": {"num_cpus": 0.5, "num_gpus": 1}}}})  # fmt: skip
    records = run_round(str(tmp_path / "ray"), on_ray, ["lyrics", "conditions"])
    assert records["conditions"]["metrics"]["shards_built"] == threads["conditions"]["metrics"]["shards_built"] == 3
    assert _shards(tmp_path / "ray") == _shards(tmp_path / "threads") and len(_shards(tmp_path / "ray")) == 6
    # each conditions shard was given one GPU of the two; the thread runner's were given none
    assert set(records["conditions"]["metrics"]["gpus"]) <= {"0", "1"} and "gpus" not in threads["conditions"]["metrics"]
