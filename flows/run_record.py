"""The round's latest flow run, kept in its manifest (`flow_run`: id, server, pid), so that
`songpref round status` can show the server's state of the round and of each stage's run, and a
run started after a crash can mark the crashed one.

A process killed with kill -9 tells the server nothing: its flow run stays Running. The next run
of the round on the same server finds that run's process gone (same host, pid no longer alive)
and sets its state to Crashed.
"""

from __future__ import annotations

import os
import socket

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.settings import PREFECT_API_URL
from prefect.states import Crashed

from flows.processes import process_alive, process_start
from pipeline.manifest import annotate_round, read_manifest
from pipeline.store import RoundStore

KEY = "flow_run"


def server_name() -> str:
    return PREFECT_API_URL.value() or "temporary"


def record_flow_run(store: RoundStore, flow_run_id: str) -> str | None:
    """Record this run as the round's latest; returns the id of an earlier run marked Crashed, if any."""
    previous = read_manifest(store).get(KEY)
    crashed = _mark_crashed(previous) if previous and previous.get("id") != flow_run_id else None
    pid = os.getpid()
    annotate_round(store, KEY, {"id": flow_run_id, "server": server_name(), "host": socket.gethostname(), "pid": pid,
                                "process_started": process_start(pid)})  # fmt: skip
    return crashed


def _mark_crashed(previous: dict) -> str | None:
    if previous.get("server") != server_name() or previous.get("server") == "temporary" or previous.get("host") != socket.gethostname():
        return None  # another server's run, or one this host cannot see the process of
    if process_alive(previous["pid"], previous.get("process_started")):
        return None
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(previous["id"])
        except Exception:  # deleted on the server: nothing to mark
            return None
        if run.state is None or run.state.type.value not in ("RUNNING", "PENDING"):
            return None
        message = f"its process (pid {previous['pid']} on {previous['host']}) ended without reporting: killed or lost"
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    return previous["id"]


def server_states(manifest: dict) -> dict | None:
    """The server's view of the round's latest run: {"run": (name, state), "stages": {stage: state}};
    None when no server is set or the run was recorded on another one."""
    record = manifest.get(KEY)
    url = PREFECT_API_URL.value()
    if not url or not record or record.get("server") != url:
        return None
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(record["id"])
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))
    latest = {}
    for child in sorted(children, key=lambda r: r.start_time or r.created):
        latest[child.name] = child.state.name if child.state else "unknown"
    return {"run": (run.name, run.state.name if run.state else "unknown", str(run.id)), "stages": latest}
