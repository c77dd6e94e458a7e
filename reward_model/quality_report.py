"""The quality-control report of a ranking campaign: quality.md (tables) and quality.png (plots).

`render_quality_report` returns the files as bytes, so a stage can write them through its round
store (atomically, local or remote); `write_quality_report` writes them into a local folder, each
through a temporary sibling and a rename, so a reader never sees half a report.
"""

from __future__ import annotations

import io
import math
import os
import uuid
from pathlib import Path

import pandas as pd

from reward_model.quality import QualityResult, QualityThresholds, assess

REPORT_FILE, PLOT_FILE = "quality.md", "quality.png"


def _number(value, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _markdown(result: QualityResult, thresholds: QualityThresholds, plot: str | None) -> str:
    a, table = result.alpha, result.annotators
    label = "SIMULATED crowd (embedded world): these are not human judgements. " if result.simulated else ""
    ci = f"[{_number(a['ci_low'], 3)}, {_number(a['ci_high'], 3)}]" if a["ci_low"] is not None else "(no interval)"
    lines = [
        "# Ranking quality" + (" (simulated)" if result.simulated else ""),
        "",
        f"{label}Krippendorff's alpha ({a['metric']} metric; units = task x candidate, values = ranks): "
        f"**{_number(a['alpha'], 3)}**, {a.get('confidence', 0.95):.0%} bootstrap interval over {a['tasks']} tasks "
        f"{ci} ({a.get('bootstrap_samples', 0)} resamples, {a['pairable_values']} pairable values).",
        "",
        f"Annotators: {len(table)}; excluded from training: **{len(result.excluded)}**"
        + (f" ({', '.join(result.excluded)})." if result.excluded else "."),
        "",
        "Thresholds: " + ", ".join(f"{k} = {v}" for k, v in thresholds.model_dump().items()) + ".",
        "",
        "| annotator | tasks | consensus agreement (pairs) | gold accuracy (tasks) | median s/task | speed z | flagged | reasons |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in table.itertuples(index=False):
        lines.append(
            f"| {row.annotator_id} | {row.tasks} | {_number(row.consensus_agreement)} ({row.consensus_pairs}) | "
            f"{_number(row.gold_accuracy)} ({row.gold_tasks}) | {_number(row.median_seconds, 1)} | "
            f"{_number(row.speed_z, 1)} | {'yes' if row.flagged else ''} | {'; '.join(row.reasons)} |"
        )
    lines += ["", f"![consensus agreement, gold accuracy and speed]({plot})" if plot else "(matplotlib missing: no plot)", ""]
    return "\n".join(lines)


def _plot(result: QualityResult, thresholds: QualityThresholds) -> bytes | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    table = result.annotators
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    for flagged, style in ((False, {"c": "tab:blue", "marker": "o", "label": "kept"}),
                           (True, {"c": "tab:red", "marker": "x", "label": "flagged"})):  # fmt: skip
        part = table[table["flagged"] == flagged]
        # an annotator without gold tasks sits at gold accuracy -0.05, below the axis's real range
        left.scatter(part["consensus_agreement"], part["gold_accuracy"].fillna(-0.05), **style)
    left.axvline(thresholds.min_consensus_agreement, color="grey", ls="--", lw=1)
    left.axhline(thresholds.min_gold_accuracy, color="grey", ls="--", lw=1)
    left.set(xlabel="consensus agreement", ylabel="gold accuracy", xlim=(0, 1.02), ylim=(-0.1, 1.05), title="annotators")
    left.legend(loc="lower right")
    seconds = table["median_seconds"].dropna()
    if len(seconds):
        right.hist(seconds, bins=min(20, max(5, len(seconds))), color="tab:blue")
        for s in table.loc[table["flagged"], "median_seconds"].dropna():
            right.axvline(s, color="tab:red", lw=1)
    right.set(xlabel="median seconds per task", ylabel="annotators", title="speed (red: flagged)")
    if result.simulated:
        fig.suptitle("SIMULATED crowd")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def render_quality_report(result: QualityResult, thresholds: QualityThresholds) -> dict[str, bytes]:
    """{file name: bytes}: quality.md, and quality.png when matplotlib is installed."""
    plot = _plot(result, thresholds)
    files = {REPORT_FILE: _markdown(result, thresholds, PLOT_FILE if plot else None).encode("utf-8")}
    if plot:
        files[PLOT_FILE] = plot
    return files


def write_quality_report(rankings: pd.DataFrame, thresholds: QualityThresholds | None,
                         out_dir: Path | str) -> QualityResult:  # fmt: skip
    """Assess the rankings and write quality.md and quality.png into out_dir, each atomically."""
    thresholds = thresholds or QualityThresholds()
    result = assess(rankings, thresholds)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in render_quality_report(result, thresholds).items():
        scratch = out_dir / f".tmp-{uuid.uuid4().hex}-{name}"
        scratch.write_bytes(data)
        os.replace(scratch, out_dir / name)
    return result
