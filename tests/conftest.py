"""Test-session settings: a private Prefect home, no analytics, one Prefect test server."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from pipeline.allocator import keep_freed_memory

# Before anything imports prefect: a fresh home per session and no outbound analytics.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="songpref-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One core per worker (make test runs two): two workers' OpenMP thread pools on the same two
    # cores spin against each other, and a test then takes several times as long.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

keep_freed_memory()  # as the CLI and the flows do: torch's large tensors stay in the heap

REPO = Path(__file__).resolve().parents[1]
LEVO_REFERENCE = REPO.parent / "shared" / "reference" / "levo"


@pytest.fixture(scope="session")
def prefect_api_url():
    """A Prefect server for the whole session; subprocesses reach it through PREFECT_API_URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def postgres_prefect_server(tmp_path_factory):
    """A real Prefect server on PostgreSQL for the session, through `songpref server start|stop`."""
    from prefect_server import running_server

    yield from running_server(tmp_path_factory.mktemp("prefect-server-home"))


@pytest.fixture
def levo_reference() -> Path:
    if not LEVO_REFERENCE.is_dir():
        pytest.skip(f"LeVo reference data not found at {LEVO_REFERENCE} (test data, kept outside the repo)")
    return LEVO_REFERENCE


@pytest.fixture(scope="session")
def round_dir(tmp_path_factory):
    """(root, store) of a small real round (6 prompts x 3 songs) with every stage up to pairs done."""
    from small_round import build_round

    return build_round(tmp_path_factory.mktemp("small-round"))
