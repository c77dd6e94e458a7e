"""Quality control of crowd rankings: how reliable the campaign is, and which annotators to drop.

Reliability. Krippendorff's alpha with the ORDINAL metric over units = (task, candidate) and
values = the rank an annotator gave that candidate in that task. Alpha handles missing data (an
annotator ranks only some tasks) and any number of annotators per unit; it is computed from the
coincidence matrix o_ck (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability"):

    o_ck = sum_u  (number of c-k pairs of values in unit u, from different annotators) / (m_u - 1)
    alpha = 1 - (n - 1) * sum_ck o_ck d2_ck / sum_ck n_c n_k d2_ck

with n_c = sum_k o_ck, n = sum_c n_c, and the ordinal d2_ck = (sum_{g=c..k} n_g - (n_c + n_k)/2)^2.
Each task's coincidences are summed once, so a bootstrap over tasks (the independent units of
a campaign: a task's candidates are ranked together) is a matrix product per resample.

Annotators. Each one is judged on what a spammer cannot fake:
* consensus agreement: over the candidate pairs of each task they ranked, the share they order
  like the mean rank the *other* annotators gave the same task (pairs tied on either side skipped);
* gold accuracy (`rankings.gold_accuracy`): the known-best candidate ranked first alone;
* speed: a robust z of their median log seconds per task against every ranking's log seconds
  (median and MAD), so one fast task does not count, a habit of clicking through does.
A check is only applied with enough evidence (`min_tasks`, `min_gold_tasks`); `QualityThresholds`
holds every threshold, and a threshold of 0 turns its check off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from reward_model.rankings import gold_accuracy
from reward_model.options import QualityThresholds  # noqa: F401 (defined with the config section)

METRICS = ("nominal", "ordinal", "interval")
ANNOTATOR_COLUMNS = ["annotator_id", "tasks", "gold_tasks", "gold_accuracy", "consensus_pairs",
                     "consensus_agreement", "median_seconds", "speed_z", "flagged", "reasons"]  # fmt: skip


# ---------------------------------------------------------------- Krippendorff's alpha


def _distances(n_c: np.ndarray, metric: str, values: np.ndarray) -> np.ndarray:
    """d2_ck for every pair of values; n_c may carry leading (bootstrap) axes: (..., V) -> (..., V, V)."""
    if metric == "nominal":
        return np.broadcast_to(1.0 - np.eye(len(values)), n_c.shape + (len(values),))
    if metric == "interval":
        return np.broadcast_to((values[:, None] - values[None, :]) ** 2, n_c.shape + (len(values),))
    if metric == "ordinal":
        # sum_{g=c..k} n_g - (n_c + n_k)/2 = cum_k - cum_c + (n_c - n_k)/2, for c <= k and (negated) c > k
        cum = np.cumsum(n_c, axis=-1)
        return (cum[..., None, :] - cum[..., :, None] + (n_c[..., :, None] - n_c[..., None, :]) / 2) ** 2
    raise ValueError(f"unknown alpha metric {metric!r}; use one of {METRICS}")


def alpha_from_coincidences(o: np.ndarray, values: np.ndarray, metric: str = "ordinal") -> np.ndarray:
    """Alpha from coincidence matrices o (..., V, V) over sorted distinct `values`; NaN where undefined."""
    n_c = o.sum(axis=-1)
    n = n_c.sum(axis=-1)
    d2 = _distances(n_c, metric, np.asarray(values, dtype=float))
    observed = (o * d2).sum(axis=(-2, -1))
    expected = (n_c[..., :, None] * n_c[..., None, :] * d2).sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(expected > 0, 1.0 - (n - 1) * observed / expected, np.nan)


def unit_coincidences(units: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Long-form data (one row per value: its unit label and value) -> (unit labels, per-unit
    coincidence matrices (U, V, V), sorted distinct values). Units with one value add nothing."""
    unit_labels, unit_index = np.unique(np.asarray(units), return_inverse=True)
    value_labels, value_index = np.unique(np.asarray(values, dtype=float), return_inverse=True)
    counts = np.zeros((len(unit_labels), len(value_labels)))
    np.add.at(counts, (unit_index, value_index), 1.0)
    m = counts.sum(axis=1)
    pairs = counts[:, :, None] * counts[:, None, :] - counts[:, :, None] * np.eye(len(value_labels))
    with np.errstate(divide="ignore", invalid="ignore"):
        o = np.where((m >= 2)[:, None, None], pairs / (m - 1)[:, None, None], 0.0)
    return unit_labels, o, value_labels


