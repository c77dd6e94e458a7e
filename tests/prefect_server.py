"""A real Prefect server on PostgreSQL for the test session, started and stopped through the CLI
(`songpref server start|stop`), on a free port and a fresh database that is dropped afterwards."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class RunningServer:
    api_url: str
    database: str
    home: Path
    start_output: str

    def env(self, **extra) -> dict:
        """Environment for a subprocess that records its runs on this server."""
        return {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_API_URL": self.api_url, **extra}


def songpref(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "songpref", *args], cwd=REPO, env=env or {**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def running_server(home: Path):
    """A generator for a session fixture: the server, stopped and its database dropped on close."""
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:  # any failure to reach PostgreSQL means: skip, with the reason
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable ({type(exc).__name__}: {exc})")
    database = f"songpref_prefect_test_{uuid.uuid4().hex[:10]}"
    # trust auth accepts any password: one is given so the test can see it masked
    db_url = f"postgresql+asyncpg://postgres:s3cret-pw@127.0.0.1:5432/{database}"
    port = free_port()
    started = songpref("server", "start", "--port", str(port), "--db-url", db_url, "--home", str(home))
    try:
        assert started.returncode == 0, started.stderr
        yield RunningServer(f"http://127.0.0.1:{port}/api", database, home, started.stdout + started.stderr)
    finally:
        songpref("server", "stop", "--home", str(home))
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()
