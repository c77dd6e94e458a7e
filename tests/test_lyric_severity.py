"""Errors vs warnings of the lyric checker: what LeVo's parser cannot take excludes a lyric; a
style LeVo accepts is repaired and the lyric kept, by `lyrics validate` and by the candidates stage.

The self-made fixture (tests/data/lyric_severity.jsonl) covers every case and always runs; LeVo's
own test set is read from ../shared/reference when present (licensed test data, not in the repo).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from pipeline.config import RoundConfig
from pipeline.lyrics.format import fix_style, lyric_errors, validate_lyrics
from pipeline.stages.base import ShardSpec
from pipeline.stages.candidates import CandidatesStage
from pipeline.store import RoundStore
from songpref.cli import app

TESTS = Path(__file__).resolve().parent
FIXTURE = TESTS / "data" / "lyric_severity.jsonl"
LEVO_TEST_SET = TESTS.parents[1] / "shared/reference/levo/test100_v2_sg_des.jsonl"


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def levo_records() -> list[dict]:
    if not LEVO_TEST_SET.exists():
        pytest.skip(f"LeVo test set not present at {LEVO_TEST_SET} (licensed test data, not in the repo)")
    return records(LEVO_TEST_SET)


@pytest.mark.parametrize("record", records(FIXTURE), ids=lambda r: r["idx"])
def test_each_case_has_its_severity_and_only_warnings_are_repaired(record):
    problems = validate_lyrics(record["gt_lyric"])
    severities = {p.code: p.severity for p in problems}
    fixed = fix_style(record["gt_lyric"])
    if record["expect"] == "clean":
        assert problems == [] and fixed == record["gt_lyric"]
    elif record["expect"] == "warning":
        assert severities == {record["code"]: "warning"}
        assert validate_lyrics(fixed) == []  # repaired: no problem left
    else:
        assert severities[record["code"]] == "error"
        assert [p.code for p in lyric_errors(fixed)] == [p.code for p in lyric_errors(record["gt_lyric"])]  # never guessed


def test_levo_test_set_has_two_errors_and_26_warnings(levo_records):
    errors = {r["idx"] for r in levo_records if lyric_errors(r["gt_lyric"])}
    warned = {r["idx"] for r in levo_records if validate_lyrics(r["gt_lyric"])} - errors
    assert errors == {"9", "10"} and len(warned) == 26
    assert all(validate_lyrics(fix_style(r["gt_lyric"])) == [] for r in levo_records if r["idx"] in warned)


def test_lyrics_validate_reports_errors_and_warnings_and_writes_the_usable_records(tmp_path):
    fixed = tmp_path / "fixed.jsonl"
    result = CliRunner().invoke(app, ["lyrics", "validate", str(FIXTURE), "--fixed", str(fixed)])
    expected = [r["expect"] for r in records(FIXTURE)]
    assert result.exit_code == 1
    summary = (f"{expected.count('error')} of {len(expected)} records invalid (errors: excluded); "
               f"{expected.count('warning')} with warnings only (repaired, kept)")  # fmt: skip
    assert summary in result.output
    assert "idx warn-separator (line 3): 0 error(s), 1 warning(s)" in result.output
    assert "  - error unknown_tag: section 2 [pre-chorus]" in result.output
    kept = records(fixed)
    assert [r["idx"] for r in kept] == [r["idx"] for r in records(FIXTURE) if r["expect"] != "error"]
    assert all(validate_lyrics(r["gt_lyric"]) == [] for r in kept)


def conditions_shard(store: RoundStore, lyrics: dict[str, str]) -> ShardSpec:
    rows = [{"condition_id": f"c-{idx}", "lyric_id": idx, "lyric": lyric, "language": "zh", "prompt_audio_path": None,
             "auto_prompt_audio_type": "Pop", "description": "female, pop, happy, piano, the bpm is 100."}
            for idx, lyric in lyrics.items()]  # fmt: skip
    store.write_table("conditions/shard-00000.parquet", pa.Table.from_pylist(rows))
    return ShardSpec("candidates", 0, {"conditions": "conditions/shard-00000.parquet"}, {})


def levo_stage(root: Path) -> CandidatesStage:
    (root / "ckpt").mkdir(parents=True, exist_ok=True)
    (root / "ckpt" / "config.yaml").write_text("max_dur: 150\n")
    options = {"repo_dir": str(TESTS / "levo_standin"), "checkpoint_dir": str(root / "ckpt"), "python": sys.executable,
               "command": ["{python}", "generate.py", "{checkpoint_dir}", "{input_jsonl}", "{save_dir}", "--separate"]}  # fmt: skip
    config = RoundConfig.model_validate({"model": {"backend": "levo", "options": options}, "sampling": {"num_candidates": 2}})
    return CandidatesStage(config, RoundStore(str(root / "round")))


def test_candidates_stage_keeps_warned_lyrics_repaired_and_drops_errors(tmp_path):
    lyrics = {r["idx"]: r["gt_lyric"] for r in records(FIXTURE)}
    levo = records(LEVO_TEST_SET) if LEVO_TEST_SET.exists() else []
    lyrics |= {f"levo-{r['idx']}": r["gt_lyric"] for r in levo}
    stage = levo_stage(tmp_path)
    requests, skipped, repaired = stage.requests(conditions_shard(stage.store, lyrics))
    sampled = {r.condition["lyric_id"] for r in requests}
    assert sampled == {idx for idx, lyric in lyrics.items() if not lyric_errors(lyric)}
    assert skipped == len(lyrics) - len(sampled) and repaired == sum(bool(validate_lyrics(lyrics[i])) for i in sampled)
    assert all(validate_lyrics(r.condition["lyric"]) == [] for r in requests)  # the model gets the repaired lyric
    if levo:  # LeVo's test set: only 9 and 10 are dropped; the 26 warned records are all sampled
        assert {i for i in lyrics if i.startswith("levo-")} - sampled == {"levo-9", "levo-10"}
        assert sum(i.startswith("levo-") and bool(validate_lyrics(lyrics[i])) for i in sampled) == 26


def test_candidates_stage_renders_a_warned_lyric_with_levo(tmp_path):
    """Through the LeVo adapter (its stand-in generate.py): the warned lyric becomes songs, the errored one none."""
    stage = levo_stage(tmp_path)
    fixture = {r["idx"]: r["gt_lyric"] for r in records(FIXTURE)}
    spec = conditions_shard(stage.store, {k: fixture[k] for k in ("warn-separator", "err-missing-tag")})
    table, metrics = stage.build_shard(spec)
    rows = table.to_pylist()
    assert [r["condition_id"] for r in rows] == ["c-warn-separator"] * 2 and all(r["error"] is None for r in rows)
    assert metrics["skipped_invalid_lyrics"] == 1 and metrics["repaired_lyrics"] == 1 and metrics["candidates"] == 2
