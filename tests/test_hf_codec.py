"""The `hf-codec` backend on tiny random models built offline (tests/hfcodec_fixtures.py): sampling
with recorded seeds, its text forms, and a whole round lyrics -> sweep on it (transcribed by a
random Whisper, ranked by a stand-in campaign export)."""

import json
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from hfcodec_fixtures import build, write_rankings

REPO = Path(__file__).resolve().parents[1]
CONDITION = {"condition_id": "c-1", "lyric": "[verse] the light is low. we walk the road ; [chorus] sing it out",
             "description": "female, pop, happy, piano, the bpm is 100."}  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build(tmp_path_factory.mktemp("hfcodec"))


@pytest.fixture(autouse=True)
def registered(tmp_path_factory, monkeypatch):
    """The pyproject line as an installed distribution declares it, so these tests also run in a
    checkout whose editable install predates the line (the same class: no clash when both exist)."""
    site = tmp_path_factory.getbasetemp() / "hfcodec-site"
    dist = site / "songpref_hfcodec-0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: songpref-hfcodec\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[songpref.models]\nhf-codec = pipeline.models.hf_codec:HfCodecSongModel\n")
    monkeypatch.syspath_prepend(str(site))


def options(models, **extra) -> dict:
    lm, codec, _ = models
    return {"checkpoint": str(lm), "codec": str(codec), "codebook_size": 64, "max_frames": 24, "batch_size": 2, **extra}


def test_pyproject_registers_the_backend():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["songpref.models"]
    assert declared["hf-codec"] == "pipeline.models.hf_codec:HfCodecSongModel"


def test_songs_follow_their_seeds_and_read_back_as_the_ids_they_were_sampled_as(models, tmp_path):
    from pipeline.models.base import CandidateRequest, SamplingParams
    from pipeline.models.registry import load_song_model, trainable_policy

    model = load_song_model("hf-codec", options(models))
    requests = [CandidateRequest(f"c-1-{j}", CONDITION, 10 + j) for j in range(3)]
    results = model.sample(requests, SamplingParams(), tmp_path / "a")
    songs = [json.loads(r.tokens.read_text()) for r in results]
    assert all(r.error is None and set(r.audio) == {"mix", "vocals", "accompaniment"} for r in results)
    assert len({json.dumps(s) for s in songs}) == 3 and all(len(s["vocals"]) == len(s["accompaniment"]) for s in songs)
    again = model.sample(requests[2:], SamplingParams(), tmp_path / "b")  # alone, in another batch
    assert json.loads(again[0].tokens.read_text()) == songs[2]
    assert again[0].audio["mix"].read_bytes() == results[2].audio["mix"].read_bytes()

    policy = trainable_policy("hf-codec", options(models))
    ids = policy.tokenizer(policy.prompt_text(CONDITION) + policy.completion_text(songs[0]))["input_ids"]
    assert ids == policy.prompt_ids(CONDITION) + policy.songs(policy.tokenizer).completion_ids(songs[0])
    lm, _ = policy.load()
    parts = policy.stream_logprobs(lm, [CONDITION], [songs[0]])
    assert set(parts) == {"vocals", "accompaniment", "end"} and all(float(v[0]) < 0 for v in parts.values())
    with pytest.raises(ValueError, match="outside the codebook"):
        policy.completion_text({"vocals": [64], "accompaniment": [0]})
    renamed = trainable_policy("hf-codec", options(models, code_token="<a_{}>"))
    with pytest.raises(RuntimeError, match="has no token '<a_0>'.*code_token"):
        renamed.completion_text(songs[0])


