"""A finished round's rerun recorded on a running Prefect server over its REST API, without
importing Prefect (whose import and flow machinery were most of such a rerun's seconds).

There is nothing to orchestrate: the rerun is written in this process (`flows.stages.run_if_cached`)
and the server gets what a flow run of it would leave: one Completed `alignment-round` flow run
named like the round, with the `round-rerun` artifact. An earlier run of the round whose process
has gone while the server still shows it Running is marked Crashed, as `flows.run_record` does.
Used only when `PREFECT_API_URL` is in the environment and no API key or auth string is (those
go through Prefect's own client).
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request

from flows.processes import process_alive, process_start
from pipeline.manifest import annotate_round, read_manifest
from pipeline.store import RoundStore

FLOW_NAME = "alignment-round"


class ServerUnreachable(RuntimeError):
    pass


def usable_api_url() -> str | None:
    """The server this module can talk to plainly: PREFECT_API_URL from the environment, no auth."""
    if os.environ.get("PREFECT_API_KEY") or os.environ.get("PREFECT_API_AUTH_STRING"):
        return None
    return os.environ.get("PREFECT_API_URL") or None


def record_cached_rerun(api_url: str, store: RoundStore, stages: list[str], markdown: str) -> str:
    """Record the rerun as one Completed flow run with its artifact; returns the flow run's id."""
    previous = read_manifest(store).get("flow_run")
    if previous and previous.get("server") == api_url and previous.get("host") == socket.gethostname() \
            and not process_alive(previous["pid"], previous.get("process_started")):  # fmt: skip
        _mark_crashed(api_url, previous)
    flow = _call(api_url, "POST", "/flows/", {"name": FLOW_NAME})
    run = _call(api_url, "POST", "/flow_runs/", {
        "flow_id": flow["id"], "name": f"rerun-{store.url.rstrip('/').rsplit('/', 1)[-1]}",
        "parameters": {"round_url": store.url, "stages": stages},
        "state": {"type": "COMPLETED", "name": "Completed", "message": "every shard was built: recorded without orchestration"},
    })  # fmt: skip
    _call(api_url, "POST", "/artifacts/", {"key": "round-rerun", "type": "markdown", "data": markdown, "flow_run_id": run["id"],
                                          "description": "a rerun that found every shard built"})  # fmt: skip
    pid = os.getpid()
    annotate_round(store, "flow_run", {"id": run["id"], "server": api_url, "host": socket.gethostname(), "pid": pid,
                                       "process_started": process_start(pid)})  # fmt: skip
    return run["id"]


def _mark_crashed(api_url: str, previous: dict) -> None:
    try:
        run = _call(api_url, "GET", f"/flow_runs/{previous['id']}")
    except ServerUnreachable:
        return  # deleted on the server: nothing to mark
    if (run.get("state") or {}).get("type") in ("RUNNING", "PENDING"):
        message = f"its process (pid {previous['pid']} on {previous['host']}) ended without reporting: killed or lost"
        _call(api_url, "POST", f"/flow_runs/{previous['id']}/set_state",
              {"state": {"type": "CRASHED", "name": "Crashed", "message": message}, "force": True})  # fmt: skip


def _call(api_url: str, method: str, route: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode("utf-8") if body is not None else None
    request = urllib.request.Request(f"{api_url.rstrip('/')}{route}", data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise ServerUnreachable(f"Prefect server at {api_url}: {method} {route} failed: {exc}") from exc
    return json.loads(text) if text else {}


def rerun_markdown(records: dict) -> str:
    """The `round-rerun` artifact: each stage's rows, the seconds of the run that built it and of this rerun."""
    lines = ["# rerun: every shard was built", "", "| stage | rows | build seconds | rerun seconds | shards skipped |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {r['rows']} | {r['seconds']} | {r.get('rerun', {}).get('seconds', '')} | {r.get('rerun', {}).get('shards_skipped', '')} |"
              for name, r in records.items()]  # fmt: skip
    return "\n".join(lines)
