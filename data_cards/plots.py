"""Score-distribution plots that sit beside a card, byte-identical for the same data.

Figures are built on matplotlib's object API with the Agg canvas (no pyplot, no global backend
switch), at a fixed size and dpi, with the PNG "Software" tag dropped and fixed bins, so a
rerender gives the same bytes and the round's digests stay stable.
"""

from __future__ import annotations

import io
import math

FIGSIZE = (6.0, 3.6)
DPI = 100
BINS = 20
RC = {"svg.hashsalt": "songpref-cards", "font.family": "DejaVu Sans", "font.size": 9.0, "axes.grid": False}


def histogram_png(series: dict[str, list[float]], title: str, xlabel: str) -> bytes:
    """Overlaid histograms, one per label (e.g. chosen vs rejected), on shared bins."""
    return panels_png([(title, xlabel, series)])


def panels_png(panels: list[tuple[str, str, dict[str, list[float]]]]) -> bytes:
    """One histogram panel per (title, xlabel, series), side by side: parts on different scales
    (the joint strategy's PER, similarity and reward) each get their own axis."""
    import matplotlib  # here, not at import: flows import data_cards and need no plotting until a card is written
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(RC):
        figure = Figure(figsize=(FIGSIZE[0] * len(panels), FIGSIZE[1]), dpi=DPI)
        FigureCanvasAgg(figure)
        for index, (title, xlabel, series) in enumerate(panels, start=1):
            _histogram(figure.add_subplot(1, len(panels), index), series, title, xlabel)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _histogram(axes, series: dict[str, list[float]], title: str, xlabel: str) -> None:
    finite = {label: [v for v in values if v is not None and math.isfinite(v)] for label, values in series.items()}
    every = [v for values in finite.values() for v in values]
    if every:
        low, high = min(every), max(every)
        if high == low:  # one value: a bar of width 1 around it
            low, high = low - 0.5, high + 0.5
        edges = [low + (high - low) * i / BINS for i in range(BINS + 1)]
        for label, values in finite.items():
            axes.hist(values, bins=edges, alpha=0.6, label=f"{label} (n={len(values)})")
        axes.legend(loc="best")
    else:
        axes.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=axes.transAxes)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("count")


def summary(values: list[float | None]) -> dict:
    """n, missing, min, median, mean, max of a score column (missing: null or NaN)."""
    finite = sorted(v for v in values if v is not None and math.isfinite(v))
    missing = len(values) - len(finite)
    if not finite:
        return {"n": 0, "missing": missing, "min": "-", "median": "-", "mean": "-", "max": "-"}
    mid = len(finite) // 2
    median = finite[mid] if len(finite) % 2 else (finite[mid - 1] + finite[mid]) / 2
    return {"n": len(finite), "missing": missing, "min": _r(finite[0]), "median": _r(median),
            "mean": _r(sum(finite) / len(finite)), "max": _r(finite[-1])}  # fmt: skip


def _r(value: float) -> float:
    return round(float(value), 4)
