"""Benchmark: each model's expected tempo and mode hit per prompt, read from many sampled headers.

A song's tempo and mode are decided by its 3 header tokens alone (the tiny model samples them
before any frame), so sampling `--samples` headers per prompt (songs cut at one frame) estimates
each prompt's hit probability with almost no sampling noise. What is left in an interval over
prompts is the prompts' own spread: this tells whether a model moves the hit probability at all,
where 4 songs per prompt cannot. `--split train` asks the round's own prompts (what DPO saw),
`test` / `validation` fresh ones as the ablation does.

    .venv/bin/python benchmarks/header_hits.py ROUND [NAME=MODEL_DIR ...] [--split test --prompts 32 --samples 512]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd

from alignment.sweep.oracle import ablation_frame, ablation_markdown, held_out_conditions, round_models
from pipeline.conditions import round_conditions
from pipeline.config import RoundConfig
from pipeline.digest import derive_seed
from pipeline.manifest import read_manifest
from pipeline.store import RoundStore

HEADER_METRICS = ("tempo_hit", "mode_hit")


def header_hit_rates(config, checkpoint: Path, conditions: list[dict], samples: int) -> pd.DataFrame:
    """One row per prompt: the share of `samples` sampled headers that hit the described tempo
    bucket and mode (the same seeds for every model)."""
    from pipeline.models.registry import load_song_model
    from pipeline.models.tiny.oracle import oracle_metrics
    from pipeline.models.tiny.sampling import sample_songs

    model = load_song_model("tiny", {**config.model.options, "checkpoint": str(checkpoint)}).model
    s, rows = config.sampling, []
    for condition in conditions:
        seeds = [derive_seed(config.seed, "header-hits", condition["condition_id"], j) for j in range(samples)]
        songs = sample_songs(model, [condition] * samples, seeds, temperature=s.temperature, top_k=s.top_k,
                             top_p=s.top_p, max_frames=1)  # fmt: skip
        hits = pd.DataFrame([oracle_metrics(tokens, condition) for tokens in songs])[list(HEADER_METRICS)].mean()
        rows.append({"prompt_id": condition["condition_id"], "seed": 0, **hits.to_dict()})
    return pd.DataFrame(rows)


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
    parser.add_argument("--samples", type=int, default=512, help="headers sampled per prompt and model")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/header-hits"))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "header_hits.json")
    args = parser.parse_args()
    store = RoundStore(str(args.round))
    config = RoundConfig.model_validate(read_manifest(store)["config"])
    models = round_models(config, store)
    for spec in args.models:
        name, _, folder = spec.partition("=")
        if not (Path(folder) / "config.json").is_file():
            parser.error(f"{spec}: {folder} is not a model folder (no config.json)")
        models[name] = Path(folder)
    load, started = os.getloadavg(), time.perf_counter()
    conditions = prompts_of(config, store, args.split, args.prompts, args.scratch)
    rates = {name: header_hit_rates(config, folder, conditions, args.samples) for name, folder in models.items()}
    table = ablation_frame(rates, HEADER_METRICS)
    labels = {m: f"P({m.replace('_', ' ')}) ↑" for m in HEADER_METRICS}
    markdown = ablation_markdown(table, {}, labels)
    wall = time.perf_counter() - started
    print(markdown)
    print(f"\n{len(conditions)} {args.split} prompts x {args.samples} headers; 'songs' counts prompts; "
          f"wall {wall:.0f} s; load {load} -> {os.getloadavg()}")  # fmt: skip
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[f"{args.round}:{args.split}:{args.prompts}x{args.samples}"] = {
        "models": {n: str(f) for n, f in models.items()}, "table": table.to_dict(orient="records"), "markdown": markdown,
        "per_prompt": {n: r.to_dict(orient="records") for n, r in rates.items()},
        "wall_seconds": round(wall, 1), "load_before": [round(x, 2) for x in load]}  # fmt: skip
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
