"""The sweep's outputs: results table, Pareto front, hypervolume, chosen point, plots, report.md.

The ablation table (the paper's rows in miniature) is part of the report and can be pasted
into a README between `<!-- ablation:start -->` and `<!-- ablation:end -->` by `update_readme`.
"""

from __future__ import annotations

import io
import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd

from alignment.sweep.evaluate import metric_directions, summarize
from alignment.sweep.grid import choose, hypervolume, normalised, oriented, pareto_mask, sweep
from pipeline.preferences import JOINT, preferences

START, END = "<!-- ablation:start -->", "<!-- ablation:end -->"
KEPT_COLUMNS = ("utility_vs_kept", "utility_vs_kept_low", "utility_vs_kept_high")


def ablation_rows() -> dict[str, str]:
    """The paper's rows: label -> sweep point (a preference's name stands for its simplex vertex)."""
    return {"w/o DPO": "base", **{f"{name} only": name for name in preferences()}, "joint": JOINT, "DNI": "dni"}


def metric_labels() -> dict[str, str]:
    """Metric -> its column head with direction ("PER ↓")."""
    return {p.score: p.metric_label for p in preferences().values()}


def write_sweep_report(store, points: dict, songs: dict[str, pd.DataFrame], options) -> dict:
    """Writes sweep/results.parquet, pareto.png, simplex.png, report.md; returns the stage metrics."""
    import pyarrow as pa

    frame = sweep({n: s for n, s in points.items() if n in songs}, lambda name, spec: summarize(songs[name]))
    values = oriented(frame)
    frame["pareto"] = pareto_mask(values)
    chosen, utility, against = choose(frame, options.utility, songs, options.keep)
    frame["utility"] = utility
    for column, key in zip(KEPT_COLUMNS, ("diff", "low", "high")):
        frame[column] = [against[name][key] if against else np.nan for name in frame["point"]]
    scaled = normalised(values, np.nanmin(values, axis=0), np.nanmax(values, axis=0))
    volume = hypervolume(scaled[frame["pareto"].to_numpy()], np.zeros(values.shape[1]) - 1e-9)
    store.write_table("sweep/results.parquet", pa.Table.from_pandas(frame, preserve_index=False))
    store.write_bytes("sweep/pareto.png", _pareto_png(frame, chosen))
    grid = frame[frame["kind"] == "grid"]
    axes = [c.removeprefix("w_") for c in frame.columns if c.startswith("w_")]
    if len(axes) == 3 and len(grid):
        store.write_bytes("sweep/simplex.png", _simplex_png(grid, axes))
    table = ablation_table(frame, axes)
    store.write_bytes("sweep/report.md", _report(frame, table, chosen, volume, options).encode("utf-8"))
    return {"points": len(frame), "pareto_points": int(frame["pareto"].sum()), "hypervolume": volume,
            "chosen": chosen, "ablation": table}  # fmt: skip


def ablation_table(frame: pd.DataFrame, axes: list[str]) -> str:
    """Markdown: the paper's ablation rows, mean [95 % interval] per metric."""
    by_name = frame.set_index("point")
    metrics, labels = list(metric_directions()), metric_labels()
    lines = ["| model | " + " | ".join(labels[m] for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for label, key in ablation_rows().items():
        name = key if key in by_name.index else _vertex(by_name, axes, key)
        if name is None:
            lines.append(f"| {label} | " + " | ".join("not trained" for _ in metrics) + " |")
            continue
        row = by_name.loc[name]
        cells = [f"{row[m]:.3g} [{row[f'{m}_low']:.3g}, {row[f'{m}_high']:.3g}]" if pd.notna(row[m]) else "—" for m in metrics]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def update_readme(readme: Path, table: str, note: str) -> None:
    """Replace the README's ablation section (between the markers) with `table` and `note`."""
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise ValueError(f"{readme}: no ablation section ({START} ... {END})")
    block = f"{START}\n{table}\n\n{note}\n{END}"
    readme.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S), encoding="utf-8")


def _vertex(by_name: pd.DataFrame, axes: list[str], strategy: str) -> str | None:
    if strategy not in axes:
        return None
    for name, row in by_name.iterrows():
        if row["kind"] == "grid" and all(row[f"w_{s}"] == (1.0 if s == strategy else 0.0) for s in axes):
            return name
    return None


