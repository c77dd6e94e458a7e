"""Shared pieces of the annotation-service tests: a tiny round on disk, a database per backend
(SQLite file or a fresh PostgreSQL database, dropped afterwards), and a real uvicorn server in a
subprocess on a free port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from pipeline.store import RoundStore

REPO = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "admin-" + uuid.uuid4().hex
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
CANDIDATE_COLUMNS = pa.schema([
    ("candidate_id", pa.string()), ("condition_id", pa.string()), ("lyric_id", pa.string()),
    ("candidate_index", pa.int32()), ("seed", pa.int64()), ("model", pa.string()), ("tokens_uri", pa.string()),
    ("mix_uri", pa.string()), ("vocals_uri", pa.string()), ("accompaniment_uri", pa.string()),
    ("duration_seconds", pa.float64()), ("error", pa.string()),
])  # fmt: skip  (the candidates stage's columns)


def build_round(root: Path, prompts: int = 3, per_prompt: int = 4, seconds: float = 1.0, audio: bool = True, conditions: bool = False) -> Path:
    """A round whose `candidates` stage is done: short FLAC tones and one candidates shard, plus a
    failed candidate (error set) that campaigns must leave out. With `conditions`, the
    `conditions` stage is done too: each prompt's description and lyrics."""
    store = RoundStore(str(root))
    rows = []
    for p in range(prompts):
        for c in range(per_prompt):
            cid = f"p{p}c{c}"
            mix, vocals = f"candidates/audio/{cid}/mix.flac", f"candidates/audio/{cid}/vocals.flac"
            if audio:
                t = np.arange(int(16000 * seconds)) / 16000
                for uri, freq in ((mix, 220.0 * (1 + c)), (vocals, 330.0)):
                    (root / uri).parent.mkdir(parents=True, exist_ok=True)
                    sf.write(root / uri, (0.2 * np.sin(2 * np.pi * freq * t)).astype("float32"), 16000, format="FLAC")
            rows.append({"candidate_id": cid, "condition_id": f"prompt{p}", "lyric_id": f"l{p}", "candidate_index": c,
                         "seed": c, "model": "tiny", "tokens_uri": None, "mix_uri": mix, "vocals_uri": vocals,
                         "accompaniment_uri": None, "duration_seconds": seconds, "error": None})  # fmt: skip
    rows.append({**rows[0], "candidate_id": "broken", "mix_uri": None, "vocals_uri": None, "error": "render failed"})
    digest = store.write_table("candidates/shard-00000.parquet", pa.Table.from_pylist(rows, schema=CANDIDATE_COLUMNS))
    stages = {"candidates": {"status": "done", "rows": len(rows), "outputs": {"shard-00000.parquet": digest}}}
    if conditions:
        texts = pa.Table.from_pylist([{"condition_id": f"prompt{p}", "description": f"male, pop, happy, piano, the bpm is {100 + p}.",
                                       "lyric": f"[verse]\nsong number {p} goes here\nand here it rhymes\n[chorus]\nla la {p}"}
                                      for p in range(prompts)])  # fmt: skip
        stages["conditions"] = {"status": "done", "rows": prompts, "outputs": {"shard-00000.parquet": store.write_table("conditions/shard-00000.parquet", texts)}}
    store.write_json("manifest.json", {"stages": stages})
    return root


def postgres_database():
    """A generator: a fresh PostgreSQL database's SQLAlchemy URL, dropped on close; skips if no server."""
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:  # any failure to reach the server means: skip, with the reason
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable ({type(exc).__name__}: {exc})")
    name = f"songpref_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def database_url(backend: str, folder: Path):
    """Generator for a fixture parametrised over ("sqlite", "postgresql")."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'annotations.db'}"
    else:
        yield from postgres_database()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """`uvicorn --factory reward_model.service.app:create_app_from_env` in a subprocess."""

    def __init__(self, round_dir: Path, db_url: str, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "SONGPREF_ROUND": str(round_dir), "SONGPREF_DB_URL": db_url, "SONGPREF_ADMIN_TOKEN": ADMIN_TOKEN}
        self.log_path = log_path
        self._log = open(log_path, "wb")
        command = [sys.executable, "-m", "uvicorn", "--factory", "reward_model.service.app:create_app_from_env",
                   "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "info", "--timeout-keep-alive", "120"]  # fmt: skip
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait()

    def _wait(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not answer within {timeout} s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")


def admin_headers() -> dict:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def database_fingerprint(engine) -> str:
    """sha256 over every row of every service table (ordered by id): equal fingerprints mean the
    request changed nothing stored."""
    import hashlib

    from sqlalchemy import select

    from reward_model.service.models import Base

    digest = hashlib.sha256()
    with engine.connect() as conn:
        for table in sorted(Base.metadata.tables.values(), key=lambda t: t.name):
            for row in conn.execute(select(table).order_by(table.c.id)):
                digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()


@contextlib.contextmanager
def campaign_app(root: Path, backend: str, campaign: dict, annotators: list[str]):
    """The app (in-process TestClient) on a fresh `backend` database with one campaign (`campaign`
    is its spec) and its annotators: yields (client, app, {annotator: token})."""
    from fastapi.testclient import TestClient

    from reward_model.service.app import create_app
    from reward_model.service.settings import ServiceSettings

    generator = database_url(backend, root)
    app = create_app(ServiceSettings(root, db_url=next(generator), admin_token=ADMIN_TOKEN))
    try:
        with TestClient(app) as client:
            made = client.post("/admin/campaigns", json=campaign, headers=admin_headers())
            assert made.status_code == 201, made.text
            people = client.post(f"/admin/campaigns/{campaign['name']}/annotators", json={"names": annotators}, headers=admin_headers()).json()
            yield client, app, {a["annotator_id"]: a["token"] for a in people["annotators"]}
    finally:
        app.state.db.dispose()
        generator.close()
