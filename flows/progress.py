"""Progress inside a shard: items done of total, to the CLI's bar (every item) and to the flow
run's log on the Prefect server (at the start, every tenth of the shard or every
`LOG_EVERY_SECONDS`, and at the end), so a candidates shard of 4,000 songs is never silent.

The log goes through its own logger, straight to the API: the CLI keeps Prefect's console quiet
(PREFECT_LOGGING_LEVEL=WARNING), and progress lines would break its bars anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from prefect.logging.handlers import APILogHandler

from pipeline.stages.base import ShardSpec

LOG_EVERY_SECONDS = 30.0

_log = logging.getLogger("songpref.shard_progress")
_log.setLevel(logging.INFO)
_log.propagate = False
_log.addHandler(APILogHandler())


class ShardProgress:
    """The `item_progress` callback of one stage's shards; `report(event, stage, payload)` gets
    ("items", stage, (shard index, done, total))."""

    def __init__(self, stage: str, report: Callable[[str, str, object], None]):
        self.stage, self.report = stage, report
        self._logged: dict[int, tuple[int, float]] = {}  # shard index -> (items done, time) when last logged
        self._lock = threading.Lock()

    def __call__(self, spec: ShardSpec, done: int, total: int) -> None:
        self.report("items", self.stage, (spec.index, done, total))
        now = time.monotonic()
        with self._lock:
            last_done, last_time = self._logged.get(spec.index, (-1, 0.0))
            due = done in (0, total) or done - last_done >= max(1, total // 10) or now - last_time >= LOG_EVERY_SECONDS
            if not due or done == last_done:
                return
            self._logged[spec.index] = (done, now)
        _log.info("%s shard %d: %d of %d items done", self.stage, spec.index, done, total)
