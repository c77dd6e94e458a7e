"""The interpolation sweep's arithmetic: simplex grids, Pareto fronts, hypervolume, a chosen point.

`sweep(points, evaluate)` evaluates each weight vector (lazily: `evaluate` merges and scores
one point) and returns the results table; the rest are pure functions of that table. Metrics
(one per preference) are oriented so that larger is better before any comparison (PER is negated).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from fractions import Fraction

import moocore
import numpy as np
import pandas as pd

from alignment.sweep.evaluate import metric_directions
from alignment.sweep.paired import simultaneous_differences


def simplex_grid(strategies: list[str], step: float) -> list[dict[str, float]]:
    """Every weight vector over `strategies` with components in multiples of `step`, summing to 1."""
    n = round(1 / step)
    if n < 1 or abs(n * step - 1) > 1e-9:
        raise ValueError(f"sweep.step: {step} must divide 1 (e.g. 0.5, 0.25, 0.2)")
    if len(strategies) < 2:
        raise ValueError(f"sweep.strategies: need at least two to interpolate, got {strategies}")
    points = []
    for combo in itertools.product(range(n + 1), repeat=len(strategies) - 1):
        if sum(combo) <= n:
            parts = (*combo, n - sum(combo))
            points.append({s: float(Fraction(k, n)) for s, k in zip(strategies, parts)})
    return sorted(points, key=lambda w: tuple(-w[s] for s in strategies))


def point_name(weights: dict[str, float]) -> str:
    """A stable, readable name: 'lyrics0.50-prompt0.50-musicality0.00'."""
    return "-".join(f"{s}{w:.2f}" for s, w in weights.items())


def sweep(points: dict[str, dict], evaluate: Callable[[str, dict], dict]) -> pd.DataFrame:
    """Evaluate every named point ({name: spec}); `evaluate(name, spec)` returns its metrics
    ({metric: {mean, low, high}, ...}). One row per point: name, spec fields, metric means and intervals."""
    rows = []
    for name, spec in points.items():
        result = evaluate(name, spec)
        row = {"point": name, **{f"w_{k}": v for k, v in spec.get("weights", {}).items()}, "kind": spec["kind"]}
        for metric in metric_directions():
            stats = result.get(metric) or {}
            row |= {metric: stats.get("mean"), f"{metric}_low": stats.get("low"), f"{metric}_high": stats.get("high")}
        row |= {"songs": result.get("songs"), "failed": result.get("failed")}
        rows.append(row)
    return pd.DataFrame(rows)


def oriented(frame: pd.DataFrame) -> np.ndarray:
    """[points, metrics] with larger = better (a lower-is-better metric such as PER negated)."""
    return np.stack([frame[m].to_numpy(dtype=float) * (1 if up else -1) for m, up in metric_directions().items()], axis=1)


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """True for points no other point dominates (>= everywhere, > somewhere); NaN rows are never on it.
    Equal points do not dominate each other, so duplicates stay on the front together."""
    finite = np.isfinite(values).all(axis=1)
    mask = np.zeros(len(values), dtype=bool)
    if finite.any():
        mask[finite] = moocore.is_nondominated(values[finite], maximise=True, keep_weakly=True)
    return mask


def hypervolume(values: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by the points and bounded below by `reference` (maximisation), exact
    (moocore: O(n log n) in 2-D and 3-D). Rows with NaN and points not above the reference everywhere add nothing."""
    points = values[np.isfinite(values).all(axis=1)]
    points = points[(points > reference).all(axis=1)]
    if len(points) == 0:
        return 0.0
    return float(moocore.hypervolume(points, ref=reference, maximise=True))


def normalised(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    span = np.where(high > low, high - low, 1.0)
    return (values - low) / span


def choose(frame: pd.DataFrame, utility: dict[str, float], songs: dict[str, pd.DataFrame] | None = None,
           keep: str | None = None) -> tuple[str, np.ndarray, dict[str, dict]]:
    """The chosen point, every point's utility Σ wₘ · (metric m scaled to [0, 1] over the sweep's
    point means, larger = better), and every point's paired utility difference from `keep`.

    keep None: the point of highest utility. Else `keep` stays chosen unless some point's songs
    beat its songs (the same prompts and seeds) with an interval over prompts clear of zero, the
    intervals 95 % for all the points together (`simultaneous_differences`); of those that do, the
    one of highest utility. A handful of songs a point cannot tell small differences apart, and
    the point of highest mean is then mostly the luckiest one."""
    values = oriented(frame)
    low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    weights = np.array([utility.get(m, 0.0) for m in metric_directions()])
    scores = np.where(np.isfinite(values).all(axis=1), normalised(values, low, high) @ weights, -np.inf)
    names = [str(name) for name in frame["point"]]
    if keep is None:
        return names[int(np.argmax(scores))], scores, {}
    if keep not in names or songs is None:
        raise ValueError(f"sweep.keep: point {keep!r} was not evaluated; points: {', '.join(names)}")
    scaled = {name: songs[name].assign(utility=song_utility(songs[name], low, high, weights)) for name in names}
    others = {name: points for name, points in scaled.items() if name != keep}
    against = {keep: {"diff": 0.0, "low": 0.0, "high": 0.0, "songs": int(scaled[keep]["utility"].notna().sum())}}
    against |= simultaneous_differences(others, scaled[keep], "utility")
    better = [i for i, name in enumerate(names) if against[name]["low"] > 0]
    chosen = names[max(better, key=lambda i: scores[i])] if better else keep
    return chosen, scores, against


def song_utility(songs: pd.DataFrame, low: np.ndarray, high: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each song's utility on the sweep's scale (that of `choose`); NaN where a metric is missing."""
    values = np.stack([songs[m].to_numpy(dtype=float) * (1 if up else -1) for m, up in metric_directions().items()], axis=1)
    return normalised(values, low, high) @ weights
