"""Benchmark: one DPO run on a round's pairs with glibc's default allocator and with freed memory kept.

Each setting trains in its own process (mallopt applies to a whole process): the round's
`dpo/STRATEGY` pairs, its config's options with `--steps` steps, nothing saved to the round.
Reports TRL's train_runtime, the process's user and kernel CPU seconds and the training losses
(which must be identical: the allocator changes where memory comes from, not what is computed).

    .venv/bin/python benchmarks/allocator_dpo.py ROUND [--strategy lyrics] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).with_name("results") / "allocator_dpo.json"


def train_once(round_dir: str, strategy: str, steps: int, keep: bool) -> dict:
    """In this process: one DPO run; its runtime, CPU seconds and losses."""
    if keep:
        from pipeline.allocator import keep_freed_memory

        keep_freed_memory()
    from alignment.dpo.options import DpoOptions
    from alignment.dpo.stage import DpoStage
    from alignment.dpo.trainer import train_dpo
    from pipeline.config import RoundConfig
    from pipeline.manifest import read_manifest
    from pipeline.store import RoundStore

    store = RoundStore(round_dir)
    stage = DpoStage(RoundConfig.model_validate(read_manifest(store)["config"]), store, strategy)
    spec = stage.plan()[0]
    run = DpoOptions.model_validate(spec.params["run"]).model_copy(update={"max_steps": steps, "save_steps": 10**6})
    model, tokenizer = stage.policy()
    with tempfile.TemporaryDirectory() as out:
        _, metrics = train_dpo(model, tokenizer, stage.pairs(spec)["train"], run, Path(out), spec.params["seed"])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"keep_freed_memory": keep, "train_runtime": metrics["train"]["train_runtime"], "user_s": round(usage.ru_utime, 1),
            "kernel_s": round(usage.ru_stime, 1), "max_rss_mb": round(usage.ru_maxrss / 1024),
            "losses": [row["loss"] for row in metrics["log"] if "loss" in row]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("round")
    parser.add_argument("--strategy", default="lyrics")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--child", choices=["default", "keep"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train_once(args.round, args.strategy, args.steps, args.child == "keep")))
        return
    runs = []
    for mode in ("default", "keep", "default", "keep"):
        load = os.getloadavg()[0]
        out = subprocess.run([sys.executable, __file__, args.round, "--strategy", args.strategy, "--steps", str(args.steps),
                              "--child", mode], capture_output=True, text=True, check=True).stdout  # fmt: skip
        runs.append(json.loads(out.strip().splitlines()[-1]) | {"load_before": round(load, 2)})
        print({k: v for k, v in runs[-1].items() if k != "losses"}, flush=True)
    same = all(r["losses"] == runs[0]["losses"] for r in runs)
    print(f"losses identical in all {len(runs)} runs: {same}")
    RESULTS.write_text(json.dumps({"round": args.round, "strategy": args.strategy, "steps": args.steps,
                                   "losses_identical": same, "runs": runs}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
