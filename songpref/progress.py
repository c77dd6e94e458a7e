"""Rich progress for round runs: one bar per stage, advanced as shards finish."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class RoundProgress:
    def __init__(self, console: Console):
        self._progress = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("shards"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> "RoundProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def report(self, event: str, stage: str, payload) -> None:
        """Reporter callback for flows.round.run_round."""
        if event == "start":
            self._tasks[stage] = self._progress.add_task(stage, total=payload, note="")
        elif event == "shard":
            self._progress.advance(self._tasks[stage])
        elif event == "finish":
            note = f"{payload['status']} · {payload['rows']} rows · {payload['metrics'].get('shards_skipped', 0)} skipped"
            self._progress.update(self._tasks[stage], note=note)
