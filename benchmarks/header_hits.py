"""Benchmark: each model's exact tempo and mode hit probability per prompt, on any prompt set.

A song's tempo and mode are decided by its 3 header tokens alone, so each prompt's hit probability
is computed from the model's header distribution (pipeline.models.tiny.header_odds), as the
ablation's `header_odds` option does: what is left in an interval over prompts is the prompts' own
spread. `--split train` asks the round's own prompts (what DPO saw), `test` / `validation` fresh
ones as the ablation does.

    .venv/bin/python benchmarks/header_hits.py ROUND [NAME=MODEL_DIR ...] [--split test --prompts 32] [--reference NAME]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from alignment.sweep.oracle import (ablation_frame, ablation_markdown, expected_header_hits_frame, held_out_conditions,
                                    round_models)  # fmt: skip
from pipeline.conditions import round_conditions
from pipeline.config import RoundConfig
from pipeline.manifest import read_manifest
from pipeline.models.tiny.header_odds import HEADER_HITS
from pipeline.store import RoundStore
from results_file import add_result, named_models  # benchmarks/, on the path as the script's folder


def prompts_of(config, store: RoundStore, split: str, count: int, scratch: Path) -> list[dict]:
    """The first `count` prompts of the round itself (`train`) or fresh ones of `split`."""
    if split == "train":
        return [c for _, c in sorted(round_conditions(store).items())][:count]
    return held_out_conditions(config, count, scratch / f"held-out-{split}", split=split)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("round", type=Path)
    parser.add_argument("models", nargs="*", help="NAME=MODEL_DIR; default: the round's own models")
    parser.add_argument("--split", choices=["train", "test", "validation"], default="test")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--reference", default="base", help="the model every other is compared with (default: base)")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/header-hits"))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "header_hits.json")
    args = parser.parse_args()
    store = RoundStore(str(args.round))
    config = RoundConfig.model_validate(read_manifest(store)["config"])
    models = named_models(parser, round_models(config, store), args.models, args.reference)
    load, started = os.getloadavg(), time.perf_counter()
    conditions = prompts_of(config, store, args.split, args.prompts, args.scratch)
    rates = {name: expected_header_hits_frame(config, folder, conditions) for name, folder in models.items()}
    table = ablation_frame(rates, HEADER_HITS, base=args.reference)
    labels = {m: f"P({m.replace('_', ' ')}) ↑" for m in HEADER_HITS}
    markdown = ablation_markdown(table, {}, labels, reference=args.reference)
    wall = time.perf_counter() - started
    print(markdown)
    unexplored = max(r["unexplored"].max() for r in rates.values())
    print(f"\n{len(conditions)} {args.split} prompts, exact up to {unexplored:.4f} of a prompt's mass; 'songs' counts "
          f"prompts; wall {wall:.0f} s; load {load} -> {os.getloadavg()}")  # fmt: skip
    add_result(args.out, f"{args.round}:{args.split}:{args.prompts}:exact:vs-{args.reference}:{','.join(sorted(models))}", {
        "models": {n: str(f) for n, f in models.items()}, "table": table.to_dict(orient="records"), "markdown": markdown,
        "per_prompt": {n: r.to_dict(orient="records") for n, r in rates.items()},
        "wall_seconds": round(wall, 1), "load_before": [round(x, 2) for x in load]})  # fmt: skip


if __name__ == "__main__":
    main()
