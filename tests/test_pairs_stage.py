"""The pairs stage on a small real round: TRL datasets per strategy, counts, empty and missing inputs,
and TRL's DPOTrainer taking every dataset as written."""

import json

import pyarrow.parquet as pq
import pytest
import torch
from datasets import load_dataset

from alignment.dpo.options import DpoOptions
from alignment.dpo.trainer import train_dpo
from alignment.tiny_policy import TinyPolicy
from pipeline.manifest import open_round, read_manifest
from pipeline.models.tiny.preference_text import TinySongTokenizer
from pipeline.models.tiny.song_model import CHECKPOINT_DIR
from pipeline.pairs.dataset import dataset_files, dataset_schema
from flows.stages import run_stage_locally
from pipeline.store import RoundStore
from small_round import UPSTREAM, config

# The round is built once per session (about a minute on 2 quiet cores; far more on a loaded machine).
pytestmark = pytest.mark.timeout(900)


def test_every_strategy_writes_a_trl_dataset_with_ids_audio_and_scores(round_dir):
    root, store = round_dir
    metrics = read_manifest(store)["stages"]["pairs"]["metrics"]
    assert set(metrics["strategies"]) == {"lyrics", "prompt", "musicality", "joint"} and not metrics["empty"]
    for strategy, counts in metrics["strategies"].items():
        files = {s: str(root / p) for s, p in dataset_files(strategy).items() if (root / p).exists()}
        data = load_dataset("parquet", data_files=files, cache_dir=str(root / ".hf"))
        assert counts["status"] == "written" and counts["pairs"] == sum(len(d) for d in data.values()) > 0
        assert counts["train"] == len(data["train"]) and counts["test"] == len(data.get("test", []))
        assert pq.read_schema(files["train"]).remove_metadata() == dataset_schema()
        for row in data["train"]:
            assert row["strategy"] in (strategy, "lyrics", "prompt", "musicality") and row["split"] == "train"
            assert row["chosen"].endswith("</m>") and row["prompt"].startswith("K1 ")
            assert (root / row["chosen_audio_uri"]).is_file() and row["chosen_id"] != row["rejected_id"]
            if strategy == "lyrics":
                assert row["chosen_per"] + 5 < row["rejected_per"] and row["chosen_score"] == row["chosen_per"]
            if strategy == "musicality":
                assert row["chosen_reward"] >= row["rejected_reward"]
        train_prompts, test_prompts = set(data["train"]["prompt_id"]), set(data.get("test", {"prompt_id": []})["prompt_id"])
        assert not train_prompts & test_prompts  # held out by prompt
    joint = metrics["strategies"]["joint"]
    parts = sum(metrics["strategies"][s]["pairs"] for s in ("lyrics", "prompt", "musicality"))
    assert joint["pairs"] == parts - joint["dropped"]["joint_duplicates"]


def test_trl_dpo_trainer_takes_each_dataset_unchanged(round_dir, tmp_path):
    root, _ = round_dir
    for strategy in ("lyrics", "prompt", "musicality", "joint"):
        data = load_dataset("parquet", data_files={"train": str(root / dataset_files(strategy)["train"])},
                            cache_dir=str(root / ".hf"))  # fmt: skip
        model = TinyPolicy.from_pretrained(CHECKPOINT_DIR, torch_dtype=torch.float32)
        _, metrics = train_dpo(model, TinySongTokenizer.for_model(model), data["train"],
                               DpoOptions(max_steps=1, batch_size=2), tmp_path / strategy, seed=0)  # fmt: skip
        assert [r["step"] for r in metrics["log"] if "loss" in r] == [1], strategy


def test_rerun_skips_and_nothing_selected_is_reported_not_written(round_dir):
    root, store = round_dir
    again = run_stage_locally("pairs", config(), store)
    assert again["metrics"]["shards_built"] == 0 and again["metrics"]["shards_skipped"] == 4
    strict = config(lyrics={"per_gap": 1000})
    record = run_stage_locally("pairs", strict, store)
    assert record["status"] == "done" and record["metrics"]["shards_built"] == 2  # lyrics and joint
    lyrics = record["metrics"]["strategies"]["lyrics"]
    assert lyrics["status"] == "empty" and lyrics["pairs"] == 0 and lyrics["dropped"]["below_threshold"] > 0
    assert record["metrics"]["empty"] == ["lyrics"]
    assert not any((root / p).exists() for p in dataset_files("lyrics").values())
    assert (root / dataset_files("prompt")["train"]).exists()
    run_stage_locally("pairs", config(), store)  # back to the fixture's state for the other tests


def test_a_missing_score_table_fails_that_strategy_alone(tmp_path, round_dir):
    root, _ = round_dir
    store = RoundStore(str(tmp_path))
    open_round(store, config())
    manifest = json.loads((root / "manifest.json").read_text())
    for name in UPSTREAM[:-2]:  # everything but the reward model
        record = manifest["stages"][name]
        for output in record["outputs"]:
            (tmp_path / name).mkdir(parents=True, exist_ok=True)
            (tmp_path / name / output).write_bytes((root / name / output).read_bytes())
    (tmp_path / "candidates" / "audio").symlink_to(root / "candidates" / "audio")
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["stages"] = {n: manifest["stages"][n] for n in UPSTREAM[:-2]}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    record = run_stage_locally("pairs", config(), store)
    assert record["status"] == "failed"
    assert len(record["errors"]) == 2 and all("needs scores/reward" in e for e in record["errors"])
    assert (tmp_path / dataset_files("lyrics")["train"]).exists()
