"""Benchmark: does each preference's DPO move its own target? Variants of pairs and DPO settings on
one scored round, each judged by the oracle ablation (the same fresh songs for every model).

For every `--variant NAME:KEY=VALUE;KEY=VALUE` (config overrides, as `--set` takes them; the
variant `as-is` keeps the round's config) the round is copied (its audio linked, not copied),
the pairs, dpo and merge stages run under the changed config, and `oracle_ablation` samples
base, every DPO model and DNI on `--prompts` fresh prompts x `--seeds` seeds. Prints, per
variant and model, the paired difference from base on every oracle metric and DPO's own held-out
pair accuracy, with the load average and wall times; writes benchmarks/results/alignment_effect.json.
`--split validation` asks fresh prompts disjoint from the ablation's test prompts: choose options
there, then report the chosen ones on the test prompts (the round's ablation stage).

    .venv/bin/python benchmarks/alignment_effect.py ROUND --variant as-is \\
        --variant 'gap20:pairs.lyrics.per_gap=20;pairs.selection.max_pairs_per_prompt=10' [--prompts 64 --seeds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from alignment.sweep.oracle import oracle_ablation
from flows.stages import run_stage_locally, stage_parts
from pipeline.allocator import keep_freed_memory
from pipeline.config import config_with_overrides
from pipeline.manifest import read_manifest
from pipeline.preferences import preferences
from pipeline.store import RoundStore

RESULTS = Path(__file__).with_name("results") / "alignment_effect.json"
REDONE = ("pairs", "dpo", "merge", "sweep", "ablation")  # run again in each variant's copy
LINKED = ("candidates",)  # large and read-only downstream of scoring: linked into each variant's copy


def copy_round(source: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.name in LINKED:
            (target / item.name).symlink_to(item.resolve())
        elif item.is_dir():
            if item.name not in REDONE:
                shutil.copytree(item, target / item.name)
        else:
            shutil.copy2(item, target / item.name)
    # the stages not copied are not done in the copy (the source round may have run them since)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["stages"] = {name: record for name, record in manifest["stages"].items() if name.split("/")[0] not in REDONE}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def run_variant(source: Path, target: Path, overrides: list[str], prompts: int, seeds: int,
                strategies: list[str] | None = None, split: str = "test") -> dict:  # fmt: skip
    copy_round(source, target)
    store = RoundStore(str(target))
    config = config_with_overrides(read_manifest(store)["config"], overrides, f"{source}/manifest.json")
    seconds = {}
    parts = [f"dpo/{s}" for s in strategies] if strategies else [*stage_parts("dpo"), "merge"]
    for part in ("pairs", *parts):
        started = time.perf_counter()
        record = run_stage_locally(part, config, store)
        seconds[part] = round(time.perf_counter() - started, 1)
        if record["status"] != "done":
            raise RuntimeError(f"{target.name}: {part} failed: {record.get('errors')}")
    started = time.perf_counter()
    table, markdown = oracle_ablation(config, store, prompts, seeds, split=split)
    seconds["oracle_ablation"] = round(time.perf_counter() - started, 1)
    stages = read_manifest(store)["stages"]
    pairs = {s: {k: m.get(k) for k in ("pairs", "train", "test")} for s, m in stages["pairs"]["metrics"]["strategies"].items()}
    accuracy = {part.split("/")[1]: stages[part]["metrics"].get("eval_rewards/accuracies") for part in parts if part != "merge"}
    return {"overrides": overrides, "split": split, "pairs": pairs, "dpo_heldout_accuracy": accuracy, "seconds": seconds,
            "table": table.to_dict(orient="records"), "markdown": markdown}  # fmt: skip


def main() -> None:
    keep_freed_memory()  # as the CLI does: the DPO runs here train several times faster
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("round", type=Path, help="a round whose scores and reward_model stages are done")
    parser.add_argument("--variant", action="append", required=True, help="NAME:KEY=VALUE;KEY=VALUE, or 'as-is'")
    parser.add_argument("--out", type=Path, default=Path("/tmp/alignment-effect"))
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--strategy", action="append", help="train only these strategies (no merge); default: all, then merge")
    parser.add_argument("--split", choices=["test", "validation"], default="test",
                        help="the prompts asked: the ablation's test prompts, or validation prompts disjoint from them")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON file the variants are added to")
    args = parser.parse_args()
    for spec in args.variant:
        name, _, sets = spec.partition(":")
        overrides = [s for s in sets.split(";") if s]
        load = os.getloadavg()
        started = time.perf_counter()
        result = run_variant(args.round, args.out / name, overrides, args.prompts, args.seeds, args.strategy, args.split)
        result |= {"wall_seconds": round(time.perf_counter() - started, 1), "load_before": [round(x, 2) for x in load],
                   "load_after": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
        results = json.loads(args.results.read_text()) if args.results.exists() else {}  # read late: runs may overlap
        results[name] = result
        print(f"\n## {name} ({'; '.join(overrides) or 'the round config'})\n")
        print(result["markdown"])
        print(f"\npairs: {result['pairs']}\nDPO held-out pair accuracy: {result['dpo_heldout_accuracy']}")
        print(f"wall {result['wall_seconds']} s, stages {result['seconds']}, load {load} -> {result['load_after']}")
        args.results.parent.mkdir(exist_ok=True)
        args.results.write_text(json.dumps(results, indent=1) + "\n")
    own = {p.name: p.oracles for p in preferences().values()}
    print(f"\n(each preference's own targets: {own})")


if __name__ == "__main__":
    main()
