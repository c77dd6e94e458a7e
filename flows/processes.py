"""Whether a recorded process still runs: its pid and start time (so a reused pid is not taken for it)."""

from __future__ import annotations

import os
from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start(fields: list[str] | None) -> str | None:
    return fields[19] if fields and len(fields) > 19 else None


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not taken for it."""
    return _start(_stat(pid))


def process_alive(pid: int, started: str | None = None) -> bool:
    """True while the process runs; a zombie (ended, not yet reaped: an orphan whose parent, an init
    that reaps nothing, never waits for it) has ended."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat(pid)
    if fields and fields[0] in ("Z", "X"):
        return False
    return started is None or _start(fields) in (None, started)
