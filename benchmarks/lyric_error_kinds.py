"""Benchmark: what kind of word errors does a tiny-model policy make, and at which sampling temperature?

Each sung note's word position (the vocals stream's NOTE_ON token) is read against the previous
note's: the next word (correct), the same word again (repeat), a jump forward over lyric words
(skip), a jump back (its words are sung again: insertions), or a position past the lyric's last
word (a note the decoder drops). The same fresh prompts and per-prompt seeds as the oracle
ablation, for every model and temperature, with each model's mean symbolic WER.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lyric_error_kinds.py base=default lyrics=DIR \\
        [--temperatures 1.0,0.8,0.6] [--prompts 32] [--seeds 4]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time
from pathlib import Path

import numpy as np

from alignment.sweep.evaluate import evaluation_seeds
from alignment.sweep.oracle import held_out_conditions
from pipeline.config import load_config
from pipeline.models.tiny.codec import N_PITCH, VOCAL_NOTE_BASE, lyric_words
from pipeline.models.tiny.oracle import oracle_metrics
from results_file import load_span, write_results  # benchmarks/, on the path as the script's folder

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("next", "repeat", "skip", "back", "past_end")


def note_kinds(vocals: list[int], words: int) -> collections.Counter:
    """Counts of each step kind over a song's sung notes, and the lyric words skipped over."""
    counts, previous = collections.Counter(), -1
    for token in vocals:
        if token < VOCAL_NOTE_BASE:
            continue
        position = (token - VOCAL_NOTE_BASE) // N_PITCH
        step = position - previous
        if position >= words:
            counts["past_end"] += 1
        elif step == 1:
            counts["next"] += 1
        elif step == 0:
            counts["repeat"] += 1
        elif step > 1:
            counts["skip"] += 1
            counts["skipped_words"] += step - 1
        else:
            counts["back"] += 1
        previous = position
    return counts


def error_kinds(config, checkpoint: str | None, conditions: list[dict], seeds: int, temperature: float) -> dict:
    from pipeline.models.registry import load_song_model
    from pipeline.models.tiny.sampling import sample_songs
    from pipeline.models.tiny.song_model import SAMPLING_BATCH

    options = dict(config.model.options) | ({"checkpoint": checkpoint} if checkpoint else {})
    song_model = load_song_model("tiny", options)
    requests = [(c, seed) for c in conditions for seed in evaluation_seeds(config.seed, c["condition_id"], seeds)]
    counts, wers = collections.Counter(), []
    for start in range(0, len(requests), SAMPLING_BATCH):
        batch = requests[start : start + SAMPLING_BATCH]
        songs = sample_songs(song_model.model, [c for c, _ in batch], [s for _, s in batch], temperature=temperature,
                             top_k=config.sampling.top_k, top_p=config.sampling.top_p,
                             max_frames=song_model.options.max_frames)  # fmt: skip
        for (condition, _), tokens in zip(batch, songs):
            words = len(lyric_words(condition["lyric"]))
            counts += note_kinds(tokens["vocals"], words)
            counts["lyric_words"] += words
            wers.append(oracle_metrics(tokens, condition)["symbolic_wer"])
    notes = sum(counts[k] for k in KINDS)
    return {"songs": len(wers), "symbolic_wer": round(float(np.mean(wers)), 2), "notes": notes,
            **{k: counts[k] for k in (*KINDS, "skipped_words", "lyric_words")}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="NAME=FOLDER (a saved tiny policy) or NAME=default (the shipped checkpoint)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny.yaml")
    parser.add_argument("--temperatures", default="1.0")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/lyric-error-kinds"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lyric_error_kinds.json")
    args = parser.parse_args()
    models = dict(m.split("=", 1) for m in args.models)
    for name, folder in models.items():
        if folder != "default" and not (Path(folder) / "config.json").is_file():
            parser.error(f"model {name}: {folder} is not a saved model folder (no config.json)")
    config, load, started = load_config(args.config), os.getloadavg(), time.perf_counter()
    conditions = held_out_conditions(config, args.prompts, args.scratch)
    rows = []
    for name, folder in models.items():
        for temperature in (float(t) for t in args.temperatures.split(",")):
            row = {"model": name, "temperature": temperature,
                   **error_kinds(config, None if folder == "default" else folder, conditions, args.seeds, temperature)}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {"settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
              "wall_seconds": round(time.perf_counter() - started, 1),
              "load": load_span(load)}  # fmt: skip
    write_results(args.out, report)


if __name__ == "__main__":
    main()
