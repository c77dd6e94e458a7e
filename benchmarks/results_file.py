"""How a benchmark writes its results file: whole or not at all, with the load average it ran under;
and how a comparison names the models it asks (`NAME=MODEL_DIR`)."""

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


def add_result(path: Path, key: str, entry: dict) -> None:
    """`entry` under `key` in the results file at `path` (the other keys kept), written whole."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results[key] = entry
    write_results(path, results)


def named_models(parser, models: dict[str, Path], specs: list[str], reference: str) -> dict[str, Path]:
    """`models` plus every `NAME=MODEL_DIR` of `specs`; a parser error names a folder without a
    model or a `--reference` that is none of them."""
    models = dict(models)
    for spec in specs:
        name, _, folder = spec.partition("=")
        if not (Path(folder) / "config.json").is_file():
            parser.error(f"{spec}: {folder} is not a model folder (no config.json)")
        models[name] = Path(folder)
    if reference not in models:
        parser.error(f"--reference {reference}: not one of {', '.join(models)}")
    return models
