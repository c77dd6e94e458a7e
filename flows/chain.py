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


def _manifest(round_dir: Path) -> dict:
    try:
        return json.loads((round_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def run_round_dir(directory: str | Path, flow_run_id: str) -> Path | None:
    """The folder a deployment run claimed (its manifest's `scheduled.flow_run_id`), if any."""
    directory = Path(directory)
    for path in sorted(directory.iterdir()) if directory.is_dir() else ():
        if path.is_dir() and _manifest(path).get("scheduled", {}).get("flow_run_id") == flow_run_id:
            return path
    return None


def claim_round_dir(directory: str | Path, deployment: str, flow_run_id: str | None = None) -> tuple[Path, int]:
    """Create and return the next unused `<deployment>-<iteration>` folder; creation is exclusive,
    so two runs starting together never share one and no earlier round is written over. A retry of
    a flow run (same id: Prefect's Retry after a crash) gets the folder that run claimed, and
    resumes from its finished shards."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    claimed = run_round_dir(directory, flow_run_id) if flow_run_id else None
    if claimed is not None and not finished(claimed):
        return claimed, int(_manifest(claimed)["scheduled"]["iteration"])
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
    return bool(_manifest(round_dir).get("scheduled", {}).get("finished"))


def latest_finished(directory: str | Path, deployment: str, before: int) -> Path | None:
    """The deployment's latest finished round with an iteration below `before`, if any."""
    rounds = _iterations(Path(directory), deployment)
    for iteration in sorted((i for i in rounds if i < before), reverse=True):
        if finished(rounds[iteration]):
            return rounds[iteration]
    return None
