"""Controllability of DNI: along each edge of the weight simplex, does the metric of the preference
whose weight grows improve, monotonically?

Each edge (a, b) holds the grid points with weight only on a and b. Every point is merged and asked
for the same fresh songs as the oracle ablation (same held-out prompts, same seeds); per point,
the mean of each oracle metric with a 95 % bootstrap interval over prompts. An edge is read both
ways: as a's weight grows, a's own metric should rise (oriented: lower WER is better), and as b's
grows, b's. The figure of merit is Spearman's rho between the weight and the oriented metric over
the edge's points (+1: improves at every step). Tokens only, as the oracle ablation.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from alignment.sweep.grid import point_name, simplex_grid
from pipeline.models.tiny.oracle import ORACLE_METRICS


def edges(axes: list[str], step: float) -> dict[tuple[str, str], list[dict[str, float]]]:
    """(a, b) -> the grid points on that edge, ordered by a's weight (0 to 1)."""
    grid = simplex_grid(axes, step)
    out = {}
    for a, b in itertools.combinations(axes, 2):
        on_edge = [w for w in grid if all(w[s] == 0 for s in axes if s not in (a, b))]
        out[(a, b)] = sorted(on_edge, key=lambda w: w[a])
    return out


def sample_edges(config, store, conditions: list[dict], seeds: int, step: float, scratch: Path,
                 sampled: dict[str, pd.DataFrame], progress=None) -> pd.DataFrame:  # fmt: skip
    """One row per (edge point, prompt, seed) with its oracle metrics and weights (each point sampled
    once; a vertex is its DPO model, whose songs `sampled` (model name -> songs) already holds)."""
    from alignment.merge.stage import merge_point, trained_models
    from alignment.policy import policy_folder
    from alignment.sweep.oracle import sample_oracle
    from pipeline.preferences import preferences

    models = trained_models(store)
    axes = [s for s in preferences() if s in models]
    base = policy_folder(config.model.backend, config.model.options, config.dpo.policy)
    frames = {}
    for weights in (w for points in edges(axes, step).values() for w in points):
        name = point_name(weights)
        if name in frames:
            continue
        vertex = [s for s in axes if weights[s] == 1.0]
        if vertex and vertex[0] in sampled:
            songs = sampled[vertex[0]]
        else:
            folder = scratch / name
            shutil.rmtree(folder, ignore_errors=True)
            songs = sample_oracle(config, merge_point(store, models, weights, config.sweep.form, base, folder),
                                  conditions, seeds)  # fmt: skip
            shutil.rmtree(folder, ignore_errors=True)
            if progress:
                progress(f"sampled {name}")
        frames[name] = songs.assign(point=name, **{f"w_{s}": weights[s] for s in axes})
    return pd.concat(frames.values(), ignore_index=True)


def point_means(songs: pd.DataFrame, metric: str, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per point: mean of `metric` and a 95 % bootstrap interval over prompts."""
    rng = np.random.default_rng(seed)
    rows = []
    for point, frame in songs.groupby("point", sort=False):
        per_prompt = frame.groupby("prompt_id")[metric].mean().to_numpy()
        means = per_prompt[rng.integers(0, len(per_prompt), size=(resamples, len(per_prompt)))].mean(axis=1)
        rows.append({"point": point, "mean": per_prompt.mean(), "low": np.quantile(means, 0.025),
                     "high": np.quantile(means, 0.975)})  # fmt: skip
    return pd.DataFrame(rows).set_index("point")


def edge_table(songs: pd.DataFrame, axes: list[str], step: float, own: dict[str, tuple[str, ...]]) -> pd.DataFrame:
    """One row per (edge, growing preference, its metric): Spearman's rho of weight vs oriented metric,
    the metric at both ends of the edge and whether it improves at every step."""
    rows = []
    for (a, b), points in edges(axes, step).items():
        for grows in (a, b):
            for metric in own.get(grows, ()):
                means = point_means(songs, metric)
                ordered = sorted(points, key=lambda w: w[grows])
                values = np.array([means.at[point_name(w), "mean"] for w in ordered])
                oriented = values if ORACLE_METRICS[metric] else -values
                rho = _spearman(np.array([w[grows] for w in ordered]), oriented)
                rows.append({"edge": f"{a}–{b}", "grows": grows, "metric": metric, "points": len(ordered),
                             "spearman": float(rho), "monotone": bool(np.all(np.diff(oriented) > 0)),
                             "at_0": float(values[0]), "at_1": float(values[-1])})  # fmt: skip
    return pd.DataFrame(rows)


def _spearman(weights: np.ndarray, oriented: np.ndarray) -> float:
    """Spearman's rho; NaN for a flat metric (no evidence of control either way)."""
    return float("nan") if np.ptp(oriented) == 0 else float(spearmanr(weights, oriented).statistic)


def edge_markdown(table: pd.DataFrame) -> str:
    lines = ["| edge | weight that grows | its metric | points | Spearman ρ | improves at every step | at weight 0 → 1 |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for _, r in table.iterrows():
        lines.append(f"| {r['edge']} | {r['grows']} | {r['metric'].replace('_', ' ')} | {r['points']} | {r['spearman']:+.2f} | "
                     f"{'yes' if r['monotone'] else 'no'} | {r['at_0']:.3g} → {r['at_1']:.3g} |")  # fmt: skip
    return "\n".join(lines)


def edge_png(songs: pd.DataFrame, table: pd.DataFrame, axes: list[str], step: float,
             own: dict[str, tuple[str, ...]]) -> bytes:  # fmt: skip
    """One panel per (preference, its metric): the metric against that preference's weight along each
    of its edges, with 95 % intervals; the title gives each edge's Spearman's rho."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alignment.sweep.report import figure_png

    panels = [(p, m) for p in axes for m in own.get(p, ())]
    fig, grid = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), squeeze=False)
    for ax, (grows, metric) in zip(grid[0], panels):
        means = point_means(songs, metric)
        titles = []
        for (a, b), points in edges(axes, step).items():
            if grows not in (a, b):
                continue
            other = b if grows == a else a
            ordered = sorted(points, key=lambda w: w[grows])
            x = np.array([w[grows] for w in ordered])
            rows = means.loc[[point_name(w) for w in ordered]]
            ax.errorbar(x, rows["mean"], yerr=[rows["mean"] - rows["low"], rows["high"] - rows["mean"]], marker="o",
                        capsize=3, label=f"with {other}")  # fmt: skip
            rho = table[(table["edge"] == f"{a}–{b}") & (table["grows"] == grows) & (table["metric"] == metric)]["spearman"]
            titles.append(f"ρ={rho.iloc[0]:+.2f} with {other}")
        ax.set_xlabel(f"weight of {grows}")
        ax.set_ylabel(f"{metric.replace('_', ' ')} {'↑' if ORACLE_METRICS[metric] else '↓'}")
        ax.set_title(f"{grows}: " + ", ".join(titles), fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("DNI controllability along the simplex edges (mean, 95 % interval over prompts)", fontsize=9)
    fig.tight_layout()
    return figure_png(fig)
