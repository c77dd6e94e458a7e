"""The CLI as a user runs it: real subprocesses, a real Prefect server, real files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import load_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs/tiny.yaml"


def songpref(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "songpref", *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def server_env(prefect_api_url):
    return {**os.environ, "PREFECT_API_URL": prefect_api_url}


def parquet_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_round_run_until_conditions_then_rerun_skips(tmp_path, server_env):
    out = tmp_path / "round"
    first = songpref("round", "run", "--config", TINY, "--out", out, "--until", "conditions", env=server_env)
    assert first.returncode == 0, first.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["lyrics"]["status"] == "done" and manifest["stages"]["lyrics"]["rows"] == load_config(TINY).lyrics.count
    assert manifest["stages"]["conditions"]["status"] == "done" and manifest["stages"]["conditions"]["rows"] >= 48
    before = parquet_bytes(out)
    second = songpref("round", "run", "--config", TINY, "--out", out, "--until", "conditions", env=server_env)
    assert second.returncode == 0, second.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["lyrics"]["metrics"]["shards_built"] == 0
    assert manifest["stages"]["conditions"]["metrics"]["shards_built"] == 0
    assert parquet_bytes(out) == before
    status = songpref("round", "status", out)
    assert status.returncode == 0 and "conditions" in status.stdout and "done" in status.stdout


def test_killed_mid_stage_then_rerun_equals_uninterrupted_run(tmp_path, server_env):
    args = ["--config", TINY, "--until", "conditions", "--set", "lyrics.count=4000", "--set", "lyrics.shard_size=100"]
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "songpref", "round", "run", *map(str, args), "--out", str(killed)],
        cwd=REPO, env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while len(list((killed / "lyrics").glob("shard-*.parquet"))) < 3:
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "no lyrics shard appeared in time"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    partial = len(list((killed / "lyrics").glob("shard-*.parquet")))
    assert 3 <= partial < 40, "the kill came too late to interrupt the stage"
    assert json.loads((killed / "manifest.json").read_text())["stages"]["lyrics"]["status"] == "running"

    resumed = songpref("round", "run", *args, "--out", killed, env=server_env)
    assert resumed.returncode == 0, resumed.stderr
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["stages"]["lyrics"]["metrics"]["shards_skipped"] >= partial

    clean = tmp_path / "clean"
    assert songpref("round", "run", *args, "--out", clean, env=server_env).returncode == 0
    assert parquet_bytes(killed) == parquet_bytes(clean)
    assert not list(killed.rglob(".tmp-*"))


def test_config_error_names_file_key_and_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lyrics:\n  count: 0\n  colour: red\n")
    result = songpref("round", "run", "--config", bad, "--out", tmp_path / "r")
    assert result.returncode == 2
    assert "lyrics.count" in result.stderr and "lyrics.colour: unknown key" in result.stderr and str(bad) in result.stderr
    assert not (tmp_path / "r").exists()  # nothing written before the config is valid


def test_an_unknown_stage_is_refused_up_front(tmp_path):
    result = songpref("round", "run", "--config", TINY, "--out", tmp_path / "r", "--until", "lyricz")
    assert result.returncode == 2 and "not a stage" in result.stderr
    result = songpref("round", "run", "--config", TINY, "--out", tmp_path / "r", "--only", "dpo/nope")
    assert result.returncode == 2 and "unknown stage" in result.stderr and not (tmp_path / "r").exists()


def test_config_show_and_schema():
    shown = songpref("config", "show", "--config", TINY, "--set", "lyrics.count=100")
    assert shown.returncode == 0 and "count: 100" in shown.stdout and "# config hash:" in shown.stdout
    schema = json.loads(songpref("config", "schema").stdout)
    assert "lyrics" in schema["properties"]


def test_conditions_export_for_levo(tmp_path, server_env):
    out = tmp_path / "round"
    assert songpref("round", "run", "--config", TINY, "--out", out, "--until", "conditions", "--set", "lyrics.count=20",
                    env=server_env).returncode == 0  # fmt: skip
    exported = tmp_path / "levo.jsonl"
    assert songpref("conditions", "export", out, "--out", exported).returncode == 0
    records = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(records) == 20
    assert all({"idx", "gt_lyric", "descriptions"} <= set(r) and ("prompt_audio_path" in r) != ("auto_prompt_audio_type" in r) for r in records)


def test_lyrics_validate_flags_exactly_the_broken_levo_records(levo_reference, tmp_path):
    fixed = tmp_path / "fixed.jsonl"
    result = songpref("lyrics", "validate", levo_reference / "test100_v2_sg_des.jsonl", "--fixed", fixed)
    assert result.returncode == 1
    flagged = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("idx ")}
    assert set(flagged) == {str(i) for i in range(1, 29)}
    assert {idx for idx, line in flagged.items() if " 0 error(s)" not in line} == {"9", "10"}
    assert "2 of 100 records invalid (errors: excluded); 26 with warnings only (repaired, kept)" in result.stdout
    record_9 = result.stdout.split("idx 9 ")[1].split("idx 10 ")[0]
    assert "error missing_tag" in record_9 and "单选题" in record_9 and "warning separator" in record_9
    kept = [json.loads(line) for line in fixed.read_text(encoding="utf-8").splitlines()]
    assert len(kept) == 98 and {"9", "10"}.isdisjoint(r["idx"] for r in kept)
    again = songpref("lyrics", "validate", fixed)
    assert again.returncode == 0 and "0 of 98 records invalid (errors: excluded); 0 with warnings only" in again.stdout


def test_lyrics_validate_clean_file_and_bad_lines(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"idx": "a", "gt_lyric": "[intro-short] ; [verse] Hello there. ; [outro-short]"}) + "\n")
    result = songpref("lyrics", "validate", good)
    assert result.returncode == 0 and "0 of 1 records invalid" in result.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"idx": "x"}\nnot json\n')
    result = songpref("lyrics", "validate", bad)
    assert result.returncode == 1 and "no gt_lyric" in result.stdout and "not JSON" in result.stdout


def test_round_through_scores_then_score_one_scorer_again(tmp_path, server_env):
    out = tmp_path / "round"
    small = ["--set", "lyrics.count=3", "--set", "sampling.num_candidates=2"]
    run = songpref("round", "run", "--config", TINY, "--out", out, "--until", "scores", *small, env=server_env, timeout=600)
    assert run.returncode == 0, run.stderr
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert set(stages) == {"lyrics", "conditions", "candidates", "scores/per", "scores/similarity"}
    assert all(record["status"] == "done" for record in stages.values())
    assert stages["scores/per"]["rows"] == stages["candidates"]["rows"] == 6
    again = songpref("score", "--scorer", "per", out, env=server_env)
    assert again.returncode == 0, again.stderr
    record = json.loads((out / "manifest.json").read_text())["stages"]["scores/per"]
    assert record["status"] == "done" and record["metrics"]["shards_skipped"] == 1
    bad = songpref("score", "--scorer", "loudness", out)
    assert bad.returncode == 2 and "scorers are: per, similarity, reward" in " ".join(bad.stderr.split())
    status = songpref("round", "status", out)
    assert "scores/similarity" in status.stdout


def test_config_typos_fail_config_show_on_one_line_each(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dpo:\n  defaults: {max_step: 40, beta: high}\nreward_model: {bogus: 1}\nsweep: {stepp: 0.5}\nmodel: {backend: nosuch}\n")
    result = songpref("config", "show", "--config", bad)
    assert result.returncode == 2
    lines = result.stderr.splitlines()[1:]
    assert len(lines) == 5 and all(line.startswith(f"{bad}: ") for line in lines), lines


def test_round_plan_lists_parts_shards_and_needs_and_writes_nothing(tmp_path):
    plan = songpref("round", "plan", "--config", TINY, "--out", tmp_path / "r")
    assert plan.returncode == 0, plan.stderr
    out = " ".join(plan.stderr.split())
    assert "dpo/musicality" in out and "scores/reward" in out and "every path found" in out
    assert not (tmp_path / "r").exists()
    missing = tmp_path / "missing.yaml"
    missing.write_text("conditions:\n  prompt_library: /nonexistent/clips\n")
    plan = songpref("round", "plan", "--config", missing)
    assert plan.returncode == 1 and "conditions.prompt_library" in plan.stderr and "missing" in plan.stderr
