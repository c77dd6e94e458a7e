"""A deployment's rounds on disk: `<directory>/<deployment>-<iteration>`, one new folder per run,
and the chain between them (run k+1's parent is the latest finished run before it). No Prefect."""

from __future__ import annotations

import json
import re
from pathlib import Path

ITERATION_DIGITS = 4


def _iterations(directory: Path, deployment: str) -> dict[int, Path]:
    pattern = re.compile(rf"{re.escape(deployment)}-(\d{{{ITERATION_DIGITS},}})")
    found = {}
    for path in directory.iterdir() if directory.is_dir() else ():
        match = pattern.fullmatch(path.name)
        if match and path.is_dir():
            found[int(match.group(1))] = path
    return found


def claim_round_dir(directory: str | Path, deployment: str) -> tuple[Path, int]:
    """Create and return the next unused `<deployment>-<iteration>` folder; creation is exclusive,
    so two runs starting together never share one and no earlier round is written over."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    iteration = max(_iterations(directory, deployment), default=0) + 1
    while True:
        path = directory / f"{deployment}-{iteration:0{ITERATION_DIGITS}d}"
        try:
            path.mkdir()
            return path, iteration
        except FileExistsError:
            iteration += 1


def finished(round_dir: Path) -> bool:
    """The round's deployment run ended with every stage it ran done."""
    try:
        manifest = json.loads((round_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(manifest.get("scheduled", {}).get("finished"))


def latest_finished(directory: str | Path, deployment: str, before: int) -> Path | None:
    """The deployment's latest finished round with an iteration below `before`, if any."""
    rounds = _iterations(Path(directory), deployment)
    for iteration in sorted((i for i in rounds if i < before), reverse=True):
        if finished(rounds[iteration]):
            return rounds[iteration]
    return None