def krippendorff_alpha(data, metric: str = "ordinal") -> float:
    """Alpha of a reliability matrix (observers x units; NaN or None = missing), e.g. the worked
    examples of Krippendorff (2011)."""
    matrix = np.asarray(pd.DataFrame(data).astype(float))
    observer, unit = np.nonzero(~np.isnan(matrix))
    _, o, values = unit_coincidences(unit, matrix[observer, unit])
    return float(alpha_from_coincidences(o.sum(axis=0), values, metric))


def _rank_values(rankings: pd.DataFrame) -> pd.DataFrame:
    """One row per (annotator, task, candidate) with its rank."""
    long = rankings[["annotator_id", "task_id", "candidate_ids", "ranks"]].explode(["candidate_ids", "ranks"])
    long = long.rename(columns={"candidate_ids": "candidate_id", "ranks": "rank"}).dropna(subset=["candidate_id"])
    return long.astype({"rank": float}).reset_index(drop=True)


def campaign_alpha(rankings: pd.DataFrame, thresholds: QualityThresholds | None = None, metric: str = "ordinal") -> dict:
    """Krippendorff's alpha of the rankings (units = task x candidate, values = ranks) and its
    bootstrap interval from resampling tasks with replacement."""
    t = thresholds or QualityThresholds()
    long = _rank_values(rankings)
    if long.empty:
        return {"alpha": None, "ci_low": None, "ci_high": None, "metric": metric, "tasks": 0, "pairable_values": 0}
    units, o, values = unit_coincidences(long["task_id"] + "\x1f" + long["candidate_id"].astype(str), long["rank"])
    task_labels, task_index = np.unique([u.split("\x1f")[0] for u in units], return_inverse=True)
    per_task = np.zeros((len(task_labels),) + o.shape[1:])
    np.add.at(per_task, task_index, o)
    alpha = alpha_from_coincidences(per_task.sum(axis=0), values, metric)
    low = high = None
    if t.bootstrap_samples and len(task_labels) > 1:
        rng = np.random.default_rng(t.seed)
        draws = rng.integers(0, len(task_labels), size=(t.bootstrap_samples, len(task_labels)))
        weights = np.stack([np.bincount(d, minlength=len(task_labels)) for d in draws]).astype(float)
        boot = alpha_from_coincidences(np.einsum("bt,tvw->bvw", weights, per_task), values, metric)
        boot = boot[np.isfinite(boot)]
        if len(boot):
            tail = (1.0 - t.confidence) / 2 * 100
            low, high = (float(q) for q in np.percentile(boot, [tail, 100 - tail]))
    return {"alpha": None if np.isnan(alpha) else float(alpha), "ci_low": low, "ci_high": high, "metric": metric,
            "confidence": t.confidence, "bootstrap_samples": t.bootstrap_samples, "tasks": len(task_labels),
            "pairable_values": int(round(float(per_task.sum())))}  # fmt: skip


# ---------------------------------------------------------------- annotators


def consensus_agreement(rankings: pd.DataFrame) -> pd.DataFrame:
    """Per annotator: pairs judged and the share ordered like the others' mean rank on the same task."""
    long = _rank_values(rankings)
    totals = long.groupby(["task_id", "candidate_id"])["rank"].agg(["sum", "count"]).reset_index()
    long = long.merge(totals, on=["task_id", "candidate_id"])
    long = long[long["count"] > 1]
    long = long.assign(others=(long["sum"] - long["rank"]) / (long["count"] - 1))[
        ["annotator_id", "task_id", "candidate_id", "rank", "others"]
    ]
    pairs = long.merge(long, on=["annotator_id", "task_id"], suffixes=("_a", "_b"))
    pairs = pairs[pairs["candidate_id_a"] < pairs["candidate_id_b"]]
    own = np.sign(pairs["rank_a"] - pairs["rank_b"]).to_numpy()
    others = np.sign(pairs["others_a"] - pairs["others_b"]).to_numpy()
    judged = (own != 0) & (others != 0)
    frame = pd.DataFrame({"annotator_id": pairs["annotator_id"].to_numpy()[judged], "agree": own[judged] == others[judged]})
    out = frame.groupby("annotator_id")["agree"].agg(consensus_pairs="size", consensus_agreement="mean").reset_index()
    return out.astype({"consensus_pairs": int, "consensus_agreement": float})


def speed(rankings: pd.DataFrame) -> pd.DataFrame:
    """Per annotator: median seconds per task and the robust z of their median log seconds."""
    seconds = pd.to_numeric(rankings["duration_s"], errors="coerce")
    timed = rankings.assign(log_s=np.log(seconds.where(seconds > 0)))
    timed = timed[np.isfinite(timed["log_s"])]
    if timed.empty:
        return pd.DataFrame(columns=["annotator_id", "median_seconds", "speed_z"])
    centre = float(timed["log_s"].median())
    spread = 1.4826 * float((timed["log_s"] - centre).abs().median())  # MAD, scaled to a normal sd
    per = timed.groupby("annotator_id")["log_s"].median()
    z = (per - centre) / spread if spread > 0 else per * np.nan
    return pd.DataFrame({"annotator_id": per.index, "median_seconds": np.exp(per.to_numpy()), "speed_z": z.to_numpy()})


