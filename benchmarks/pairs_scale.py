"""Benchmark: every pair strategy on a synthetic scored-candidates table of realistic shape.

Builds `--prompts` x `--per-prompt` candidates (default 125,000 x 8 = 1,000,000) with a seed:
PER, similarity and reward drawn per candidate around a per-prompt level (so thresholds select
a realistic share), 1% NaN per score, genres and languages unevenly mixed. Times each strategy
(input checks and output table included) and prints one row per strategy, with the load average,
since the figures on a shared machine mean little without it.

    .venv/bin/python benchmarks/pairs_scale.py [--prompts 125000] [--per-prompt 8] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

from pipeline.pairs import STRATEGIES, PairOptions, SelectionOptions

GENRES = ("pop", "rock", "folk", "jazz", "electronic", "hip-hop", "country", "classical")
GENRE_WEIGHTS = (0.3, 0.2, 0.12, 0.1, 0.1, 0.08, 0.06, 0.04)


def scored_table(prompts: int, per_prompt: int, seed: int) -> pd.DataFrame:
    """A seeded table with the columns the strategies read, rows in shuffled order."""
    rng = np.random.default_rng(seed)
    n = prompts * per_prompt
    prompt = np.repeat(np.arange(prompts), per_prompt)
    genre = rng.choice(len(GENRES), size=prompts, p=GENRE_WEIGHTS)[prompt]
    language = (rng.random(prompts) < 0.3)[prompt]

    def score(level_sd: float, noise_sd: float, centre: float) -> np.ndarray:
        values = centre + rng.normal(0, level_sd, prompts)[prompt] + rng.normal(0, noise_sd, n)
        values[rng.random(n) < 0.01] = np.nan
        return values

    frame = pd.DataFrame({
        "candidate_id": [f"c{p:06d}-{j}" for p in range(prompts) for j in range(per_prompt)],
        "prompt_id": pd.Series(prompt).map("p{:06d}".format),
        "genre": np.asarray(GENRES, dtype=object)[genre],
        "language": np.where(language, "zh", "en"),
        "per": np.clip(score(15, 25, 35), 0, None),
        "similarity": score(0.08, 0.12, 0.5),
        "reward": score(0.8, 1.0, 0.0),
    })
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=125_000)
    parser.add_argument("--per-prompt", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="runs per strategy; the table shows the fastest")
    parser.add_argument("--max-group-share", type=float, default=None, help="turn the balance rule on")
    args = parser.parse_args()

    started = time.perf_counter()
    table = scored_table(args.prompts, args.per_prompt, args.seed)
    print(f"table: {len(table):,} candidates, {args.prompts:,} prompts, built in {time.perf_counter() - started:.1f} s")
    options = PairOptions(selection=SelectionOptions(max_group_share=args.max_group_share))
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  (cores: {os.cpu_count()})")
    print(f"{'strategy':<11} {'seconds':>8} {'before':>10} {'out':>10} {'train':>10} {'test':>8}")
    for name, strategy in STRATEGIES.items():
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            pairs, stats = strategy(table, options, args.seed)
            times.append(time.perf_counter() - t0)
        before = (sum(s["pairs_before_selection"] for s in stats["strategies"].values())
                  if name == "joint" else stats["pairs_before_selection"])
        split = stats["per_split"]
        print(f"{name:<11} {min(times):>8.2f} {before:>10,} {len(pairs):>10,} "
              f"{split['train']['pairs']:>10,} {split['test']['pairs']:>8,}")
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
