"""The scores stages in-process on a small real round: rows, keys, reruns, failures counted."""

import hashlib
import shutil
import stat
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.config import RoundConfig
from pipeline.manifest import open_round, read_manifest
from flows.stages import run_stage_locally, stages_until
from pipeline.store import RoundStore

BASE = {
    "seed": 11,
    "lyrics": {"count": 4, "shard_size": 16, "generator": {"backend": "template", "min_sentences": 1,
                                                           "max_sentences": 1, "max_sections": 3}},
    "sampling": {"num_candidates": 2},
}  # fmt: skip


def config_for(**sections) -> RoundConfig:
    raw = {key: dict(value) if isinstance(value, dict) else value for key, value in BASE.items()}
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return RoundConfig.model_validate(raw)


def run(root: Path, config: RoundConfig, stages=("lyrics", "conditions", "candidates", "scores/per", "scores/similarity")):
    store = RoundStore(str(root))
    open_round(store, config)
    return store, {name: run_stage_locally(name, config, store) for name in stages}


def rows(store: RoundStore, name: str) -> list[dict]:
    record = read_manifest(store)["stages"][name]
    return pa.concat_tables(store.read_table(f"{name}/{f}") for f in record["outputs"]).to_pylist()


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("round")
    store, records = run(root, config_for())
    return root, store, records


def test_every_candidate_gets_both_scores(scored):
    root, store, records = scored
    candidates = {r["candidate_id"]: r for r in rows(store, "candidates")}
    per, similarity = rows(store, "scores/per"), rows(store, "scores/similarity")
    assert {r["candidate_id"] for r in per} == {r["candidate_id"] for r in similarity} == set(candidates)
    for row in per:
        assert row["error"] is None and 0 <= row["per"] and 0 <= row["wer"] and row["language"] == "en"
        vocals = (root / candidates[row["candidate_id"]]["vocals_uri"]).read_bytes()
        assert row["audio_sha256"] == hashlib.sha256(vocals).hexdigest()  # ASR hears the vocals stem
    for row in similarity:  # a song too short to judge (the model may end early) is a counted failure
        assert (row["error"] is None and 0.0 <= row["similarity"] <= 1.0) or (row["error"] and row["similarity"] is None)
    assert sum(row["error"] is None for row in similarity) >= len(similarity) / 2
    for name, scored in (("scores/per", per), ("scores/similarity", similarity)):
        metrics = records[name]["metrics"]
        assert records[name]["status"] == "done" and metrics["scored"] + metrics["failed"] == len(candidates)
        assert metrics["failed"] == sum(row["error"] is not None for row in scored)
        assert metrics["audio_seconds_per_second"] > 0 and metrics["scorer"]["backend"]


def test_rerun_skips_and_one_scorer_change_rescores_only_that_scorer(scored):
    root, store, first = scored
    _, again = run(root, config_for())
    assert all(again[n]["metrics"]["shards_built"] == 0 for n in again)
    changed = config_for(scoring={"similarity": {"backend": "attributes", "weight_tempo": 2.0}})
    _, after = run(root, changed, stages=("lyrics", "conditions", "candidates", "scores/per", "scores/similarity"))
    assert after["scores/per"]["metrics"]["shards_built"] == 0
    assert after["scores/similarity"]["metrics"]["shards_built"] == 1
    assert after["scores/per"]["outputs"] == first["scores/per"]["outputs"]


def test_unscorable_candidates_are_rows_with_reasons(tmp_path):
    """A candidate that failed to render and one whose audio is corrupt: error rows, counted."""
    wrapper = tmp_path / "flite"
    wrapper.write_text(f'#!/bin/sh\ncase " $* " in *" slt "*"-t"*) exit 3;; esac\nexec {shutil.which("flite")} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    config = config_for(model={"options": {"flite_binary": str(wrapper)}})
    store, records = run(tmp_path / "r", config, stages=("lyrics", "conditions", "candidates"))
    rendered = [r for r in rows(store, "candidates") if not r["error"]]
    assert rendered and len(rendered) < records["candidates"]["rows"]
    Path(store.path(rendered[0]["vocals_uri"])).write_bytes(b"not a flac file")
    per = run_stage_locally("scores/per", config, store)
    failed = {r["candidate_id"]: r["error"] for r in rows(store, "scores/per") if r["error"]}
    assert per["status"] == "done" and per["metrics"]["failed"] == len(failed) == records["candidates"]["rows"] - len(rendered) + 1
    assert "no audio" in failed[next(c for c in failed if c != rendered[0]["candidate_id"])]
    assert rendered[0]["candidate_id"] in failed


def test_scores_is_one_stage_of_two_parts():
    assert stages_until("scores")[-2:] == ["scores/per", "scores/similarity"]


def test_reward_model_trains_on_simulated_rankings_and_scores_every_candidate(scored):
    root, store, _ = scored
    config = config_for()
    records = {name: run_stage_locally(name, config, store) for name in ("reward_model", "scores/reward")}
    trained = records["reward_model"]
    assert trained["status"] == "done" and trained["metrics"]["simulated"] and trained["metrics"]["pairs_train"] > 0
    assert (root / "reward_model" / "model" / "eval.json").is_file()
    rankings = rows(store, "reward_model")
    assert rankings and all(r["simulated"] for r in rankings)
    rewards = rows(store, "scores/reward")
    assert {r["candidate_id"] for r in rewards} == {r["candidate_id"] for r in rows(store, "candidates")}
    assert all(r["error"] is None and r["reward"] == r["reward"] and r["simulated"] for r in rewards)
    again = {name: run_stage_locally(name, config, store) for name in ("reward_model", "scores/reward")}
    assert all(record["metrics"]["shards_built"] == 0 for record in again.values())


def test_reward_model_options_are_checked_with_their_key(scored):
    _, store, _ = scored
    with pytest.raises(ValueError, match="reward_model.training.num_epochs"):  # now when the config loads
        bad = config_for(reward_model={"training": {"num_epochs": 0}})
        run_stage_locally("reward_model", bad, store)
