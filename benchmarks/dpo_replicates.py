"""Benchmark: how far one DPO run's effect varies between runs, and what averaging the runs gives.

Each `--strategy` is trained `--replicates` times on a copy of the round's own pairs (the dpo option
`replicates`: each run its own seed, so its own order of pairs; the strategy's model is the average
of their weights). The oracle then asks base, every run's model and the average for the same fresh
songs (each prompt's own seeds, the same for every model). Printed per model: the paired Δ vs base
with a 95 % interval over prompts; and per strategy, the expected effect of one run with a
two-level bootstrap interval (runs and prompts both resampled) and the spread of the runs' effects.
Results are added to benchmarks/results/dpo_replicates.json under `--name`.

    .venv/bin/python benchmarks/dpo_replicates.py ROUND --name as-is --strategy lyrics --strategy musicality \\
        --replicates 4 --split validation [--set dpo.per_strategy.lyrics.learning_rate=2e-4 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from alignment.policy import policy_folder
from alignment.sweep.oracle import ablation_frame, ablation_markdown, held_out_conditions, sample_oracle
from alignment.sweep.paired import paired_songs, per_prompt_differences
from alignment_effect import copy_round
from flows.stages import run_stage_locally
from pipeline.allocator import keep_freed_memory
from pipeline.config import config_with_overrides
from pipeline.manifest import read_manifest
from pipeline.preferences import preferences
from pipeline.models.tiny.oracle import ORACLE_METRICS
from pipeline.store import RoundStore

RESULTS = Path(__file__).with_name("results") / "dpo_replicates.json"


def over_runs(differences: list[np.ndarray], resamples: int = 4000, seed: int = 0) -> dict:
    """The expected effect of one run: mean over runs and prompts, with a 95 % interval from resampling
    both (a run and a prompt are each a draw); and the runs' own effects."""
    table = np.stack(differences)  # runs x prompts
    rng = np.random.default_rng(seed)
    runs = rng.integers(0, table.shape[0], size=(resamples, table.shape[0]))
    prompts = rng.integers(0, table.shape[1], size=(resamples, table.shape[1]))
    means = np.array([table[r][:, p].mean() for r, p in zip(runs, prompts)])
    effects = table.mean(axis=1)
    return {"mean": float(table.mean()), "low": float(np.quantile(means, 0.025)), "high": float(np.quantile(means, 0.975)),
            "runs": [float(e) for e in effects], "run_sd": float(effects.std(ddof=1)) if len(effects) > 1 else None}  # fmt: skip


def main() -> None:
    keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("round", type=Path, help="a round whose scores and reward_model stages are done")
    parser.add_argument("--name", required=True, help="this measurement's key in the results file")
    parser.add_argument("--strategy", action="append", required=True)
    parser.add_argument("--replicates", type=int, default=4)
    parser.add_argument("--set", action="append", default=[], help="config overrides, as `songpref round run --set` takes them")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--split", choices=["test", "validation"], default="validation")
    parser.add_argument("--out", type=Path, default=Path("/tmp/dpo-replicates"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    load, started = os.getloadavg(), time.perf_counter()
    target = args.out / args.name
    copy_round(args.round, target)
    store = RoundStore(str(target))
    overrides = [*args.set, *(f"dpo.per_strategy.{s}.replicates={args.replicates}" for s in args.strategy)]
    config = config_with_overrides(read_manifest(store)["config"], overrides, f"{args.round}/manifest.json")
    seconds = {}
    for part in ("pairs", *(f"dpo/{s}" for s in args.strategy)):
        begun = time.perf_counter()
        record = run_stage_locally(part, config, store)
        seconds[part] = round(time.perf_counter() - begun, 1)
        if record["status"] != "done":
            raise RuntimeError(f"{part} failed: {record.get('errors')}")
    models = {"base": Path(policy_folder(config.model.backend, config.model.options, None))}
    for strategy in args.strategy:
        models[f"{strategy} (average)"] = target / "dpo" / strategy / "model"
        models |= {f"{strategy} run {i}": target / "dpo" / strategy / "replicates" / str(i) for i in range(args.replicates)}
    begun = time.perf_counter()
    conditions = held_out_conditions(config, args.prompts, args.out / f"held-out-{args.split}", split=args.split)
    songs = {name: sample_oracle(config, folder, conditions, args.seeds) for name, folder in models.items()}
    seconds["oracle"] = round(time.perf_counter() - begun, 1)
    table = ablation_frame(songs)
    own = {f"{s} (average)": preferences()[s].oracles for s in args.strategy if s in preferences()}
    markdown = ablation_markdown(table, own)
    summary = {}
    for strategy in args.strategy:
        metrics = json.loads((target / "dpo" / strategy / "metrics.json").read_text())
        accuracy = [(r.get("eval") or {}).get("eval_rewards/accuracies") for r in metrics["replicates"]]
        targets = preferences()[strategy].oracles if strategy in preferences() else tuple(ORACLE_METRICS)  # joint: all
        summary[strategy] = {"held_out_pair_accuracy": accuracy, "kl_of_average": metrics["kl"].get("kl"),
                             "one_run": {m: over_runs([per_prompt_differences(paired_songs(songs[f"{strategy} run {i}"], songs["base"], m), m)
                                                       for i in range(args.replicates)]) for m in (*targets, "frames")}}  # fmt: skip
    wall = round(time.perf_counter() - started, 1)
    print(markdown)
    for strategy, figures in summary.items():
        print(f"\n{strategy}: held-out pair accuracy per run {figures['held_out_pair_accuracy']}; KL of the average {figures['kl_of_average']}")
        for metric, r in figures["one_run"].items():
            runs = ", ".join(f"{e:+.3g}" for e in r["runs"])
            print(f"  one run, {metric}: {r['mean']:+.3g} [{r['low']:+.3g}, {r['high']:+.3g}] over runs and prompts; runs: {runs}")
    print(f"\n{args.prompts} {args.split} prompts x {args.seeds} seeds; wall {wall} s, stages {seconds}; "
          f"load {load} -> {os.getloadavg()}")
    results = json.loads(args.results.read_text()) if args.results.exists() else {}
    results[args.name] = {"round": str(args.round), "overrides": overrides, "split": args.split, "prompts": args.prompts,
                          "seeds": args.seeds, "table": table.to_dict(orient="records"), "markdown": markdown,
                          "summary": summary, "seconds": seconds, "wall_seconds": wall,
                          "load_before": [round(x, 2) for x in load]}  # fmt: skip
    args.results.parent.mkdir(exist_ok=True)
    args.results.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
