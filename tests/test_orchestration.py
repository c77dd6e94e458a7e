"""The `orchestration` section: shard parallelism and retries per stage, and the GPU limit, which
makes a GPU-bound stage wait (never fail) while another holds every slot. Against a real server."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from prefect.client.orchestration import get_client

from flows.limits import ensure_limit, holding_slot
from flows.round import run_round
from pipeline.config import ConfigError, RoundConfig, config_from_dict


def test_orchestration_keys_are_typed_and_left_out_of_the_config_hash():
    plain = RoundConfig.model_validate({"seed": 1})
    tuned = RoundConfig.model_validate({"seed": 1, "orchestration": {"shards": {"retries": 5}, "stages": {"candidates": {"parallelism": 1}}}})
    assert plain.digest() == tuned.digest()
    candidates, scores = tuned.orchestration.for_stage("candidates"), tuned.orchestration.for_stage("scores/per")
    assert (candidates.parallelism, candidates.retries, scores.parallelism, scores.retries) == (1, 5, 2, 5)
    assert tuned.orchestration.gpu_limit("scores/per") == "songpref-gpu" and tuned.orchestration.gpu_limit("pairs") is None
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"orchestration": {"stages": {"candidate": {}}, "shards": {"paralelism": 2}, "gpu": {"slots": 0}}}, "c.yaml")
    lines = str(caught.value).splitlines()
    assert any(line.startswith("c.yaml: orchestration.stages.candidate: not a valid key: Input should be 'lyrics'") for line in lines)
    assert "c.yaml: orchestration.shards.paralelism: unknown key (did you mean 'parallelism'?)" in lines
    assert "c.yaml: orchestration.gpu.slots: Input should be greater than or equal to 1 (got 0)" in lines


def test_torch_threads_share_the_cores_among_parallel_shards_and_the_gpu_limit_needs_a_gpu(monkeypatch):
    import os

    from flows.limits import sees_gpu, stage_limit

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    config = RoundConfig.model_validate({"orchestration": {"stages": {"dpo": {"torch_threads": 3}}}}).orchestration
    cores = os.cpu_count()
    assert config.for_stage("sweep").threads_for(9) == max(1, cores // 2)  # two shards at once
    assert config.for_stage("ablation").threads_for(1) == cores  # one shard has every core
    assert config.for_stage("dpo/joint").threads_for(1) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert config.for_stage("sweep").threads_for(9) is None  # pinned by the environment: left alone
    assert stage_limit(config, "sweep") == ("songpref-gpu" if sees_gpu() else None)
    assert stage_limit(config.model_copy(update={"gpu": config.gpu.model_copy(update={"only_with_gpu": False})}), "sweep") == "songpref-gpu"
    assert stage_limit(config, "pairs") is None


def _limit(name):
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name)


def test_a_gpu_stage_waits_for_a_busy_limit_and_slots_never_overlap(tmp_path, prefect_api_url):
    ensure_limit("test-gpu", 3)
    config = RoundConfig.model_validate({"seed": 3, "lyrics": {"count": 8, "shard_size": 4}, "orchestration": {
        "gpu": {"name": "test-gpu", "slots": 1, "stages": ["lyrics"], "only_with_gpu": False},
        "stages": {"lyrics": {"parallelism": 2, "retries": 0}}}})  # fmt: skip
    held, intervals = threading.Event(), []

    def occupy(seconds):
        with holding_slot("test-gpu"):
            held.set()
            start = time.monotonic()
            time.sleep(seconds)
            intervals.append((start, time.monotonic()))

    other_round = threading.Thread(target=occupy, args=(3.0,))
    other_round.start()
    assert held.wait(30)
    started = time.monotonic()
    records = run_round(str(tmp_path), config, ["lyrics"])  # sets the limit to the config's one slot, then waits on it
    waited = time.monotonic() - started
    other_round.join()
    assert records["lyrics"]["status"] == "done" and records["lyrics"]["metrics"]["shards_built"] == 2
    assert waited >= intervals[0][1] - started - 0.1  # no shard built before the other holder let go
    limit = _limit("test-gpu")
    assert (limit.limit, limit.active, limit.active_slots) == (1, True, 0)

    # two holders of a one-slot limit never overlap
    intervals.clear()
    threads = [threading.Thread(target=occupy, args=(0.5,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (a_start, a_end), (b_start, b_end) = sorted(intervals)
    assert a_end <= b_start


def test_slots_of_holders_whose_process_ended_are_given_back_when_a_stage_starts(monkeypatch, prefect_api_url):
    """A temporary server dies with the process that started it, and its leases with it: the slot a
    killed holder took stays counted in the database until a stage starts and gives it back."""
    from flows import limits

    ensure_limit("orphan-gpu", 1)
    with get_client(sync_client=True) as client:
        client.increment_concurrency_slots(names=["orphan-gpu"], slots=1, mode="concurrency")  # what the killed process took
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    folder = limits._records_folder("orphan-gpu")
    (folder / f"{gone}-dead.json").write_text(json.dumps({"pid": gone, "started": "0", "lease_id": None, "server": "temporary"}))
    (folder / "alive.json").write_text(json.dumps({"pid": os.getpid(), "started": limits.process_start(os.getpid()),
                                                   "lease_id": None, "server": "temporary"}))  # fmt: skip
    monkeypatch.setattr(limits, "_server", lambda: "temporary")
    assert _limit("orphan-gpu").active_slots == 1
    ensure_limit("orphan-gpu", 1)
    assert _limit("orphan-gpu").active_slots == 0 and sorted(p.name for p in folder.iterdir()) == ["alive.json"]
    (folder / "alive.json").unlink()
