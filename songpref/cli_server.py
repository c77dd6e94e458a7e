"""`songpref server start|stop`: a long-running Prefect server on the local PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from songpref.common import console, fail

server_app = typer.Typer(help="A Prefect server with its database on PostgreSQL (runs, deployments, artifacts).", no_args_is_help=True)

HomeOpt = Annotated[Path, typer.Option("--home", envvar="SONGPREF_SERVER_HOME", help="The server's PREFECT_HOME: its log and pid file.")]
_DEFAULT_HOME = Path.home() / ".songpref" / "prefect-server"


@server_app.command("start")
def server_start(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API and UI.")] = 4200,
    db_url: Annotated[str, typer.Option("--db-url", envvar="SONGPREF_SERVER_DB_URL",
                                        help="The server's database (created if missing).")] = "postgresql+asyncpg://postgres@127.0.0.1:5432/songpref_prefect",  # fmt: skip
    home: HomeOpt = _DEFAULT_HOME,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for /api/health.")] = 120.0,
) -> None:
    """Start `prefect server` in the background on PostgreSQL (its own database, created if missing), wait until
    /api/health answers, and print the UI and database URLs. Set PREFECT_API_URL to record runs there."""
    from flows.server import ServerError, ServerSettings, start_server

    try:
        info = start_server(ServerSettings(host=host, port=port, database_url=db_url, home=home), timeout=timeout)
    except ServerError as exc:
        fail(str(exc))
    state = "already running" if info["already_running"] else "started"
    console.print(f"prefect server {state} (pid {info['pid']}); /api/health answers", highlight=False)
    console.print(f"UI:       {info['ui_url']}", highlight=False)
    console.print(f"database: {info['database_url']}" + (" (created)" if info["database_created"] else ""), highlight=False)
    console.print(f"log:      {Path(home) / 'server.log'}", highlight=False)
    typer.echo(f"export PREFECT_API_URL={info['api_url']}")  # stdout: eval-able


@server_app.command("stop")
def server_stop(home: HomeOpt = _DEFAULT_HOME) -> None:
    """Stop the server that `songpref server start` started with this --home."""
    from flows.server import ServerError, stop_server

    try:
        record = stop_server(home)
    except ServerError as exc:
        fail(str(exc))
    console.print(f"stopped prefect server (pid {record['pid']}) at {record['ui_url']}", highlight=False)
    if os.environ.get("PREFECT_API_URL", "").rstrip("/") == record["api_url"]:
        console.print("PREFECT_API_URL still points at it: unset it to use Prefect's temporary server again", highlight=False)
