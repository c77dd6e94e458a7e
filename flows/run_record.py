"""The round's latest flow run, kept in its manifest (`flow_run`: id, server, pid), so that
`songpref round status` can show the server's state of the round and of each stage's run, and a
run started after a crash can mark the crashed one.

A process killed with kill -9 tells the server nothing: its flow run stays Running. The next run
of the round on the same server finds that run's process gone (same host, pid no longer alive)
and sets its state to Crashed, with its stage runs and shard tasks left running. A deployment
run whose worker was killed with it is found the same way when a worker of its pool next starts
on that host (`mark_lost_runs`, called by `songpref worker start`), so it can be retried.
"""

from __future__ import annotations

import os
import socket

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterParentFlowRunId, FlowRunFilterState, FlowRunFilterStateType,
                                            TaskRunFilter, TaskRunFilterFlowRunId, TaskRunFilterState, TaskRunFilterStateType,
                                            WorkPoolFilter, WorkPoolFilterName)  # fmt: skip
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL
from prefect.states import Crashed

from flows.chain import run_round_dir
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
        crash_run_tree(client, run.id, _lost_message(previous))
    return previous["id"]


UNFINISHED = [StateType.RUNNING, StateType.PENDING]


def _lost_message(process: dict) -> str:
    return f"its process (pid {process['pid']} on {process['host']}) ended without reporting: killed or lost"


def crash_run_tree(client, run_id, message: str) -> None:
    """Mark a flow run Crashed, with its subflow runs (stages) and task runs (shards) still unfinished;
    the run itself last, so once it shows Crashed its whole tree does."""
    tasks = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run_id]),
                                                                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=UNFINISHED))))  # fmt: skip
    for task_run in tasks:
        client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
    children = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id]),
                                                                   state=FlowRunFilterState(type=FlowRunFilterStateType(any_=UNFINISHED))))  # fmt: skip
    for child in children:
        crash_run_tree(client, child.id, message)
    client.set_flow_run_state(run_id, Crashed(message=message), force=True)


def mark_lost_runs(pool: str) -> list[str]:
    """Mark Crashed the pool's running round deployments whose process on this host has ended (a
    killed worker takes its runs' processes with it and tells the server nothing); returns their ids.
    A run is found through the folder it claimed (`scheduled` in the round's manifest)."""
    lost = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
                                     flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))))  # fmt: skip
        for run in runs:
            directory = ((run.parameters or {}).get("config") or {}).get("rounds", {}).get("directory")
            round_dir = run_round_dir(directory, str(run.id)) if directory else None
            if round_dir is None:
                continue  # not a round deployment's run, or one that claimed no folder yet
            process = read_manifest(RoundStore(str(round_dir)))["scheduled"]
            if process.get("host") != socket.gethostname() or process_alive(process["pid"], process.get("process_started")):
                continue
            crash_run_tree(client, run.id, _lost_message(process))
            lost.append(str(run.id))
    return lost


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