def _report(frame: pd.DataFrame, table: str, chosen: str, volume: float, options) -> str:
    shown = frame[["point", "kind", *metric_directions(), "pareto", "utility", *KEPT_COLUMNS, "songs", "failed"]].copy()
    rule = ("the point of highest utility" if options.keep is None else
            f"{options.keep}, unless a point's songs beat its songs in utility with a paired interval over prompts "
            "clear of zero, the intervals 95 % for all points together (Student t, Bonferroni; columns "
            "utility_vs_kept); then the point of highest utility among those")
    lines = ["# Interpolation sweep", "",
             f"Points: {len(frame)} (grid step {options.step}, form {options.form}); songs per point: "
             f"{options.prompts} held-out prompts x {options.seeds} seeds, the same for every point.",
             f"Pareto front: {int(frame['pareto'].sum())} points; hypervolume {volume:.4f} (metrics scaled to [0, 1] "
             "over the sweep, reference at the worst value of each).",
             f"Chosen point (utility weights {options.utility}; {rule}): **{chosen}**.", "",
             "## Ablation", "", table, "",
             "Mean over the songs scored, [95 % bootstrap interval over those songs].", "",
             "## Every point", "", _markdown(shown), "", "![Pareto fronts](pareto.png)"]  # fmt: skip
    if len([c for c in frame.columns if c.startswith("w_")]) == 3:
        lines.append("![Simplex](simplex.png)")
    return "\n".join(lines) + "\n"


def _markdown(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |"
    rows = ["| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]  # fmt: skip
    return "\n".join([head, "|" + "---|" * len(frame.columns), *rows])


def figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _short(weights: dict[str, float]) -> str:
    """A grid point's weights in a few characters: 'l.5 p.5 m0'."""
    return " ".join(f"{name[0]}{w:.2g}".replace("0.", ".") for name, w in weights.items())


def _pareto_png(frame: pd.DataFrame, chosen: str) -> bytes:
    """One panel per pair of metrics: every point with its 95 % interval on both axes and its
    weights written beside it; base, joint, DNI and the chosen point marked on every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = metric_labels()
    pairs = list(itertools.combinations(labels, 2))
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.6), squeeze=False)
    weights = [c for c in frame.columns if c.startswith("w_")]
    styles = {"grid": ("o", "tab:blue"), "named": ("*", "tab:purple"), "base": ("s", "tab:gray"), "joint": ("D", "tab:orange")}
    for ax, (x, y) in zip(axes[0], pairs):
        for kind, (marker, colour) in styles.items():
            part = frame[frame["kind"] == kind]
            if part.empty:
                continue
            xerr = [part[x] - part[f"{x}_low"], part[f"{x}_high"] - part[x]]
            yerr = [part[y] - part[f"{y}_low"], part[f"{y}_high"] - part[y]]
            ax.errorbar(part[x], part[y], xerr=xerr, yerr=yerr, fmt=marker, color=colour, ecolor=colour, elinewidth=0.6,
                        alpha=0.85, capsize=2, markersize=7, label=kind)  # fmt: skip
            for _, row in part.iterrows():
                text = _short({w.removeprefix("w_"): row[w] for w in weights}) if kind == "grid" else row["point"]
                ax.annotate(text, (row[x], row[y]), fontsize=6, xytext=(4, 3), textcoords="offset points")
        front = frame[frame["pareto"]]
        ax.scatter(front[x], front[y], s=150, facecolors="none", edgecolors="red", linewidths=1, label="Pareto front")
        pick = frame[frame["point"] == chosen]
        ax.scatter(pick[x], pick[y], s=320, marker="*", facecolors="none", edgecolors="green", linewidths=1.4,
                   label=f"chosen: {chosen}")  # fmt: skip
        ax.set_xlabel(labels[x])
        ax.set_ylabel(labels[y])
        ax.legend(fontsize=6, loc="best")
    fig.suptitle("Sweep: mean and 95 % interval per point; grid points labelled by their weights", fontsize=9)
    fig.tight_layout()
    return figure_png(fig)


def _simplex_png(grid: pd.DataFrame, axes: list[str]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    xy = grid[[f"w_{s}" for s in axes]].to_numpy(dtype=float) @ corners
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot(*np.vstack([corners, corners[:1]]).T, color="grey", lw=1)
    dots = ax.scatter(xy[:, 0], xy[:, 1], c=grid["utility"], cmap="viridis", s=260, edgecolors="black")
    for (x, y), name, value in zip(xy, grid["point"], grid["utility"]):
        ax.annotate(f"{value:.2f}", (x, y), fontsize=7, ha="center", va="center", xytext=(0, -16),
                    textcoords="offset points")  # fmt: skip
    for corner, name in zip(corners, axes):
        ax.annotate(name, corner, fontsize=10, xytext=(0, -28 if corner[1] == 0 else 12), textcoords="offset points", ha="center")
    fig.colorbar(dots, ax=ax, label="declared utility")
    ax.set_axis_off()
    ax.set_title("DNI weights: utility over the simplex")
    return figure_png(fig)
