"""`songpref annotate`: migrate, campaign create, annotators add, progress and export on the
default SQLite database and on PostgreSQL."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from annotate_helpers import build_round, database_url
from reward_model.service.db import HEAD, current_revision, make_engine
from reward_model.service.export import RANKINGS_SCHEMA
from songpref.cli_annotate import annotate_app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(annotate_app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_admin_commands_work_on_the_database(backend, tmp_path):
    root = build_round(tmp_path / "round", prompts=2, per_prompt=3, audio=False)
    generator = database_url(backend, tmp_path)
    url = next(generator)
    db = ["--db", url]
    try:
        code, out = invoke("migrate", root, *db)
        assert code == 0, out
        engine = make_engine(url)
        assert current_revision(engine) == HEAD
        engine.dispose()
        assert invoke("migrate", root, *db)[0] == 0  # a second run changes nothing
        gold = tmp_path / "gold.json"
        gold.write_text(json.dumps([{"prompt_id": "prompt1", "answer": "p1c2"}]))
        code, out = invoke("campaign", "create", root, "--name", "cli", "-k", "3", "--overlap", "2", "--gold", gold, "--seed", "5", *db)
        assert code == 0 and json.loads(out)["tasks"] == 3, out
        code, out = invoke("campaign", "create", root, "--name", "bad", "--prompts", "nope", *db)
        assert code == 2 and "nope" in out
        code, out = invoke("annotators", "add", root, "--campaign", "cli", "ann", "bob", *db)
        lines = [line.split("\t") for line in out.strip().splitlines()]
        assert code == 0 and [n for n, _ in lines] == ["ann", "bob"] and all(len(t) > 30 for _, t in lines)
        assert invoke("annotators", "add", root, "--campaign", "cli", "ann", *db)[0] == 2  # names are unique
        code, out = invoke("campaign", "progress", root, "--campaign", "cli", *db)
        assert code == 0 and json.loads(out)["judgements_wanted"] == 2 * 2 + 1 * 2
        code, out = invoke("export", root, "--campaign", "cli", *db)
        assert code == 0 and json.loads(out)["rows"] == 0
        assert pq.read_table(root / "rankings" / "cli.parquet").schema == RANKINGS_SCHEMA
        assert invoke("export", root, "--campaign", "missing", *db)[0] == 2
    finally:
        generator.close()


def test_default_database_lives_in_the_round(tmp_path):
    root = build_round(tmp_path / "round", prompts=1, per_prompt=2, audio=False)
    assert invoke("migrate", root)[0] == 0
    assert (root / "rankings" / "annotations.db").is_file()
    assert invoke("migrate", tmp_path / "nowhere")[0] == 2
