"""Prefect global concurrency limits for GPU-bound stages: one slot per GPU, shared by every
round recorded on the same Prefect server.

A slot is held through a lease that a thread renews while the shard builds. A process killed
while holding one (kill -9, an out-of-memory kill) renews it no more: a running server's lease
service frees the slot when the lease runs out (`orchestration.gpu.lease_seconds`), but a
temporary server dies with its process and its leases with it, so its slot would stay taken
for good. Each holder therefore leaves a small record under `$PREFECT_HOME/songpref-slots/`
(its pid, the lease, the server); when a stage starts, the slots of holders whose process has
ended are given back at once, by lease where the server still knows it. Also the torch threads a
shard builds with.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, PREFECT_HOME

from flows.processes import process_alive, process_start

DEFAULT_LEASE_SECONDS = 300.0  # Prefect's own default; the server accepts 60 s to a day


def ensure_limit(name: str, slots: int) -> None:
    """Create the limit, or make it active with `slots` slots (the config is the truth); then
    give back the slots of holders whose process has ended."""
    with get_client(sync_client=True) as client:
        try:
            found = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots, active=True))
            return
        if found.limit != slots or not found.active:
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=slots, active=True))
        release_dead_holders(name, client)


@contextmanager
def holding_slot(name: str | None, slots: int = 1, lease_seconds: float = DEFAULT_LEASE_SECONDS):
    """Hold `slots` slots of the limit `name` (waiting as long as they are taken); no-op for None."""
    if name is None:
        yield
        return
    with get_client(sync_client=True) as client:
        lease_id = _acquire(client, name, slots, lease_seconds)
        record = _records_folder(name) / f"{os.getpid()}-{uuid.uuid4().hex[:12]}.json"
        _write_record(record, {"pid": os.getpid(), "started": process_start(os.getpid()), "lease_id": lease_id,
                               "slots": slots, "server": _server(), "at": time.time()})  # fmt: skip
        stop = threading.Event()
        renewer = threading.Thread(target=_renew, args=(name, lease_id, lease_seconds, stop), daemon=True, name=f"lease-{name}")
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            client.release_concurrency_slots_with_lease(lease_id)
            record.unlink(missing_ok=True)


def release_dead_holders(name: str, client) -> int:
    """Give back the slots of `name` held by processes that have ended; returns how many."""
    released = 0
    for record in sorted(_records_folder(name).glob("*.json")):
        try:
            holder = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # being written, or already taken away by another round
        if holder.get("server") != _server() or process_alive(holder["pid"], holder.get("started")):
            continue
        try:
            record.unlink()  # whoever removes the record gives the slot back, once
        except FileNotFoundError:
            continue
        if holder["server"] == "temporary":  # its server, and the lease, ended with the process
            held = max(0.001, time.time() - holder.get("at", time.time()))  # the server wants a positive occupancy
            client.release_concurrency_slots(names=[name], slots=holder.get("slots", 1), occupancy_seconds=held)
        else:  # a running server still knows the lease: releasing by it cannot free the slot twice
            client.release_concurrency_slots_with_lease(holder["lease_id"])
        released += 1
    return released


def _acquire(client, name: str, slots: int, lease_seconds: float) -> str:
    while True:
        try:
            response = client.increment_concurrency_slots_with_lease(names=[name], slots=slots, mode="concurrency", lease_duration=lease_seconds)
            return response.json()["lease_id"]
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 423:  # 423: every slot is taken; wait as the server asks
                raise
            time.sleep(min(5.0, float(exc.response.headers.get("Retry-After", 1.0))))


def _renew(name: str, lease_id: str, lease_seconds: float, stop: threading.Event) -> None:
    with get_client(sync_client=True) as client:
        while not stop.wait(lease_seconds / 4):
            try:
                client.renew_concurrency_lease(lease_id, lease_seconds)
            except Exception:  # a missed renewal is retried at the next beat; the lease has slack
                continue


def _server() -> str:
    """The server a slot was taken on: its API URL, or `temporary` for the one this process started."""
    return PREFECT_API_URL.value() or "temporary"


def _records_folder(name: str) -> Path:
    folder = Path(PREFECT_HOME.value()).expanduser() / "songpref-slots" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write_record(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    tmp.replace(path)


@lru_cache(maxsize=1)
def sees_gpu() -> bool:
    """Whether this process sees a CUDA device (torch is asked only if it is installed)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def stage_limit(orchestration, part: str) -> str | None:
    """The limit a shard of `part` holds: the configured GPU limit, unless the config holds it only
    where there is a GPU and this process sees none (a CPU round's shards then run in parallel)."""
    name = orchestration.gpu_limit(part)
    if name is not None and orchestration.gpu.only_with_gpu and not sees_gpu():
        return None
    return name


def set_torch_threads(threads: int) -> None:
    """torch's CPU threads for this process (a no-op where torch is not installed)."""
    try:
        import torch
    except ImportError:
        return
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
