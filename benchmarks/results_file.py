"""How a benchmark writes its results file: whole or not at all, with the load average it ran under."""

from __future__ import annotations

import json
import os
from pathlib import Path


def load_span(before: tuple[float, float, float]) -> list[list[float]]:
    """The 1/5/15-minute load averages at the start (`before`) and now, rounded for the record."""
    return [[round(x, 2) for x in before], [round(x, 2) for x in os.getloadavg()]]


def write_results(path: Path, report: dict) -> None:
    """JSON into a scratch file renamed over `path`: a run cut short never leaves half a file."""
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(path)
