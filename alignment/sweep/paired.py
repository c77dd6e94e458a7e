"""Paired comparison of two policies' songs: the same (prompt, seed) songs, differences averaged
within each prompt, a 95 % bootstrap interval over prompts (songs of one prompt are not independent)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def paired_songs(model: pd.DataFrame, base: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The model's and base's songs joined on (prompt, seed), songs a scorer failed on left out."""
    joined = model.merge(base, on=["prompt_id", "seed"], suffixes=("", "_base"))
    return joined[joined[metric].notna() & joined[f"{metric}_base"].notna()]


def per_prompt_differences(joined: pd.DataFrame, metric: str) -> np.ndarray:
    """Model minus base, averaged over each prompt's seeds, in prompt order (songs of one prompt are
    not independent, so prompts are what an interval resamples)."""
    return (joined[metric] - joined[f"{metric}_base"]).groupby(joined["prompt_id"]).mean().sort_index().to_numpy()


def paired_difference(model: pd.DataFrame, base: pd.DataFrame, metric: str, resamples: int = 2000,
                      seed: int = 0) -> dict:  # fmt: skip
    """Mean of `metric` for the model and its difference from base over the same (prompt, seed)
    songs, with a 95 % bootstrap interval over prompts."""
    joined = paired_songs(model, base, metric)
    per_prompt = per_prompt_differences(joined, metric)
    rng = np.random.default_rng(seed)
    means = per_prompt[rng.integers(0, len(per_prompt), size=(resamples, len(per_prompt)))].mean(axis=1)
    return {"mean": float(joined[metric].mean()), "diff": float(per_prompt.mean()),
            "low": float(np.quantile(means, 0.025)), "high": float(np.quantile(means, 0.975)), "songs": len(joined)}  # fmt: skip


def simultaneous_differences(models: dict[str, pd.DataFrame], reference: pd.DataFrame, metric: str,
                             level: float = 0.95) -> dict[str, dict]:  # fmt: skip
    """Each model's paired difference from `reference`, with Student-t intervals over prompts that
    hold for all the models at once (Bonferroni over the models). A rule that leaves the reference
    when any one of several comparisons clears zero needs them covered together, and a sweep's
    8 prompts are too few for a bootstrap's percentiles, which then cover less than they say."""
    from scipy.stats import t

    out = {}
    for name, frame in models.items():
        joined = paired_songs(frame, reference, metric)
        per_prompt = per_prompt_differences(joined, metric)
        n = len(per_prompt)
        diff = float(per_prompt.mean()) if n else float("nan")
        half = float("nan")  # one prompt or none: no interval, so no point clears zero
        if n > 1:
            half = float(t.ppf(1 - (1 - level) / (2 * len(models)), n - 1) * per_prompt.std(ddof=1) / np.sqrt(n))
        out[name] = {"diff": diff, "low": diff - half, "high": diff + half, "songs": len(joined)}
    return out
