"""Metrics along a chain of rounds: each round's chosen policy (its sweep row) and the numeric
metrics every stage recorded, in the order the rounds are given; and a plot of them."""

from __future__ import annotations

import io
import json
from pathlib import Path

BOOKKEEPING = ("shards_built", "shards_skipped")
RATE_SUFFIXES = ("_per_second", "_per_busy_second")


def round_metrics(round_dir: str | Path) -> dict:
    """{"round", "parent", "metrics": {name: value}} of one round; ValueError naming a folder that is no round."""
    import pandas as pd

    from pipeline.preferences import preferences

    round_dir = Path(round_dir)
    try:
        manifest = json.loads((round_dir / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{round_dir}: not a round (no manifest.json)") from None
    metrics = {}
    sweep = manifest["stages"].get("sweep", {})
    chosen = sweep.get("metrics", {}).get("chosen")
    if sweep.get("status") == "done" and chosen and (round_dir / "sweep/results.parquet").is_file():
        results = pd.read_parquet(round_dir / "sweep/results.parquet").set_index("point")
        for preference in preferences().values():
            if preference.score in results.columns and pd.notna(results.loc[chosen, preference.score]):
                metrics[f"policy.{preference.score}"] = float(results.loc[chosen, preference.score])
    for stage, record in manifest["stages"].items():
        for key, value in record.get("metrics", {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in BOOKKEEPING and not key.endswith(RATE_SUFFIXES):
                metrics[f"{stage}.{key}"] = value
    parent = manifest["config"].get("parent")
    return {"round": str(round_dir.resolve()), "parent": str(Path(parent).resolve()) if parent else None, "metrics": metrics}


def history(round_dirs: list[str | Path]) -> list[dict]:
    return [round_metrics(d) for d in round_dirs]


def history_png(rows: list[dict], limit: int = 12) -> bytes:
    """One small plot per metric (the chosen policy's first), value against the round's place in the chain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({k for row in rows for k in row["metrics"]}, key=lambda k: (not k.startswith("policy."), k))[:limit]
    columns = min(3, max(1, len(names)))
    fig, axes = plt.subplots(-(-max(1, len(names)) // columns), columns, figsize=(4 * columns, 2.6 * -(-max(1, len(names)) // columns)), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        points = [(i, row["metrics"][name]) for i, row in enumerate(rows, start=1) if name in row["metrics"]]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(1, len(rows) + 1))
        ax.set_xlabel("round in chain", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()
