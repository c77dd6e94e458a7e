"""Progress inside a shard: every item reaches the CLI's bar, the run's log hears a tenth at a time."""

import io
import logging

from rich.console import Console

from flows.progress import ShardProgress
from pipeline.stages.base import ShardSpec
from songpref.progress import RoundProgress


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_items_reach_the_bar_every_time_and_the_log_a_tenth_at_a_time(monkeypatch):
    log = logging.getLogger("songpref.shard_progress")
    lines = Lines()
    monkeypatch.setattr(log, "handlers", [lines])  # the API handler needs a run; the lines are what it would send
    events = []
    progress = ShardProgress("candidates", lambda *event: events.append(event))
    spec = ShardSpec("candidates", 3, {}, {})
    for done in range(0, 41):
        progress(spec, done, 40)
    assert len(events) == 41 and events[-1] == ("items", "candidates", (3, 40, 40))
    assert lines.lines == [f"candidates shard 3: {n} of 40 items done" for n in range(0, 41, 4)]

    out = io.StringIO()
    with RoundProgress(Console(file=out, width=160, force_terminal=False)) as bar:
        bar.report("start", "candidates", 2)
        bar.report("items", "candidates", (0, 5, 40))
        bar.report("items", "candidates", (1, 7, 40))
        shown = bar._progress.tasks[0].fields["note"]
        assert shown == "shard 0: 5/40 items · shard 1: 7/40 items"
        bar.report("items", "candidates", (0, 40, 40))
        bar.report("shard", "candidates", None)
        assert bar._progress.tasks[0].fields["note"] == "shard 1: 7/40 items" and bar._progress.tasks[0].completed == 1
