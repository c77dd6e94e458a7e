"""A long-running Prefect server whose database is the local PostgreSQL.

`start_server` creates the server's own database when it is missing, starts `prefect server
start` in its own process group (its log and pid file under the server home), and waits for
`/api/health`; `stop_server` stops that process group by the recorded pid. The temporary server
Prefect starts for a script stays the default: this one is used wherever PREFECT_API_URL points
at it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from flows.processes import process_alive

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/songpref_prefect"
DEFAULT_HOME = Path.home() / ".songpref" / "prefect-server"
PID_FILE = "server.json"
LOG_FILE = "server.log"


class ServerError(RuntimeError):
    """The server cannot be started or stopped; the message says why, ready to show."""


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 4200
    database_url: str = DEFAULT_DATABASE_URL
    home: Path = DEFAULT_HOME  # PREFECT_HOME of the server process, its log and pid file

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"


def masked(database_url: str) -> str:
    """The URL with its password (if any) shown as ***."""
    from sqlalchemy.engine import make_url

    return make_url(database_url).render_as_string(hide_password=True)


def ensure_database(database_url: str) -> bool:
    """Create the URL's database on its PostgreSQL server if it is missing; True when created."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() != "postgresql" or not url.database:
        raise ServerError(f"database URL {masked(database_url)}: expected postgresql+asyncpg://USER[:PASSWORD]@HOST:PORT/DATABASE")
    admin = {"host": url.host or "127.0.0.1", "port": url.port or 5432, "user": url.username or "postgres",
             "password": url.password, "dbname": "postgres", "connect_timeout": 5}  # fmt: skip
    try:
        with psycopg.connect(**{k: v for k, v in admin.items() if v is not None}, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,)).fetchone():
                return False
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.database)))
            return True
    except psycopg.Error as exc:
        raise ServerError(f"PostgreSQL at {masked(database_url)}: {str(exc).strip()}") from None


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:
            return response.status == 200 and json.loads(response.read()) is True
    except (OSError, ValueError, urllib.error.URLError):
        return False


def recorded_server(home: Path) -> dict | None:
    """What `start_server` recorded in `home` (pid, URLs), or None."""
    path = Path(home) / PID_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def start_server(settings: ServerSettings, timeout: float = 120.0) -> dict:
    """Start the server (or find it running) and wait for /api/health; returns the record:
    pid, ui_url, api_url, database_url (masked), database_created, already_running."""
    home = Path(settings.home)
    home.mkdir(parents=True, exist_ok=True)
    running = recorded_server(home)
    if running and process_alive(running["pid"]) and healthy(running["api_url"]):
        return {**running, "already_running": True, "database_created": False}
    if healthy(settings.api_url):
        raise ServerError(f"{settings.ui_url}: another server already answers there; pick another --port")
    created = ensure_database(settings.database_url)
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_DATABASE_CONNECTION_URL": settings.database_url,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           # the UI calls the API at this server's own port (Prefect's default is 4200 whatever --port says)
           "PREFECT_SERVER_UI_API_URL": settings.api_url,
           # GPU slots' leases on disk under the home: a restarted server still frees those of crashed holders
           "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem"}  # fmt: skip
    env.pop("PREFECT_API_URL", None)  # the server process must not be a client of another server
    with open(home / LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", settings.host, "--port", str(settings.port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    record = {"pid": process.pid, "ui_url": settings.ui_url, "api_url": settings.api_url,
              "database_url": masked(settings.database_url)}  # fmt: skip
    deadline = time.monotonic() + timeout
    while not healthy(settings.api_url):
        if process.poll() is not None:
            raise ServerError(f"prefect server exited with code {process.returncode}; last log lines:\n{_tail(home / LOG_FILE)}")
        if time.monotonic() > deadline:
            _stop_group(process.pid)
            raise ServerError(f"{settings.api_url}/health did not answer within {timeout:.0f} s; log: {home / LOG_FILE}")
        time.sleep(0.5)
    tmp = home / f".{PID_FILE}.tmp"
    tmp.write_text(json.dumps(record), encoding="utf-8")
    tmp.replace(home / PID_FILE)
    return {**record, "already_running": False, "database_created": created}


def stop_server(home: Path, timeout: float = 30.0) -> dict:
    """Stop the server recorded in `home` (its whole process group); returns its record."""
    record = recorded_server(home)
    if record is None:
        raise ServerError(f"{home}: no server recorded here ({PID_FILE} missing); nothing to stop")
    if process_alive(record["pid"]):
        _stop_group(record["pid"], timeout)
    (Path(home) / PID_FILE).unlink(missing_ok=True)
    return record


def _stop_group(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM the process group the server leads, then SIGKILL what is left after `timeout`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:  # our child: reap it
                return
        except ChildProcessError:  # started by another process: poll
            if not process_alive(pid):
                return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
