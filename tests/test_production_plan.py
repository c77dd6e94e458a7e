"""`songpref round plan` on configs/production.example.yaml: clean with tiny random stand-ins for
its model directories (tests/production_dirs.py), and one listing of every problem without them."""

from __future__ import annotations

import importlib.util

import pytest
import yaml
from typer.testing import CliRunner

from flows.plan import needs
from pipeline.config import load_config
from production_dirs import EXAMPLE, make_production_dirs, songgeneration
from songpref.cli import app


def plan(config) -> tuple[int, str, dict]:
    """The CLI's exit code and summary line, and the listing's rows by key."""
    result = CliRunner().invoke(app, ["round", "plan", "--config", str(config)])
    rows = {need.key: need for need in needs(load_config(config))}
    return result.exit_code, " ".join(result.output.split()[-12:]), rows


def edited_example(tmp_path, **sections) -> str:
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    for name, value in sections.items():
        if value is None:
            del config[name]
        else:
            config[name] = {**config[name], **value}
    path = tmp_path / "production.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.skipif(importlib.util.find_spec("muq") is None, reason="the MuQ-MuLan stand-in needs the muq package")
def test_production_example_plans_clean_on_tiny_random_dirs(tmp_path):
    code, summary, rows = plan(make_production_dirs(tmp_path / "prod"))
    assert code == 0 and "every path found, every option accepted" in summary, summary
    assert all(need.ok for need in rows.values())
    paths = {key for key, need in rows.items() if need.kind == "path"}
    assert paths == {"conditions.prompt_library", "scoring.transcriber.checkpoint", "scoring.similarity.model_dir",
                     "model.options.repo_dir", "model.options.checkpoint_dir"}  # fmt: skip
    assert rows["reward_model.rankings"].kind == "endpoint"  # the campaign URL: listed, not contacted
    assert rows["reward_model.rankings"].value == "http://annotate.internal:8000/admin/campaigns/levo-round-1"


def test_production_example_lists_every_missing_path_and_refused_option_at_once(tmp_path):
    # No rankings source: the simulated crowd cannot rank LeVo's songs. None of the folders exist.
    code, summary, rows = plan(edited_example(tmp_path, reward_model=None))
    assert code == 1 and "5 missing path(s), 1 refused option(s)" in summary, summary
    missing = sorted(key for key, need in rows.items() if need.kind == "path" and not need.ok)
    assert missing == ["conditions.prompt_library", "model.options.checkpoint_dir", "model.options.repo_dir",
                       "scoring.similarity.model_dir", "scoring.transcriber.checkpoint"]  # fmt: skip
    refused = rows["reward_model.rankings"]
    assert (refused.kind, refused.value, refused.ok) == ("option", "simulated", False)
    assert "model.backend 'levo' needs the rankings of a real campaign" in refused.note
    assert "export file" in refused.note and "campaign URL" in refused.note


def test_levo_sampling_its_script_cannot_take_is_refused_at_plan_time(tmp_path):
    repo, checkpoint = tmp_path / "SongGeneration", tmp_path / "ckpt"
    songgeneration(repo, checkpoint)
    options = {"repo_dir": str(repo), "checkpoint_dir": str(checkpoint), "sampling_env": "NOT_READ_BY_THE_SCRIPT"}
    path = edited_example(tmp_path, model={"backend": "levo", "options": options}, sampling={"temperature": 1.1, "top_k": 20})
    code, summary, rows = plan(path)
    assert code == 1 and "1 refused option(s)" in summary, summary
    note = rows["sampling"].note
    assert "sampling.temperature 1.1 (the script's: 0.9), sampling.top_k 20 (the script's: 50)" in note
    assert "cfg_coef" not in note.split(":")[0]  # 1.5 is the script's own value


def test_a_checkout_without_generate_py_is_listed(tmp_path):
    repo, checkpoint = tmp_path / "SongGeneration", tmp_path / "ckpt"
    songgeneration(repo, checkpoint)
    (repo / "generate.py").unlink()
    options = {"repo_dir": str(repo), "checkpoint_dir": str(checkpoint)}
    code, summary, rows = plan(edited_example(tmp_path, model={"backend": "levo", "options": options}))
    assert code == 1 and rows["model.options.repo_dir"].ok
    assert "generate.py not found" in rows["model.options"].note and str(repo) in rows["model.options"].note
