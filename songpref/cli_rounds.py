"""`songpref rounds history`: each metric along a chain of rounds, printed and plotted."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from songpref.common import console, fail

rounds_app = typer.Typer(help="Chains of rounds (semi-online alignment).", no_args_is_help=True)


@rounds_app.command("history")
def rounds_history(
    round_dirs: Annotated[list[str], typer.Argument(help="Round folders in chain order, e.g. rounds/alignment-round-*.")],
    plot: Annotated[Optional[Path], typer.Option(help="Write the metrics' plot (PNG) here.")] = None,
) -> None:
    """Print every metric of each round (the chosen policy's scores, then each stage's numbers) and its parent."""
    from rich.table import Table

    from flows.history import history, history_png

    try:
        rows = history(round_dirs)
    except ValueError as exc:
        fail(str(exc))
    table = Table(title="metrics along the chain")
    table.add_column("metric")
    for i, _ in enumerate(rows, start=1):
        table.add_column(str(i), justify="right")
    table.add_row("parent", *[str(1 + [r["round"] for r in rows].index(row["parent"])) if row["parent"] in [r["round"] for r in rows]
                              else "-" if not row["parent"] else "other" for row in rows])  # fmt: skip
    names = sorted({k for row in rows for k in row["metrics"]}, key=lambda k: (not k.startswith("policy."), k))
    for name in names:
        table.add_row(name, *[_shown(row["metrics"].get(name)) for row in rows])
    for i, row in enumerate(rows, start=1):
        console.print(f"{i}: {row['round']}" + (f" (parent {row['parent']})" if row["parent"] else ""), highlight=False)
    console.print(table)
    if plot:
        plot.parent.mkdir(parents=True, exist_ok=True)
        tmp = plot.with_name(f".{plot.name}.tmp")
        tmp.write_bytes(history_png(rows))
        tmp.replace(plot)
        console.print(f"plot: {plot}", highlight=False)


def _shown(value) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
