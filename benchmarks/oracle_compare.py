"""Benchmark: trained policies compared with base by the oracle ablation, without training again.

Every `NAME=MODEL_DIR` is asked for the same fresh held-out songs as base (the policy before DPO) (the round's own lyrics
and conditions stages under a derived seed; each prompt's own seeds, the same for every model),
and the table of paired differences from `--reference` (default base) is printed with the load
average and wall time; raw rows go to `--out`. `--quarters`: the same table for each quarter of
the songs (the first and second half of the prompts x the first and second half of each prompt's
seeds), to see how much one quarter's draw moves a difference. `--audio N`: also the first N songs of
each model rendered and scored by the round's own scorers (PER, similarity, reward), the same
songs for every model, so models of two rounds are judged by one round's scorers.

    .venv/bin/python benchmarks/oracle_compare.py ROUND lyrics=/tmp/ae/lyrics-as-is/dpo/lyrics/model ... \\
        [--prompts 64 --seeds 2 --split validation --out benchmarks/results/oracle_compare.json]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from alignment.policy import policy_folder
from alignment.sweep.oracle import ablation_frame, ablation_markdown, audio_songs, audio_table, held_out_conditions, sample_oracle
from pipeline.config import RoundConfig
from pipeline.manifest import read_manifest
from pipeline.store import RoundStore
from results_file import add_result, named_models  # benchmarks/, on the path as the script's folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("round", type=Path, help="the round whose config (seed, model, sampling) the songs follow")
    parser.add_argument("models", nargs="+", help="NAME=MODEL_DIR")
    parser.add_argument("--reference", default="base", help="the model every other is compared with (default: base)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--split", choices=["test", "validation"], default="test",
                        help="the prompts asked: the ablation's test prompts, or validation prompts disjoint from them")
    parser.add_argument("--quarters", action="store_true", help="also the table for each quarter of the songs")
    parser.add_argument("--audio", type=int, default=0, metavar="N",
                        help="also render and score the first N songs per model with the round's own scorers")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/oracle-compare"))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "oracle_compare.json")
    args = parser.parse_args()
    store = RoundStore(str(args.round))
    config = RoundConfig.model_validate(read_manifest(store)["config"])
    if args.audio > args.prompts * args.seeds:
        parser.error(f"--audio {args.audio}: more than the {args.prompts} prompts x {args.seeds} seeds asked")
    models = named_models(parser, {"base": Path(policy_folder(config.model.backend, config.model.options, None))}, args.models, args.reference)
    load, started = os.getloadavg(), time.perf_counter()
    conditions = held_out_conditions(config, args.prompts, args.scratch / f"held-out-{args.split}", split=args.split)
    songs = {name: sample_oracle(config, folder, conditions, args.seeds) for name, folder in models.items()}
    table = ablation_frame(songs, base=args.reference)
    markdown = ablation_markdown(table, {}, reference=args.reference)
    print(markdown)
    quarters = quarter_tables(songs, args.reference) if args.quarters else {}
    for name, text in quarters.items():
        print(f"\n{name}:\n{text}")
    audio = audio_rows(config, store, models, conditions, args, scratch=args.scratch / "audio") if args.audio else None
    if audio is not None:
        print(f"\nThe round's own scorers, the first {args.audio} songs:\n{audio['markdown']}")
    wall = time.perf_counter() - started
    print(f"\n{args.prompts} prompts x {args.seeds} seeds; wall {wall:.0f} s; load {load} -> {os.getloadavg()}")
    # the models are part of the key: two comparisons on the same prompts must not overwrite each other
    key = f"{args.round}:{args.split}:{args.prompts}x{args.seeds}:vs-{args.reference}:{','.join(sorted(models))}"
    add_result(args.out, key, {
        "models": {n: str(f) for n, f in models.items()}, "table": table.to_dict(orient="records"), "markdown": markdown,
        **({"quarters": quarters} if quarters else {}), **({"audio": audio} if audio else {}), "wall_seconds": round(wall, 1), "load_before": [round(x, 2) for x in load]})  # fmt: skip


def audio_rows(config, store, models: dict[str, Path], conditions: list[dict], args, scratch: Path) -> dict:
    """The first `args.audio` songs of every model scored by the round's own scorers; the paired
    table (rows and markdown) against `args.reference`."""
    songs = audio_songs(config, store, models, conditions, args.seeds, args.audio, scratch)
    table, failed, markdown = audio_table(songs, {}, args.reference)
    return {"table": table.to_dict(orient="records"), "failed": failed, "markdown": markdown}


def quarter_tables(songs: dict, reference: str) -> dict[str, str]:
    """The paired table for each quarter of the songs: first / second half of the prompts (in id
    order) x first / second half of each prompt's seeds (in the evaluator's order)."""
    prompts = sorted(songs[reference]["prompt_id"].unique())
    first_prompts = set(prompts[: len(prompts) // 2])
    tables = {}
    for prompt_half in ("prompts 1st half", "prompts 2nd half"):
        for seed_half in ("seeds 1st half", "seeds 2nd half"):
            part = {}
            for name, frame in songs.items():
                order = frame.groupby("prompt_id").cumcount()
                seeds_per_prompt = order.groupby(frame["prompt_id"]).transform("size")
                in_prompts = frame["prompt_id"].isin(first_prompts) == (prompt_half == "prompts 1st half")
                in_seeds = (order < seeds_per_prompt // 2) == (seed_half == "seeds 1st half")
                part[name] = frame[in_prompts & in_seeds]
            tables[f"{prompt_half}, {seed_half}"] = ablation_markdown(ablation_frame(part, base=reference), {},
                                                                      reference=reference)  # fmt: skip
    return tables


if __name__ == "__main__":
    main()
