"""Prefect global concurrency limits for GPU-bound stages: one slot per GPU, shared by every
round recorded on the same Prefect server."""

from __future__ import annotations

from contextlib import contextmanager

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
