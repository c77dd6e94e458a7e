"""`songpref server start|stop`: a real Prefect server whose database is PostgreSQL."""

import json
import urllib.request

import psycopg

from prefect_server import PG_ADMIN_URL, songpref


def test_server_runs_on_its_own_postgres_database_and_records_cli_runs(postgres_prefect_server, tmp_path):
    server = postgres_prefect_server
    assert "(created)" in server.start_output and "/api/health answers" in server.start_output
    assert f"export PREFECT_API_URL={server.api_url}" in server.start_output
    assert "s3cret-pw" not in server.start_output and f"postgres:***@127.0.0.1:5432/{server.database}" in server.start_output
    with urllib.request.urlopen(f"{server.api_url}/health", timeout=5) as response:
        assert json.loads(response.read()) is True

    # a CLI run with PREFECT_API_URL set is recorded in that PostgreSQL database
    config = tmp_path / "c.yaml"
    config.write_text("seed: 2\nlyrics: {count: 8}\n", encoding="utf-8")
    run = songpref("round", "run", "--config", str(config), "--out", str(tmp_path / "r"), "--until", "lyrics", env=server.env())
    assert run.returncode == 0, run.stderr
    with psycopg.connect(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{server.database}") as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM flow_run")}
    assert "lyrics" in names

    # a second start finds it running; stopping a home with no server says so
    again = songpref("server", "start", "--port", server.api_url.split(":")[-1].split("/")[0], "--home", str(server.home),
                     "--db-url", f"postgresql+asyncpg://postgres@127.0.0.1:5432/{server.database}")  # fmt: skip
    assert again.returncode == 0 and "already running" in again.stderr
    nothing = songpref("server", "stop", "--home", str(tmp_path / "no-server"))
    assert nothing.returncode == 2 and "nothing to stop" in nothing.stderr


def test_server_start_names_an_unreachable_database(tmp_path):
    bad = songpref("server", "start", "--port", "1", "--home", str(tmp_path), "--db-url", "postgresql+asyncpg://postgres@127.0.0.1:1/x")
    assert bad.returncode == 2 and "PostgreSQL at postgresql+asyncpg://postgres@127.0.0.1:1/x" in bad.stderr
    wrong = songpref("server", "start", "--home", str(tmp_path), "--db-url", "sqlite:///x.db")
    assert wrong.returncode == 2 and "expected postgresql+asyncpg://" in wrong.stderr
