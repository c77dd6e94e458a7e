"""Lyrics and conditions stages run in-process (no Prefect): rows, reruns, determinism, bad input."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile

from pipeline.config import RoundConfig
from pipeline.lyrics.format import validate_lyrics
from pipeline.manifest import open_round, read_manifest
from pipeline.stages.lyrics import duplicate_lyric_ids
from flows.stages import run_stage_locally
from pipeline.store import RoundStore
from pipeline.vocab import load_vocabulary


def run(root: Path, **overrides) -> tuple[RoundStore, dict]:
    raw = {"seed": 7, "lyrics": {"count": 40, "shard_size": 16}}
    for key, value in overrides.items():
        raw.setdefault(key, {}).update(value)
    config = RoundConfig.model_validate(raw)
    store = RoundStore(str(root))
    open_round(store, config)
    records = {name: run_stage_locally(name, config, store) for name in ("lyrics", "conditions")}
    return store, records


def shard_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_lyrics_and_conditions_rows(tmp_path):
    store, records = run(tmp_path)
    assert records["lyrics"]["status"] == "done" and records["lyrics"]["rows"] == 40
    assert len(records["lyrics"]["outputs"]) == 3  # 16 + 16 + 8
    lyrics = pa.concat_tables(store.read_table(f"lyrics/{n}") for n in records["lyrics"]["outputs"]).to_pylist()
    assert all(row["valid"] and not validate_lyrics(row["text"]) for row in lyrics)
    conditions = pa.concat_tables(store.read_table(f"conditions/{n}") for n in records["conditions"]["outputs"])
    rows = conditions.to_pylist()
    assert records["conditions"]["rows"] == len(rows) == 40
    by_lyric = {row["lyric_id"]: row for row in lyrics}
    vocab = load_vocabulary()
    for row in rows:
        assert row["emotion"] == by_lyric[row["lyric_id"]]["emotion"]
        assert row["genre"] in {g.name for g in vocab.genres}
        assert row["description"].endswith(f"the bpm is {row['bpm']}.")
        assert (row["prompt_audio_path"] is None) != (row["auto_prompt_audio_type"] is None)


def test_same_config_same_bytes_and_rerun_skips(tmp_path):
    run(tmp_path / "a")
    run(tmp_path / "b")
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")
    _, again = run(tmp_path / "a")
    assert again["lyrics"]["metrics"]["shards_built"] == 0 and again["lyrics"]["metrics"]["shards_skipped"] == 3
    assert again["conditions"]["metrics"]["shards_built"] == 0


def test_changing_conditions_rebuilds_only_conditions(tmp_path):
    run(tmp_path)
    before = shard_bytes(tmp_path)
    store, records = run(tmp_path, conditions={"auto_prompt": "random"})
    assert records["lyrics"]["metrics"]["shards_built"] == 0
    assert records["conditions"]["metrics"]["shards_built"] == 3
    after = shard_bytes(tmp_path)
    assert {k: v for k, v in after.items() if k.startswith("lyrics")} == {k: v for k, v in before.items() if k.startswith("lyrics")}
    assert len([k for k in after if k.startswith("conditions")]) == 3  # stale shards removed


def test_lyrics_that_cannot_fit_are_kept_with_errors_and_excluded(tmp_path):
    store, records = run(tmp_path, lyrics={"max_tokens": 16})
    lyrics = pa.concat_tables(store.read_table(f"lyrics/{n}") for n in records["lyrics"]["outputs"]).to_pylist()
    assert len(lyrics) == 40 and not any(row["valid"] for row in lyrics)
    assert all(row["errors"][0].startswith("generator: cannot fit a lyric under max_tokens=16") for row in lyrics)
    assert records["lyrics"]["metrics"]["invalid"] == 40
    assert records["conditions"]["rows"] == 0 and records["conditions"]["metrics"]["skipped_invalid"] == 40


def test_unsupported_language_is_recorded_not_fatal(tmp_path):
    store, records = run(tmp_path, lyrics={"languages": {"en": 1, "zh": 1}})
    lyrics = pa.concat_tables(store.read_table(f"lyrics/{n}") for n in records["lyrics"]["outputs"]).to_pylist()
    chinese = [row for row in lyrics if row["language"] == "zh"]
    assert chinese and all(not row["valid"] and "English only" in row["errors"][0] for row in chinese)
    assert records["conditions"]["rows"] == 40 - len(chinese)


def test_duplicates_first_occurrence_wins(tmp_path):
    store = RoundStore(str(tmp_path))
    schema = pa.schema([("lyric_id", pa.string()), ("valid", pa.bool_()), ("norm_digest", pa.string())])
    store.write_table("lyrics/shard-00000-a.parquet", pa.Table.from_pylist(
        [{"lyric_id": "l0", "valid": True, "norm_digest": "x"}, {"lyric_id": "l1", "valid": False, "norm_digest": "y"}], schema))
    store.write_table("lyrics/shard-00001-b.parquet", pa.Table.from_pylist(
        [{"lyric_id": "l2", "valid": True, "norm_digest": "x"}, {"lyric_id": "l3", "valid": True, "norm_digest": "y"},
         {"lyric_id": "l4", "valid": True, "norm_digest": "y"}], schema))
    found = duplicate_lyric_ids(store, ["lyrics/shard-00000-a.parquet", "lyrics/shard-00001-b.parquet"])
    assert found == {"l2", "l4"}  # l3 is kept: the earlier 'y' was invalid


def test_prompt_library_with_a_corrupt_clip(tmp_path):
    library = tmp_path / "clips"
    library.mkdir()
    for name in ("a.wav", "b.flac"):
        soundfile.write(library / name, np.zeros(16000 * 2, dtype="float32"), 16000)
    (library / "broken.wav").write_bytes(b"RIFF not really audio")
    soundfile.write(library / "short.wav", np.zeros(800, dtype="float32"), 16000)
    store, records = run(tmp_path / "round", conditions={"prompt_library": str(library), "library_share": 0.5})
    metrics = records["conditions"]["metrics"]
    assert metrics["prompt_clips_usable"] == 2
    assert {Path(r["path"]).name for r in metrics["prompt_clips_rejected"]} == {"broken.wav", "short.wav"}
    rows = pa.concat_tables(store.read_table(f"conditions/{n}") for n in records["conditions"]["outputs"]).to_pylist()
    clips = [r for r in rows if r["prompt_audio_path"]]
    assert 0 < len(clips) < len(rows) and all(r["auto_prompt_audio_type"] is None for r in clips)
    assert {Path(r["prompt_audio_path"]).name for r in clips} <= {"a.wav", "b.flac"}


def test_manifest_records_config_and_marks_stale(tmp_path):
    store, _ = run(tmp_path)
    manifest = read_manifest(store)
    assert manifest["seed"] == 7 and manifest["config"]["lyrics"]["count"] == 40
    assert manifest["versions"]["pyarrow"] and len(manifest["config_hash"]) == 64
    open_round(store, RoundConfig.model_validate({"seed": 8}))
    assert {r["status"] for r in read_manifest(store)["stages"].values()} == {"stale"}
    json.dumps(manifest)  # plain JSON all the way down


def test_conditions_need_finished_lyrics(tmp_path):
    config = RoundConfig()
    store = RoundStore(str(tmp_path))
    open_round(store, config)
    with pytest.raises(RuntimeError, match="stage 'lyrics' must be done first"):
        run_stage_locally("conditions", config, store)


def test_unreachable_lyrics_endpoint_fails_the_stage_cleanly(tmp_path):
    import socket

    from pipeline.lyrics.llm_common import LyricsBackendError

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    generator = {"backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m", "max_retries": 1, "backoff_s": 0.01}
    config = RoundConfig.model_validate({"lyrics": {"count": 8, "generator": generator}})
    store = RoundStore(str(tmp_path))
    open_round(store, config)
    with pytest.raises(LyricsBackendError, match=f"cannot reach OpenAI-compatible endpoint at http://127.0.0.1:{port}/v1"):
        run_stage_locally("lyrics", config, store)
    record = read_manifest(store)["stages"]["lyrics"]
    assert record["status"] == "failed" and f"127.0.0.1:{port}" in record["errors"][0]
    assert not (tmp_path / "lyrics").exists()


def test_wall_clock_metrics_are_reported_but_never_stored_in_the_shard(tmp_path):
    """Timings differ between identical runs; a shard file that held them would not be byte-identical,
    and every key hashing it downstream would change with the machine's load."""
    from pipeline.stages.base import METRICS_KEY, ShardSpec, Stage

    class Timed(Stage):
        name = "timed"
        wall_clock_metrics = ("busy_seconds",)

        def plan(self):
            return [ShardSpec(self.name, 0, {}, {})]

        def build_shard(self, spec):
            return pa.table({"x": [1, 2]}), {"rows_seen": 2, "busy_seconds": np.random.default_rng().random()}

    stores = [RoundStore(str(tmp_path / name)) for name in ("a", "b")]
    results = [Timed(RoundConfig(), store).run_shard(Timed(RoundConfig(), store).plan()[0]) for store in stores]
    assert all("busy_seconds" in r.metrics for r in results)  # the run that built it still reports it
    files = [tmp_path / name / results[0].filename for name in ("a", "b")]
    assert files[0].read_bytes() == files[1].read_bytes()
    footer = json.loads(pq.read_metadata(files[0]).metadata[METRICS_KEY])
    assert footer == {"rows_seen": 2}
    skipped = Timed(RoundConfig(), stores[0]).run_shard(Timed(RoundConfig(), stores[0]).plan()[0])
    assert skipped.skipped and skipped.metrics == {"rows_seen": 2}


def test_a_cached_rerun_keeps_the_build_record_and_the_report_shows_every_stage_done(tmp_path):
    _, built = run(tmp_path)
    _, again = run(tmp_path)
    for name in ("lyrics", "conditions"):
        assert again[name]["seconds"] == built[name]["seconds"] and again[name]["metrics"] == {**built[name]["metrics"], "shards_built": 0, "shards_skipped": 3}
        assert again[name]["rerun"]["shards_skipped"] == 3 and again[name]["rerun"]["seconds"] >= 0
    report = (tmp_path / "report.md").read_text()
    assert f"| conditions | done | 40 |  | {built['conditions']['seconds']} |" in report and "running" not in report
    # another config makes lyrics stale: still nothing to build there, so its build time stands
    _, changed = run(tmp_path, conditions={"auto_prompt": "random"})
    assert changed["lyrics"]["seconds"] == built["lyrics"]["seconds"] and "rerun" in changed["lyrics"]
    assert changed["conditions"]["metrics"]["shards_built"] == 3 and "rerun" not in changed["conditions"]
