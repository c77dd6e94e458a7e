"""Rich progress for round runs: one bar per stage, advanced as shards finish; the items done of
each shard in flight are shown beside it."""

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
        self._items: dict[str, dict[int, tuple[int, int]]] = {}  # stage -> shard in flight -> (items done, total)

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
        elif event == "items":  # inside a shard: (shard index, done, total); a shard done is shown no more
            index, done, total = payload
            self._items.setdefault(stage, {})[index] = (done, total)
            shown = " · ".join(f"shard {i}: {d}/{t} items" for i, (d, t) in sorted(self._items[stage].items()) if d < t)
            self._progress.update(self._tasks[stage], note=shown)
        elif event == "finish":
            note = f"{payload['status']} · {payload['rows']} rows · {payload['metrics'].get('shards_skipped', 0)} skipped"
            self._progress.update(self._tasks[stage], note=note)
