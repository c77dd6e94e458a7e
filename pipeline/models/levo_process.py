"""Running SongGeneration's generate.py for the `levo` backend: one call in its own process
group (a timeout kills everything it started), stderr's tail kept for the failure message."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

STDERR_TAIL_LINES = 15


def run_generate(argv: list[str], cwd: Path, env: dict, timeout_s: float, log: Path) -> str | None:
    """Run one generate.py call; None on success, else why it failed (with stderr's tail)."""
    try:
        with open(log, "wb") as err:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err, start_new_session=True)  # fmt: skip
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return f"generate.py timed out after {timeout_s:g} s{_tail(log)}"
    except OSError as exc:
        return f"could not start {argv[0]!r}: {exc}"
    if code != 0:
        return f"generate.py exited with status {code}{_tail(log)}"
    return None


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and anything it started (own session)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return (": stderr ends:\n" + "\n".join(lines[-STDERR_TAIL_LINES:])) if lines else " (no stderr)"


def git_head(repo: Path) -> str | None:
    """The checkout's commit, read from .git without running git."""
    try:
        head = (repo / ".git" / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        ref_file = repo / ".git" / ref
        if ref_file.is_file():
            return ref_file.read_text().strip()
        for line in (repo / ".git" / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return None
