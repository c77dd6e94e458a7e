"""Benchmark: pocketsphinx decoder settings, their decoding time and how well their PER orders songs.

Every candidate's vocals stem of a round is transcribed once per setting (the round's in-domain
LM, `workers` processes) and scored for PER. Quality is read against the embedded world's sung
truth, the symbolic WER of each song's own tokens: Pearson over all songs, Spearman within
prompts (what pair building uses), and the share of same-prompt pairs at a PER gap of at least
20 that the truth orders the same way.

    .venv/bin/python benchmarks/asr_settings.py ROUND \\
        --setting 'before={"frame_downsample": 1, "second_pass": true}' --setting 'default={}'
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

from pipeline.conditions import round_conditions
from pipeline.manifest import finished_outputs
from pipeline.scoring.base import ScoringItem
from pipeline.scoring.pocketsphinx_asr import PocketsphinxOptions, PocketsphinxTranscriber
from pipeline.scoring.transcription import score_per
from pipeline.store import RoundStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pair_labels import candidate_oracles  # noqa: E402


def vocals_items(store: RoundStore) -> list[ScoringItem]:
    conditions = round_conditions(store)
    items = []
    for path in finished_outputs(store, "candidates"):
        for row in store.read_table(path).to_pylist():
            if row["error"] is None and row["vocals_uri"]:
                vocals = Path(store.path(row["vocals_uri"]))
                items.append(ScoringItem(row["candidate_id"], vocals, conditions[row["condition_id"]]["lyric"], "en", "",
                                         stems={"vocals": vocals}))  # fmt: skip
    return items


def quality(per: pd.Series, oracles: pd.DataFrame, gap: float = 20.0) -> dict:
    frame = oracles.join(per.rename("per"), how="inner")
    ranked = frame.groupby("prompt_id")[["per", "symbolic_wer"]].rank()
    ordered = total = 0
    for _, songs in frame.groupby("prompt_id"):
        for (_, a), (_, b) in itertools.combinations(songs.iterrows(), 2):
            if abs(a.per - b.per) >= gap and a.symbolic_wer != b.symbolic_wer:
                total += 1
                ordered += (a.per < b.per) == (a.symbolic_wer < b.symbolic_wer)
    return {"songs": len(frame), "pearson": round(float(frame["per"].corr(frame["symbolic_wer"])), 4),
            "spearman_within_prompts": round(float(ranked["per"].corr(ranked["symbolic_wer"])), 4),
            f"pairs_gap_{gap:g}": total, "ordered_as_truth": round(ordered / max(total, 1), 4),
            "mean_per": round(float(frame["per"].mean()), 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("round", type=Path)
    parser.add_argument("--setting", action="append", required=True, help="NAME=JSON of PocketsphinxOptions fields")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results") / "asr_settings.json")
    args = parser.parse_args()
    store = RoundStore(str(args.round))
    items, oracles = vocals_items(store), candidate_oracles(store)
    lyrics = sorted({c["lyric"] for c in round_conditions(store).values()})
    results = {"round": str(args.round), "load_before": os.getloadavg()[0], "settings": {}}
    for setting in args.setting:
        name, fields = setting.split("=", 1)
        options = PocketsphinxOptions.model_validate(json.loads(fields))
        asr = PocketsphinxTranscriber(options)
        start = time.perf_counter()
        rows = score_per(asr, items, lyrics)
        seconds = time.perf_counter() - start
        asr.close()
        per = pd.Series({i.candidate_id: r.get("per") for i, r in zip(items, rows)}, dtype=float)
        results["settings"][name] = {"options": options.model_dump(mode="json"), "seconds": round(seconds, 1),
                                     "seconds_per_song": round(seconds / len(items), 4), "load_after": os.getloadavg()[0],
                                     **quality(per, oracles)}  # fmt: skip
        print(name, json.dumps(results["settings"][name] | {"options": fields}), flush=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
