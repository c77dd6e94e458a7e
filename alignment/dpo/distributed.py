"""DPO on several processes, one per GPU: the dpo stage's run under torch.distributed.run.

The stage writes a job (the round, its config, the strategy and the shard) to `launch/job.json`
in the run's folder and starts `python -m torch.distributed.run --standalone --nproc_per_node N
-m alignment.dpo.distributed JOB`. Every process rebuilds the stage from the job and trains
through TRL's Trainer, whose accelerate reads the launcher's environment (RANK, WORLD_SIZE, ...)
and wraps the policy in DDP or FSDP (`dpo.sharding`); on CPU the processes talk over gloo. Each
process takes its share of every step's pairs (`DpoOptions.per_process`), so a step sees the same
pairs on any count and TRL's checkpoints, written whole, resume on another count. The main
process writes the trained model and the metrics to `launch/trained/` (renamed into place when
complete); the stage reads them back and goes on as after a run in its own process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_TAIL_LINES = 40


def train_on_processes(stage, spec, processes: int):
    """(trained model, tokenizer, metrics) of the stage's run on `processes` processes."""
    _check_devices(processes, stage.config.dpo.sharding, spec)
    folder = stage.run_dir(spec) / "launch"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    job = {"round": stage.store.url, "config": stage.config.resolved(), "strategy": stage.strategy,
           "spec": dataclasses.asdict(spec), "processes": processes}  # fmt: skip
    (folder / "job.json").write_text(json.dumps(job))
    launch(folder / "job.json", processes, folder / "launch.log")
    trained = folder / "trained"
    metrics = json.loads((trained / "metrics.json").read_text())
    return *load_trained(stage, spec, trained), metrics


def _check_devices(processes: int, sharding: str, spec) -> None:
    """One process per GPU where the run uses GPUs (on CPU any count runs, over gloo); FSDP on GPUs only."""
    import torch

    from alignment.dpo.options import DpoOptions

    on_gpu = torch.cuda.is_available() and DpoOptions.model_validate(spec.params["run"]).device != "cpu"
    if on_gpu and processes > torch.cuda.device_count():
        raise ValueError(f"dpo.processes {processes}: only {torch.cuda.device_count()} GPU(s) here "
                         "(one process per GPU; set device: cpu to run processes on the CPU)")  # fmt: skip
    if sharding == "fsdp" and not on_gpu:  # accelerate would quietly run DDP instead
        raise ValueError("dpo.sharding fsdp: accelerate shards a policy over GPUs only, and this run is on the CPU; "
                         "use sharding: ddp")  # fmt: skip


def launch(job_file: Path, processes: int, log: Path) -> None:
    """Run this module's `main` on `processes` local processes; RuntimeError with the log's tail on failure."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "alignment.dpo.distributed", str(job_file)]  # fmt: skip
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "TQDM_DISABLE": "1"}
    with open(log, "wb") as out:
        code = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT).returncode
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
        raise RuntimeError(f"dpo: the {processes}-process run failed (exit {code}); end of {log}:\n{tail}")


def load_trained(stage, spec, folder: Path):
    """(model, tokenizer) from a launch's `trained/`: the whole policy, or the base with the LoRA adapter."""
    import torch

    from alignment.dpo.options import DpoOptions

    base, tokenizer = stage.policy()
    if DpoOptions.model_validate(spec.params["run"]).lora is not None:
        from peft import PeftModel

        return PeftModel.from_pretrained(base, folder), tokenizer
    return type(base).from_pretrained(folder, torch_dtype=torch.float32), tokenizer


def main(job_file: str) -> None:
    """One process of a launch: rebuild the stage, train, and (main process) publish the result."""
    from alignment.dpo.stage import DpoStage
    from pipeline.allocator import keep_freed_memory
    from pipeline.config import RoundConfig
    from pipeline.stages.base import ShardSpec
    from pipeline.store import RoundStore

    keep_freed_memory()
    job = json.loads(Path(job_file).read_text())
    stage = DpoStage(RoundConfig.model_validate(job["config"]), RoundStore(job["round"]), job["strategy"])
    partial = Path(job_file).with_name(".partial-trained")
    _, tokenizer, metrics = stage.train(ShardSpec(**job["spec"]), processes=job["processes"], save_to=partial)
    if int(os.environ.get("RANK", "0")) == 0:
        tokenizer.save_pretrained(partial)
        (partial / "metrics.json").write_text(json.dumps(metrics))
        partial.rename(partial.with_name("trained"))


if __name__ == "__main__":
    main(sys.argv[1])