def _reasons(row, t: QualityThresholds) -> list[str]:
    reasons = []
    if row.gold_tasks >= t.min_gold_tasks and row.gold_accuracy < t.min_gold_accuracy:
        reasons.append(f"gold accuracy {row.gold_accuracy:.2f} < {t.min_gold_accuracy:.2f} on {row.gold_tasks} gold tasks")
    if row.tasks >= t.min_tasks and row.consensus_pairs > 0 and row.consensus_agreement < t.min_consensus_agreement:
        reasons.append(f"consensus agreement {row.consensus_agreement:.2f} < {t.min_consensus_agreement:.2f} "
                       f"on {row.consensus_pairs} pairs")  # fmt: skip
    if row.tasks >= t.min_tasks and t.max_speed_z and np.isfinite(row.speed_z) and row.speed_z < -t.max_speed_z:
        reasons.append(f"too fast: median {row.median_seconds:.1f} s per task, robust z {row.speed_z:.1f} < -{t.max_speed_z:g}")
    if row.tasks >= t.min_tasks and t.min_seconds_per_task and row.median_seconds < t.min_seconds_per_task:
        reasons.append(f"too fast: median {row.median_seconds:.1f} s per task < {t.min_seconds_per_task:g} s")
    return reasons


def annotator_quality(rankings: pd.DataFrame, thresholds: QualityThresholds | None = None) -> pd.DataFrame:
    """One row per annotator (ANNOTATOR_COLUMNS): the evidence, `flagged`, and the `reasons` (a list)."""
    t = thresholds or QualityThresholds()
    missing = {"annotator_id", "task_id", "candidate_ids", "ranks"} - set(rankings.columns)
    if missing:
        raise ValueError(f"rankings lack columns {sorted(missing)}")
    rankings = rankings.assign(**{k: v for k, v in {"is_gold": False, "gold_answer": None, "duration_s": np.nan}.items()
                                  if k not in rankings.columns})  # fmt: skip
    table = rankings.groupby("annotator_id").size().rename("tasks").reset_index()
    for part in (gold_accuracy(rankings), consensus_agreement(rankings), speed(rankings)):
        table = table.merge(part, on="annotator_id", how="left")
    table = table.fillna({"gold_tasks": 0, "consensus_pairs": 0}).astype({"gold_tasks": int, "consensus_pairs": int})
    table[["gold_accuracy", "consensus_agreement", "median_seconds", "speed_z"]] = table[
        ["gold_accuracy", "consensus_agreement", "median_seconds", "speed_z"]
    ].astype(float)
    table["reasons"] = [_reasons(row, t) for row in table.itertuples(index=False)]
    table["flagged"] = table["reasons"].map(bool)
    return table[ANNOTATOR_COLUMNS].sort_values("annotator_id").reset_index(drop=True)


@dataclass
class QualityResult:
    """What quality control found: the campaign's alpha, the per-annotator table, who is excluded."""

    alpha: dict
    annotators: pd.DataFrame
    excluded: list[str] = field(default_factory=list)
    simulated: bool = False

    def reasons(self) -> dict[str, list[str]]:
        flagged = self.annotators[self.annotators["flagged"]]
        return dict(zip(flagged["annotator_id"], flagged["reasons"]))

    def metrics(self) -> dict:
        """The figures a stage puts in its manifest record."""
        return {"alpha_ordinal": self.alpha["alpha"], "alpha_ci": [self.alpha["ci_low"], self.alpha["ci_high"]],
                "annotators": len(self.annotators), "annotators_excluded": len(self.excluded),
                "excluded_annotators": self.excluded, "exclusion_reasons": self.reasons()}  # fmt: skip


def assess(rankings: pd.DataFrame, thresholds: QualityThresholds | None = None) -> QualityResult:
    """Alpha with its interval over every ranking, and the annotators flagged by `thresholds`."""
    t = thresholds or QualityThresholds()
    annotators = annotator_quality(rankings, t)
    simulated = bool("simulated" in rankings.columns and len(rankings) and rankings["simulated"].astype(bool).all())
    excluded = sorted(annotators.loc[annotators["flagged"], "annotator_id"])
    return QualityResult(campaign_alpha(rankings, t), annotators, excluded, simulated)


def drop_flagged(rankings: pd.DataFrame, result: QualityResult) -> pd.DataFrame:
    """The rankings of the annotators quality control kept."""
    return rankings[~rankings["annotator_id"].isin(result.excluded)].reset_index(drop=True)
