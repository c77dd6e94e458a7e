"""The candidates stage in-process: rows, audio in the round, seeds, reruns, failures recorded."""

import shutil
import stat
from pathlib import Path

import pyarrow as pa
import pytest
import soundfile

from pipeline.config import RoundConfig
from pipeline.digest import derive_seed
from pipeline.manifest import open_round, read_manifest
from flows.stages import run_stage_locally
from pipeline.store import RoundStore


def run(root: Path, **overrides) -> tuple[RoundStore, dict]:
    raw = {
        "seed": 5,
        "lyrics": {"count": 6, "shard_size": 16, "generator": {"backend": "template", "min_sentences": 1,
                                                               "max_sentences": 1, "max_sections": 3}},
        "sampling": {"num_candidates": 2},
    }  # fmt: skip
    for key, value in overrides.items():
        raw.setdefault(key, {}).update(value)
    config = RoundConfig.model_validate(raw)
    store = RoundStore(str(root))
    open_round(store, config)
    records = {name: run_stage_locally(name, config, store) for name in ("lyrics", "conditions", "candidates")}
    return store, records


def candidates(store: RoundStore, record: dict) -> list[dict]:
    return pa.concat_tables(store.read_table(f"candidates/{n}") for n in record["outputs"]).to_pylist()


@pytest.fixture(scope="module")
def tiny_round(tmp_path_factory):
    root = tmp_path_factory.mktemp("round")
    return root, *run(root)


def test_rows_audio_and_seeds(tiny_round):
    root, store, records = tiny_round
    record = records["candidates"]
    rows = candidates(store, record)
    assert record["status"] == "done" and record["rows"] == len(rows) == 12
    assert [r["candidate_index"] for r in rows] == [0, 1] * 6
    for row in rows:
        assert row["error"] is None and row["model"] == "tiny"
        assert row["candidate_id"] == f"{row['condition_id']}-{row['candidate_index']}"
        assert row["seed"] == derive_seed(5, "candidates", row["condition_id"], row["candidate_index"])
        for stem in ("mix", "vocals", "accompaniment"):
            audio, rate = soundfile.read(root / row[f"{stem}_uri"])
            assert rate == 16000 and len(audio) / rate == pytest.approx(row["duration_seconds"], abs=1e-3)
        assert (root / row["tokens_uri"]).is_file()
    metrics = record["metrics"]
    assert metrics["candidates"] == 12 and metrics["failed"] == 0 and metrics["skipped_invalid_lyrics"] == 0
    assert metrics["candidates_per_second"] > 0 and metrics["audio_seconds_per_second"] > 0
    assert metrics["audio_seconds"] == pytest.approx(sum(r["duration_seconds"] for r in rows), abs=0.01)
    assert metrics["model"]["backend"] == "tiny" and len(metrics["model"]["checkpoint_sha256"]) == 64


def test_rerun_skips_and_a_new_temperature_resamples(tiny_round):
    root, store, first = tiny_round
    _, again = run(root)
    assert again["candidates"]["metrics"]["shards_built"] == 0
    assert again["candidates"]["outputs"] == first["candidates"]["outputs"]
    _, hotter = run(root, sampling={"num_candidates": 2, "temperature": 1.3})
    assert hotter["candidates"]["metrics"]["shards_built"] == 1
    assert hotter["candidates"]["outputs"] != first["candidates"]["outputs"]


def test_a_render_failure_is_recorded_and_the_shard_goes_on(tmp_path):
    """A flite that fails for the female voice: those candidates fail with the reason, the rest render."""
    real = shutil.which("flite")
    wrapper = tmp_path / "flite"
    wrapper.write_text(f'#!/bin/sh\ncase " $* " in *" slt "*"-t"*) echo "voice broke" >&2; exit 3;; esac\nexec {real} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    store, records = run(tmp_path / "r", model={"options": {"flite_binary": str(wrapper)}})
    record = records["candidates"]
    rows = candidates(store, record)
    failed = [r for r in rows if r["error"]]
    assert record["status"] == "done" and failed and len(failed) < len(rows)
    for row in failed:
        assert "voice broke" in row["error"] and row["mix_uri"] is None and row["duration_seconds"] == 0.0
    assert record["metrics"]["failed"] == len(failed)
    assert {f["candidate_id"] for f in record["metrics"]["failures"]} == {r["candidate_id"] for r in failed}


def test_invalid_lyrics_in_conditions_are_skipped_and_counted(tmp_path):
    store, records = run(tmp_path / "r")
    path = f"conditions/{next(iter(records['conditions']['outputs']))}"
    table = store.read_table(path)
    rows = table.to_pylist()
    rows[0]["lyric"] = "[verse] Hello there. ; a section without its structure tag."  # an error: skipped
    rows[1]["lyric"] = "[intro-short]; [verse] no full stop at the end"  # warnings only: sampled, repaired
    store.write_table(path, pa.Table.from_pylist(rows, schema=table.schema))
    config = RoundConfig.model_validate(read_manifest(store)["config"])
    record = run_stage_locally("candidates", config, store)
    assert record["status"] == "done" and record["rows"] == 10
    assert record["metrics"]["skipped_invalid_lyrics"] == 1 and record["metrics"]["repaired_lyrics"] == 1
