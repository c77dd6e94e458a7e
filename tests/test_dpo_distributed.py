"""DPO on two processes (torch.distributed over gloo, as on two GPUs): the same loss curve as one
process at the same pairs per step, and a checkpoint written by two processes resumes on one."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignment.dpo.options import DpoOptions
from flows.stages import run_stage_locally
from pipeline.models.tiny.song_model import CHECKPOINT_DIR
from pipeline.store import RoundStore
from small_round import config

# float32 on CPU: the processes sum each step's loss and gradients in another order than one
# process does (measured: 3e-7 apart). Every step is a full one (the round has 10 training pairs,
# 2 per step): an epoch's short last batch is evened out by accelerate and would differ.
LOSS_TOLERANCE = 1e-4
# Adam scales every update to about the learning rate, so a weight whose gradient is rounding noise
# may move differently: the runs' weights are compared by how far apart they end against how far they moved.
WEIGHT_TOLERANCE = 1e-2


def _dpo(processes: int):
    return config({"dpo": {"strategies": ["lyrics"], "kl_samples": 0, "processes": processes,
                           "defaults": {"max_steps": 2, "batch_size": 2, "save_steps": 1, "learning_rate": 1e-3}}})  # fmt: skip


def _copy(round_dir, target) -> RoundStore:
    root, _ = round_dir
    shutil.copytree(root, target, ignore=shutil.ignore_patterns("dpo"))
    return RoundStore(str(target))


def _losses(store: RoundStore) -> list[float]:
    log = json.loads((Path(store.path("dpo", "lyrics")) / "metrics.json").read_text())["log"]
    return [row["loss"] for row in log if "loss" in row]


def _weights(store: RoundStore) -> dict:
    return load_file(Path(store.path("dpo", "lyrics")) / "model" / "model.safetensors")


def test_the_process_count_changes_neither_the_round_nor_the_pairs_per_step():
    assert _dpo(1).digest() == _dpo(4).digest() == config({"dpo": {**_dpo(1).dpo.model_dump(), "sharding": "fsdp"}}).digest()
    assert _dpo(1).digest() != config({"dpo": {"kl_samples": 3}}).digest()  # a run's own options still count
    assert DpoOptions(batch_size=8, gradient_accumulation_steps=1).per_process(4) == (2, 1)
    assert DpoOptions(batch_size=3, gradient_accumulation_steps=4).per_process(2) == (3, 2)
    with pytest.raises(ValueError, match="batch_size 3 x gradient_accumulation_steps 1 pairs per step cannot be split"):
        DpoOptions(batch_size=3).per_process(2)


def test_fsdp_is_refused_where_the_run_is_on_the_cpu():
    from alignment.dpo.distributed import _check_devices
    from pipeline.stages.base import ShardSpec

    spec = ShardSpec("dpo/lyrics", 0, {}, {"run": DpoOptions(device="cpu").model_dump(mode="json")})
    _check_devices(2, "ddp", spec)
    with pytest.raises(ValueError, match="dpo.sharding fsdp: accelerate shards a policy over GPUs only"):
        _check_devices(2, "fsdp", spec)


@pytest.mark.slow
def test_two_processes_train_as_one_and_their_checkpoint_resumes_on_one(round_dir, tmp_path):
    one, two = _copy(round_dir, tmp_path / "one"), _copy(round_dir, tmp_path / "two")
    assert run_stage_locally("dpo/lyrics", _dpo(1), one)["status"] == "done"
    record = run_stage_locally("dpo/lyrics", _dpo(2), two)
    assert record["status"] == "done" and record["metrics"].get("status") == "trained"
    ran = json.loads(Path(two.path("dpo", "lyrics", "metrics.json")).read_text())
    assert ran["processes"] == 2 and ran["distributed"] == "MULTI_CPU"  # torch.distributed over gloo, DDP
    reference, losses = _losses(one), _losses(two)
    assert len(reference) == len(losses) == 2 and reference[0] != reference[-1]
    assert max(abs(a - b) for a, b in zip(reference, losses)) < LOSS_TOLERANCE, (reference, losses)
    base, ours = load_file(CHECKPOINT_DIR / "model.safetensors"), _weights(one)
    assert _apart(ours, _weights(two)) < WEIGHT_TOLERANCE * _apart(ours, base)
    # Killed after step 1 of the two-process run: it resumes on one process and ends where one process ends.
    run_dir = next((Path(two.path("dpo", "lyrics"))).glob("run-*"))
    shutil.rmtree(run_dir / "checkpoint-2")
    for shard in (Path(two.path("dpo", "lyrics"))).glob("shard-*.parquet"):
        shard.unlink()
    assert run_stage_locally("dpo/lyrics", _dpo(1), two)["status"] == "done"
    metrics = json.loads((Path(two.path("dpo", "lyrics")) / "metrics.json").read_text())
    assert metrics["resumed_from"] == "checkpoint-1" and metrics["processes"] == 1
    assert abs(_losses(two)[-1] - reference[-1]) < LOSS_TOLERANCE
    assert _apart(ours, _weights(two)) < WEIGHT_TOLERANCE * _apart(ours, base)


def _apart(a: dict, b: dict) -> float:
    return float(sum(((a[k] - b[k]).double() ** 2).sum() for k in a) ** 0.5)



def test_songpref_dpo_gpus_is_checked_before_any_work(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "songpref", "dpo", str(tmp_path / "r"), "--gpus", "0"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and "--gpus 0: must be at least 1" in result.stderr