def test_a_whole_round_runs_on_hf_codec(models, tmp_path):
    from flows.stages import run_stage_locally, stages_until
    from pipeline.config import RoundConfig
    from pipeline.manifest import open_round
    from pipeline.store import RoundStore

    root, rankings = tmp_path / "round", tmp_path / "rankings.parquet"
    config = RoundConfig.model_validate({
        "seed": 3,
        "lyrics": {"count": 4, "generator": {"backend": "template", "min_sentences": 1, "max_sentences": 1, "max_sections": 2}},
        "model": {"backend": "hf-codec", "options": options(models, batch_size=4, max_frames=60, min_frames=50)},
        "sampling": {"num_candidates": 4},
        "scoring": {"similarity": {"backend": "attributes", "min_seconds": 0.9},  # songs of 1 to 1.2 s
                    "transcriber": {"backend": "whisper", "checkpoint": str(models[2]), "device": "cpu", "max_tokens": 24}},
        "reward_model": {"rankings": str(rankings)},
        "pairs": {"lyrics": {"per_gap": 0.0}, "prompt": {"thresholds": "quantile", "upper": 0.5, "lower": 0.5, "min_gap": 0.0},
                  "musicality": {"reward_margin": 0.0}, "selection": {"test_fraction": 0.25}},
        "dpo": {"defaults": {"max_steps": 2, "batch_size": 2, "save_steps": 2, "learning_rate": 1e-3}, "kl_samples": 1},
        "sweep": {"step": 1.0, "prompts": 1, "seeds": 1},
    })  # fmt: skip
    store = RoundStore(str(root))
    open_round(store, config)
    for part in stages_until(None):
        if part == "reward_model":
            write_rankings(root, rankings)
        record = run_stage_locally(part, config, store)
        assert record["status"] == "done", (part, record.get("errors"))

    stages = json.loads((root / "manifest.json").read_text())["stages"]
    base = load_file(models[0] / "model.safetensors")
    trained = [s for s in ("lyrics", "prompt", "musicality", "joint") if stages[f"dpo/{s}"]["metrics"]["status"] == "trained"]
    assert len(trained) >= 3, {s: stages[f"dpo/{s}"]["metrics"] for s in ("lyrics", "prompt", "musicality", "joint")}
    dpo = {s: load_file(root / f"dpo/{s}/model/model.safetensors") for s in trained}
    for strategy, weights in dpo.items():  # DPO changed the weights
        assert any(not torch.equal(weights[k], base[k]) for k in base), strategy
    assert stages[f"dpo/{trained[0]}"]["metrics"]["samples"] == 1  # the KL estimate sampled through the policy

    merged = load_file(root / "merge/dni/model.safetensors")
    inputs = json.loads((root / "merge/dni/merge_manifest.json").read_text())["inputs"]
    alphas = {Path(i["path"]).parent.name: i["weight"] for i in inputs}  # dpo/<strategy>/model
    assert set(alphas) == {s for s in trained if s != "joint"} and sum(alphas.values()) == pytest.approx(1.0)
    for key in base:  # the merge is sum_i alpha_i theta_i
        expected = sum(alpha * dpo[s][key] for s, alpha in alphas.items())
        torch.testing.assert_close(merged[key], expected, rtol=1e-5, atol=1e-6)

    results = pd.read_parquet(root / "sweep/results.parquet")
    assert {"base", "dni"} <= set(results["point"]) and len(results) >= len(alphas) + 2
    assert stages["ablation"]["metrics"]["status"] == "skipped"


def test_lora_dpo_on_the_lm_saves_an_adapter_the_backend_samples_from(models, tmp_path):
    from datasets import Dataset

    from alignment.dpo.options import DpoOptions, LoraOptions
    from alignment.dpo.trainer import train_dpo
    from pipeline.models.base import CandidateRequest, SamplingParams
    from pipeline.models.registry import load_song_model, trainable_policy

    policy = trainable_policy("hf-codec", options(models))
    model, tokenizer = policy.load()
    songs = policy.sample_streams(model, CONDITION, [1, 2, 3, 4], SamplingParams())
    rows = [{"prompt": policy.prompt_text(CONDITION), "chosen": policy.completion_text(songs[i]),
             "rejected": policy.completion_text(songs[i + 2])} for i in range(2)]  # fmt: skip
    run = DpoOptions(max_steps=2, batch_size=2, save_steps=2, learning_rate=1e-2, lora=LoraOptions(r=4, alpha=8))
    trained, _ = train_dpo(model, tokenizer, Dataset.from_list(rows), run, tmp_path / "run", seed=0)
    policy.save(trained, tokenizer, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()

    merged, _ = policy.load(tmp_path / "adapter")  # the adapter on its base, merged
    base = load_file(models[0] / "model.safetensors")
    assert any(not torch.equal(merged.state_dict()[k], base[k]) for k in base)
    def margin(lm):  # log-likelihood of the first pair's chosen song over its rejected one
        chosen, rejected = (sum(policy.stream_logprobs(lm, [CONDITION], [songs[i]]).values()) for i in (0, 2))
        return float(chosen - rejected)

    assert margin(merged) > margin(load_song_model("hf-codec", options(models)).lm)
    adapted = load_song_model("hf-codec", options(models, checkpoint=str(tmp_path / "adapter")))
    result = adapted.sample([CandidateRequest("c-1-0", CONDITION, 1)], SamplingParams(), tmp_path / "songs")[0]
    assert result.error is None and json.loads(result.tokens.read_text())["vocals"]
