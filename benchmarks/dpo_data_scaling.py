"""Benchmark: how many lyrics pairs does DPO need before it lowers the word error rate?

The embedded round gives lyrics DPO about 40-200 pairs, and with them no effect on fresh prompts
(README, alignment science). This script asks whether the cause is the amount of data: it labels
pairs by the embedded world's ground truth (the symbolic word error rate read from the tokens,
which PER tracks with Pearson 0.97) so that thousands of pairs cost seconds, not hours of rendering
and ASR, trains the lyrics strategy's DPO on nested subsets of them, and evaluates every model on
the oracle ablation's fresh prompts with per-prompt seeds (paired Δ vs base, 95 % interval over
prompts). A diagnostic, not the product's path: the product's pairs come from PER.

Training prompts come from the round's own lyrics and conditions stages under another seed;
`--candidates` songs per prompt are sampled by the base policy with recorded seeds; a pair is two
songs of one prompt whose WER differs by at least `--gap` points (at most `--per-prompt` pairs a
prompt, the largest gaps first). Subsets are nested (the first prompts' pairs), so a larger
dataset contains every smaller one. DPO runs with the lyrics strategy's options from the config,
`--epochs` passes over each subset.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dpo_data_scaling.py --pairs 50,200,800 [--variant NAME:KEY=VALUE;...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import time
from pathlib import Path

import pandas as pd

from alignment.dpo.options import DpoOptions
from alignment.dpo.trainer import train_dpo
from alignment.policy import load_policy, policy_folder
from alignment.sweep.evaluate import evaluation_seeds
from alignment.sweep.oracle import ablation_frame, ablation_markdown, held_out_conditions, sample_oracle
from pipeline.config import load_config
from pipeline.models.tiny.oracle import oracle_metrics
from pipeline.models.tiny.preference_text import TokenLayout, completion_text, prompt_text
from pipeline.preferences import preferences
from results_file import load_span, write_results  # benchmarks/, on the path as the script's folder

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "dpo_data_scaling.json"
TRAIN_SEED_OFFSET = 99_991  # training prompts: the round's stages under seed + this (the held-out set uses the round's seed)


def training_songs(config, count: int, candidates: int, scratch: Path) -> tuple[list[dict], pd.DataFrame]:
    """`count` training prompts and `candidates` base-policy songs each, with their oracle metrics."""
    from pipeline.models.registry import load_song_model

    shifted = config.model_copy(update={"seed": config.seed + TRAIN_SEED_OFFSET})
    conditions = [dict(c, condition_id=c["condition_id"].replace("held-out-", "train-"))
                  for c in held_out_conditions(shifted, count, scratch)]  # fmt: skip
    model = load_song_model("tiny", dict(config.model.options))
    s, rows = config.sampling, []
    for i, condition in enumerate(conditions):
        seeds = evaluation_seeds(shifted.seed, condition["condition_id"], candidates)
        songs = model.model.sample_batch(condition, seeds, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                                         max_frames=model.options.max_frames)  # fmt: skip
        for seed, tokens in zip(seeds, songs):
            rows.append({"prompt_index": i, "prompt_id": condition["condition_id"], "seed": seed, "tokens": tokens,
                         **oracle_metrics(tokens, condition)})  # fmt: skip
        if (i + 1) % 50 == 0:
            print(f"  sampled {i + 1}/{count} prompts", flush=True)
    return conditions, pd.DataFrame(rows)


def wer_pairs(conditions: list[dict], songs: pd.DataFrame, layout: TokenLayout, gap: float, per_prompt: int) -> list[dict]:
    """DPO rows, prompt by prompt: pairs whose symbolic WER differs by >= gap, the largest gaps first."""
    rows = []
    for index, group in songs.groupby("prompt_index", sort=True):
        prompt = prompt_text(conditions[index], layout)
        found = []
        for a, b in itertools.combinations(group.itertuples(), 2):
            better, worse = (a, b) if a.symbolic_wer < b.symbolic_wer else (b, a)
            if worse.symbolic_wer - better.symbolic_wer >= gap:
                found.append((worse.symbolic_wer - better.symbolic_wer, better, worse))
        found.sort(key=lambda item: (-item[0], item[1].seed, item[2].seed))
        for g, better, worse in found[:per_prompt]:
            rows.append({"prompt": prompt, "chosen": completion_text(better.tokens), "rejected": completion_text(worse.tokens),
                         "prompt_index": int(index), "gap": float(g)})  # fmt: skip
    return rows


def train_model(config, options: DpoOptions, rows: list[dict], eval_rows: list[dict], out: Path, seed: int) -> dict:
    from datasets import Dataset

    model, tokenizer, _ = load_policy("tiny", config.model.options, None)
    if options.streams != "all":
        model.scored_streams = tuple(preferences()["lyrics"].streams if options.streams == "preference" else options.streams)
    if options.vocal_factor != "note":
        model.vocal_factor = options.vocal_factor
    keep = ["prompt", "chosen", "rejected"]
    train = Dataset.from_list([{k: r[k] for k in keep} for r in rows])
    test = Dataset.from_list([{k: r[k] for k in keep} for r in eval_rows])
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    trained, metrics = train_dpo(model, tokenizer, train, options, out / "run", seed, eval_dataset=test)
    if options.lora is not None:  # sampled as a whole model, like the round's merged points
        trained = trained.merge_and_unload()
    trained.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    shutil.rmtree(out / "run", ignore_errors=True)
    return {"seconds": round(time.perf_counter() - started, 1), "steps": options.max_steps,
            "held_out_accuracy": metrics.get("eval", {}).get("eval_rewards/accuracies"),
            "train_accuracy_last": next((r["rewards/accuracies"] for r in reversed(metrics["log"]) if "rewards/accuracies" in r), None)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny.yaml")
    parser.add_argument("--pairs", default="50,200,800", help="nested training-set sizes")
    parser.add_argument("--train-prompts", type=int, default=240)
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--gap", type=float, default=20.0, help="symbolic WER points (x100, as PER)")
    parser.add_argument("--per-prompt", type=int, default=6)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--eval-pairs", type=int, default=200, help="held-out pairs for DPO's own pair accuracy")
    parser.add_argument("--prompts", type=int, default=64, help="fresh prompts of the oracle evaluation")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=1,
                        help="online DPO: iteration k samples fresh training prompts' songs from iteration k-1's model, "
                             "pairs them and trains from (and against) that model; only with one --pairs size")
    parser.add_argument("--variant", action="append", default=[], help="NAME:KEY=VALUE;... DpoOptions overrides")
    parser.add_argument("--skip-configured", action="store_true", help="train only the --variant runs")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/dpo-data-scaling"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = [int(x) for x in args.pairs.split(",")]
    config = load_config(args.config)
    load, started = os.getloadavg(), time.perf_counter()
    layout = TokenLayout.from_config(load_policy("tiny", config.model.options, None)[0].config)
    conditions, songs = training_songs(config, args.train_prompts, args.candidates, args.scratch / "train")
    rows = wer_pairs(conditions, songs, layout, args.gap, args.per_prompt)
    print(f"{len(songs)} songs over {args.train_prompts} prompts, base WER {songs.symbolic_wer.mean():.1f}; "
          f"{len(rows)} pairs (gap >= {args.gap}); {time.perf_counter() - started:.0f} s", flush=True)
    eval_rows, rows = rows[-args.eval_pairs :], rows[: -args.eval_pairs]  # the last prompts' pairs: never trained on
    if sizes[-1] > len(rows):
        parser.error(f"--pairs {sizes[-1]}: only {len(rows)} training pairs; raise --train-prompts")
    base_options = config.dpo.for_strategy("lyrics")
    variants = ({} if args.skip_configured else {"as-configured": {}}) | {v.split(":", 1)[0]: dict(kv.split("=", 1) for kv in v.split(":", 1)[1].split(";"))
                                        for v in args.variant}  # fmt: skip
    models = {"base": policy_folder("tiny", config.model.options, None)}
    runs = {}
    if args.iterations > 1 and len(sizes) > 1:
        parser.error("--iterations needs one --pairs size")
    for (variant, overrides), size in itertools.product(variants.items(), sizes):
        steps = math.ceil(args.epochs * size / base_options.batch_size)
        options = DpoOptions.model_validate(base_options.model_dump() | {"max_steps": steps, "save_steps": 10**6}
                                            | {k: json.loads(v) if v[:1] in "[{0123456789" else v for k, v in overrides.items()})  # fmt: skip
        start, train, held = config, rows, eval_rows
        for iteration in range(1, args.iterations + 1):
            name = f"{variant}/{size}" + (f"/it{iteration}" if args.iterations > 1 else "")
            if iteration > 1:  # online: the previous model samples new prompts' songs, and DPO starts from it
                start = config.model_copy(update={"seed": config.seed + 7919 * iteration, "model": config.model.model_copy(
                    update={"options": {**config.model.options, "checkpoint": str(models[previous])}})})  # fmt: skip
                online = wer_pairs(*training_songs(start, args.train_prompts, args.candidates,
                                                   args.scratch / f"train-{name.replace('/', '-')}"), layout, args.gap, args.per_prompt)  # fmt: skip
                held, train = online[-args.eval_pairs :], online[: -args.eval_pairs]
                print(f"  {name}: {len(train)} online training pairs", flush=True)
            runs[name] = train_model(start, options, train[:size], held, args.scratch / name.replace("/", "-"), config.seed)
            models[name] = args.scratch / name.replace("/", "-") / "model"
            previous = name
            print(f"  {name}: {runs[name]}", flush=True)
    held_out = held_out_conditions(config, args.prompts, args.scratch / "held-out")
    evaluated = {name: sample_oracle(config, folder, held_out, args.seeds) for name, folder in models.items()}
    table = ablation_frame(evaluated)
    markdown = ablation_markdown(table, {name: ("symbolic_wer",) for name in runs})
    wall = time.perf_counter() - started
    print(markdown)
    print(f"wall {wall:.0f} s; load {load} -> {os.getloadavg()}")
    report = {"settings": {k: str(v) for k, v in vars(args).items()}, "songs": len(songs), "pairs": len(rows),
              "base_training_wer": float(songs.symbolic_wer.mean()), "runs": runs, "table": table.to_dict(orient="records"),
              "markdown": markdown, "wall_seconds": round(wall, 1),
              "load": load_span(load)}  # fmt: skip
    write_results(args.out, report)


if __name__ == "__main__":
    main()
