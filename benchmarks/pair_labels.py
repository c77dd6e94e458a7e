"""Benchmark: do a round's preference pairs order the songs the way the embedded world's oracle does?

For every strategy's pairs (train and test), the share of pairs whose chosen song is better, equal
or worse than the rejected one on each oracle metric (symbolic WER, tempo and mode hit, the crowd's
hidden utility), read from the candidates' own tokens; and, over every candidate, the Spearman
correlation of each preference's score with each oracle metric within prompts. A DPO run cannot
teach what its labels do not carry: this is the first check when a preference does not move.

    .venv/bin/python benchmarks/pair_labels.py ROUND [--json benchmarks/results/pair_labels.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.conditions import round_conditions
from pipeline.config import RoundConfig
from pipeline.manifest import finished_outputs, read_manifest
from pipeline.models.tiny.oracle import ORACLE_METRICS, oracle_metrics
from pipeline.pairs.dataset import dataset_files
from pipeline.preferences import preferences, strategy_names
from pipeline.store import RoundStore


def candidate_oracles(store: RoundStore) -> pd.DataFrame:
    """One row per candidate with tokens: its prompt and every oracle metric."""
    conditions = round_conditions(store)
    rows = []
    for path in finished_outputs(store, "candidates"):
        for row in store.read_table(path).to_pylist():
            if row["error"] is None and row["tokens_uri"]:
                tokens = json.loads(store.read_bytes(row["tokens_uri"]))
                rows.append({"candidate_id": row["candidate_id"], "prompt_id": row["condition_id"],
                             **oracle_metrics(tokens, conditions[row["condition_id"]])})  # fmt: skip
    return pd.DataFrame(rows).set_index("candidate_id")


def label_agreement(store: RoundStore, oracles: pd.DataFrame, strategy: str) -> dict:
    """Per oracle metric: the share of pairs whose chosen song is better / equal / worse."""
    frames = [store.read_table(f).to_pandas() for f in dataset_files(strategy).values() if store.exists(f)]
    if not frames:
        return {"pairs": 0}
    pairs = pd.concat(frames, ignore_index=True)
    out = {"pairs": len(pairs)}
    for metric, higher_is_better in ORACLE_METRICS.items():
        diff = oracles.loc[pairs["chosen_id"], metric].to_numpy() - oracles.loc[pairs["rejected_id"], metric].to_numpy()
        diff = diff if higher_is_better else -diff
        out[metric] = {"better": float((diff > 0).mean()), "equal": float((diff == 0).mean()), "worse": float((diff < 0).mean())}
    return out


def score_correlations(store: RoundStore, oracles: pd.DataFrame, config) -> dict:
    """Spearman of each preference's score with each oracle metric over every scored candidate,
    ranks taken within prompts (a prompt's difficulty removed)."""
    from pipeline.stages.pairs import PairsStage

    scores = [p.score for p in preferences().values()]
    cands, _ = PairsStage(config, store).scored_candidates(scores, round_conditions(store))
    frame = cands.set_index("candidate_id")[scores].join(oracles, how="inner")
    ranked = frame.groupby("prompt_id").rank()
    out = {}
    for p in preferences().values():
        sign = 1.0 if p.higher_is_better else -1.0  # + : a better score goes with a better oracle value
        out[p.name] = {m: sign * float(ranked[p.score].corr(ranked[m])) * (1.0 if up else -1.0)
                       for m, up in ORACLE_METRICS.items()} | {"candidates": int(frame[p.score].notna().sum())}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("round", type=Path)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results") / "pair_labels.json")
    args = parser.parse_args()
    store = RoundStore(str(args.round))
    config = RoundConfig.model_validate(read_manifest(store)["config"])
    oracles = candidate_oracles(store)
    result = {"round": str(args.round), "candidates": len(oracles),
              "agreement": {s: label_agreement(store, oracles, s) for s in strategy_names()},
              "spearman_within_prompts": score_correlations(store, oracles, config)}  # fmt: skip
    print("| strategy | pairs | " + " | ".join(f"{m}: chosen better / equal / worse" for m in ORACLE_METRICS) + " |")
    print("|---|---|" + "---|" * len(ORACLE_METRICS))
    for strategy, row in result["agreement"].items():
        cells = [f"{row[m]['better']:.2f} / {row[m]['equal']:.2f} / {row[m]['worse']:.2f}" if m in row else "-"
                 for m in ORACLE_METRICS]  # fmt: skip
        print(f"| {strategy} | {row['pairs']} | " + " | ".join(cells) + " |")
    print("\nSpearman within prompts of each score with each oracle metric (+: the better score goes with the better oracle value):")
    for name, row in result["spearman_within_prompts"].items():
        print(f"  {name:<11} " + "  ".join(f"{m} {row[m]:+.2f}" for m in ORACLE_METRICS) + f"  ({row['candidates']} songs)")
    args.json.parent.mkdir(exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
