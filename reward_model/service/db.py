"""Engines, migrations and transactions for SQLite (default) and PostgreSQL.

SQLite is opened in WAL mode with a busy timeout, and the service serialises its own write
transactions with a lock (`Database.write`): SQLite allows one writer at a time, and waiting on
a Python lock is cheaper and more predictable than retrying "database is locked".
PostgreSQL needs no lock; its constraints (unique slots, unique judgements) keep concurrent
writers honest.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "0002"


def default_url(round_dir: str | Path) -> str:
    """`sqlite:///<round>/rankings/annotations.db` (the folder is created)."""
    folder = Path(round_dir) / "rankings"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder.resolve() / 'annotations.db'}"


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite connections get WAL, a busy timeout and foreign keys."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":  # plain postgresql:// means psycopg 3 here (psycopg2 is not a dependency)
        parsed = parsed.set(drivername="postgresql+psycopg")
        url = parsed.render_as_string(hide_password=False)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=20, max_overflow=40)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):  # every new connection, not just the first
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_size=20, max_overflow=40, pool_pre_ping=True)
    raise ValueError(f"database URL {parsed.render_as_string(hide_password=True)!r}: only sqlite:// and postgresql+psycopg:// are supported")


def migrate(engine: Engine, revision: str = "head") -> None:
    """Apply the packaged Alembic migrations up to `revision` on `engine`'s database."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


class Database:
    """One engine and its sessions; `write()` is a transaction that commits or rolls back whole."""

    def __init__(self, url: str, *, apply_migrations: bool = True):
        self.url = url
        self.engine = make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.Lock() if self.is_sqlite else contextlib.nullcontext()
        if apply_migrations:
            migrate(self.engine)

    @contextlib.contextmanager
    def read(self):
        with self.sessions() as session:
            yield session

    @contextlib.contextmanager
    def write(self):
        with self._write_lock, self.sessions() as session, session.begin():
            yield session

    def write_retrying(self, work, attempts: int = 3):
        """`work(session)` in a write transaction, run again when a concurrent transaction stored a
        row with the same unique key first (PostgreSQL; SQLite's writes are serialised): the rerun
        sees that row, e.g. updates the ranking the twin request just inserted. The last
        IntegrityError propagates (the app answers 409)."""
        for attempt in range(attempts):
            try:
                with self.write() as session:
                    return work(session)
            except IntegrityError:
                if attempt == attempts - 1:
                    raise

    def dispose(self) -> None:
        self.engine.dispose()


__all__ = ["Database", "current_revision", "default_url", "make_engine", "migrate", "HEAD"]
