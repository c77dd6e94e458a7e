"""Prefect global concurrency limits for GPU-bound stages: one slot per GPU, shared by every
round recorded on the same Prefect server; and the torch threads a shard builds with."""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound


def ensure_limit(name: str, slots: int) -> None:
    """Create the limit, or make it active with `slots` slots (the config is the truth)."""
    with get_client(sync_client=True) as client:
        try:
            found = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots, active=True))
            return
        if found.limit != slots or not found.active:
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=slots, active=True))


@contextmanager
def holding_slot(name: str | None, slots: int = 1):
    """Hold `slots` slots of the limit `name` (waiting as long as they are taken); no-op for None."""
    if name is None:
        yield
        return
    with concurrency(name, occupy=slots, timeout_seconds=None, strict=True):
        yield


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
