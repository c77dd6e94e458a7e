"""The LeVo adapter, run against a stand-in generate.py (tests/levo_standin), not the real model.

The stand-in honours upstream's file contract (argv, jsonl fields, audios/<idx>.flac, stems
with --separate, the prompt XOR check) and reads $SONGPREF_SEED as the patched upstream does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.models.base import CandidateRequest, SamplingParams
from pipeline.models.levo import UPSTREAM_SEED_PATCH, LevoError, LevoOptions, LevoSongModel
from pipeline.models.levo_sampling import UPSTREAM_SAMPLING_PATCH, LevoSamplingError

STANDIN = Path(__file__).resolve().parent / "levo_standin"
COMMAND = ["{python}", "generate.py", "{checkpoint_dir}", "{input_jsonl}", "{save_dir}", "--separate"]
PARAMS = SamplingParams()


def condition(cid: str, lyric: str = "[verse] hello world.", clip: str | None = None, auto: str | None = "Pop") -> dict:
    return {"condition_id": cid, "lyric": lyric, "description": "female, pop, happy, piano, the bpm is 100.",
            "prompt_audio_path": clip, "auto_prompt_audio_type": auto}  # fmt: skip


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.yaml").write_text("max_dur: 150\n")
    return folder


@pytest.fixture
def standin_log(tmp_path: Path) -> Path:
    return tmp_path / "standin-calls.jsonl"


def make_model(ckpt: Path, log: Path, **overrides) -> LevoSongModel:
    options = {"repo_dir": STANDIN, "checkpoint_dir": ckpt, "python": sys.executable, "command": COMMAND,
               "env": {"STANDIN_LOG": str(log)}, "timeout_s": 60}  # fmt: skip
    options.update(overrides)
    return LevoSongModel(LevoOptions(**options))


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_levo_adapter_with_standin_script_writes_stems_per_candidate(tmp_path, ckpt, standin_log):
    model = make_model(ckpt, standin_log)
    requests = [CandidateRequest("cand-a", condition("c-1"), seed=11), CandidateRequest("cand-b", condition("c-1"), seed=12)]
    out = tmp_path / "out"
    results = model.sample(requests, PARAMS, out)
    assert [r.candidate_id for r in results] == ["cand-a", "cand-b"]
    for result in results:
        assert result.error is None
        assert set(result.audio) == {"mix", "vocals", "accompaniment"}
        for stem in ("mix", "vocals", "accompaniment"):
            path = out / result.candidate_id / f"{stem}.flac"
            assert result.audio[stem] == path and path.is_file()
            info = sf.info(str(path))
            assert info.samplerate == 48000
        assert result.duration_seconds == pytest.approx(2.0)
    # one call per seed, each record's idx is the candidate id; no work dirs left behind
    logged = calls(standin_log)
    assert [c["seed"] for c in logged] == ["11", "12"]
    assert [[r["idx"] for r in c["records"]] for c in logged] == [["cand-a"], ["cand-b"]]
    assert sorted(p.name for p in out.iterdir()) == ["cand-a", "cand-b"]
    described = model.describe()
    assert described["backend"] == "levo" and described["seed_honoured"] is True
    assert described["seed_patch_present"] is True
    assert described["sampling"]["forwarded"] == {k: "$SONGPREF_SAMPLING" for k in ("cfg_coef", "temperature", "top_k", "top_p")}
    assert described["checkpoint_fingerprint"]


def test_levo_adapter_with_standin_script_same_seed_same_bytes_different_seed_differs(tmp_path, ckpt, standin_log):
    model = make_model(ckpt, standin_log)
    cond = condition("c-1")
    first = model.sample([CandidateRequest("x", cond, seed=7)], PARAMS, tmp_path / "one")[0]
    again = model.sample([CandidateRequest("x", cond, seed=7)], PARAMS, tmp_path / "two")[0]
    other = model.sample([CandidateRequest("x", cond, seed=8)], PARAMS, tmp_path / "three")[0]
    assert first.error is None and again.error is None and other.error is None
    assert first.audio["mix"].read_bytes() == again.audio["mix"].read_bytes()
    assert first.audio["vocals"].read_bytes() == again.audio["vocals"].read_bytes()
    assert first.audio["mix"].read_bytes() != other.audio["mix"].read_bytes()


def test_levo_adapter_with_standin_script_batches_candidates_sharing_a_seed(tmp_path, ckpt, standin_log):
    requests = [CandidateRequest(f"k{i}", condition(f"c-{i}"), seed=5) for i in range(3)]
    results = make_model(ckpt, standin_log).sample(requests, PARAMS, tmp_path / "out")
    assert all(r.error is None for r in results)
    assert len(calls(standin_log)) == 1
    standin_log.unlink()
    results = make_model(ckpt, standin_log, batch_same_seed=False).sample(requests, PARAMS, tmp_path / "out2")
    assert all(r.error is None for r in results)
    assert len(calls(standin_log)) == 3


def test_levo_adapter_with_standin_script_unpatched_seed_is_recorded_not_honoured(tmp_path, ckpt, standin_log):
    # the stand-in reads SONGPREF_SEED; sending the seed elsewhere plays an unpatched upstream
    model = make_model(ckpt, standin_log, seed_env="SONGPREF_OTHER_SEED")
    a = model.sample([CandidateRequest("x", condition("c-1"), seed=7)], PARAMS, tmp_path / "a")[0]
    b = model.sample([CandidateRequest("x", condition("c-1"), seed=7)], PARAMS, tmp_path / "b")[0]
    assert a.error is None and b.error is None
    assert a.audio["mix"].read_bytes() != b.audio["mix"].read_bytes()  # clock-seeded
    described = model.describe()
    assert described["seed_honoured"] is False and described["seed_patch_present"] is False
    assert "SONGPREF_SEED" in UPSTREAM_SEED_PATCH and "torch.manual_seed" in UPSTREAM_SEED_PATCH


def test_levo_adapter_with_standin_script_never_sends_both_prompt_fields(tmp_path, ckpt, standin_log):
    clip = tmp_path / "clip.wav"
    sf.write(str(clip), np.zeros(48000 * 2, dtype=np.float32), 48000)
    both = condition("c-both", clip=str(clip), auto="Pop")  # a malformed row with both fields
    requests = [CandidateRequest("both", both, seed=1), CandidateRequest("auto", condition("c-auto"), seed=1),
                CandidateRequest("clip", condition("c-clip", clip=str(clip), auto=None), seed=2)]  # fmt: skip
    results = make_model(ckpt, standin_log).sample(requests, PARAMS, tmp_path / "out")
    assert [r.error for r in results] == [None, None, None]
    records = [r for c in calls(standin_log) for r in c["records"]]
    assert len(records) == 3
    for record in records:
        assert ("prompt_audio_path" in record) != ("auto_prompt_audio_type" in record)
    assert {r["idx"]: r.get("prompt_audio_path") for r in records}["both"] == str(clip)


def test_levo_adapter_with_standin_script_failed_candidate_is_recorded_others_succeed(tmp_path, ckpt, standin_log):
    requests = [CandidateRequest("good-1", condition("c-1"), seed=1),
                CandidateRequest("bad", condition("c-2", lyric="[verse] FAIL here."), seed=1),
                CandidateRequest("good-2", condition("c-3"), seed=2)]  # fmt: skip
    results = make_model(ckpt, standin_log).sample(requests, PARAMS, tmp_path / "out")
    by_id = {r.candidate_id: r for r in results}
    assert by_id["good-1"].error is None and by_id["good-2"].error is None
    bad = by_id["bad"]
    assert bad.audio == {} and "bad" in bad.error and "bad.flac" in bad.error
    assert not (tmp_path / "out" / "bad").exists()


def test_levo_adapter_with_standin_script_missing_stems_fail_with_hint(tmp_path, ckpt, standin_log):
    command = [part for part in COMMAND if part != "--separate"]
    results = make_model(ckpt, standin_log, command=command).sample(
        [CandidateRequest("x", condition("c-1"), seed=1)], PARAMS, tmp_path / "out")
    assert "x_vocal.flac" in results[0].error and "--separate" in results[0].error
    results = make_model(ckpt, standin_log, command=command, separate_stems=False).sample(
        [CandidateRequest("x", condition("c-1"), seed=1)], PARAMS, tmp_path / "out2")
    assert results[0].error is None and set(results[0].audio) == {"mix"}


def test_levo_adapter_with_standin_script_nonzero_exit_reports_stderr(tmp_path, ckpt, standin_log):
    missing_clip = str(tmp_path / "no-such-clip.wav")
    requests = [CandidateRequest("x", condition("c-1", clip=missing_clip, auto=None), seed=1),
                CandidateRequest("y", condition("c-2", clip=missing_clip, auto=None), seed=2)]  # fmt: skip
    results = make_model(ckpt, standin_log).sample(requests, PARAMS, tmp_path / "out")
    for result in results:
        assert result.candidate_id in result.error
        assert "exited with status 1" in result.error and "no-such-clip" in result.error and "not found" in result.error


def test_levo_adapter_refuses_a_folder_that_is_not_a_songgeneration_checkpoint(tmp_path, standin_log):
    merged = tmp_path / "merged"  # what a merge of Hugging Face weights writes
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    with pytest.raises(LevoError, match=r"levo.checkpoint_dir: .*merged has no config.yaml"):
        make_model(merged, standin_log).sample([CandidateRequest("x", condition("c-1"), seed=1)], PARAMS, tmp_path / "out")
    assert calls(standin_log) == []


def test_levo_adapter_with_standin_script_timeout_is_an_error(tmp_path, ckpt, standin_log):
    model = make_model(ckpt, standin_log, timeout_s=1, env={"STANDIN_SLEEP": "30"})
    results = model.sample([CandidateRequest("slow", condition("c-1"), seed=1)], PARAMS, tmp_path / "out")
    assert "slow" in results[0].error and "timed out after 1 s" in results[0].error
    assert results[0].audio == {}


def test_levo_adapter_missing_repo_is_a_clear_error(tmp_path, ckpt):
    missing = tmp_path / "SongGeneration"
    with pytest.raises(LevoError, match=str(missing)):
        LevoSongModel(LevoOptions(repo_dir=missing, checkpoint_dir=ckpt))
    missing.mkdir()
    with pytest.raises(LevoError, match="generate.py"):
        LevoSongModel(LevoOptions(repo_dir=missing, checkpoint_dir=ckpt))


def test_levo_adapter_options_reject_unknown_fields_and_placeholders(tmp_path, ckpt):
    with pytest.raises(ValueError):
        LevoOptions(repo_dir=STANDIN, checkpoint_dir=ckpt, seeds=3)
    with pytest.raises(LevoError, match="placeholder"):
        LevoSongModel(LevoOptions(repo_dir=STANDIN, checkpoint_dir=ckpt, command=["{python}", "generate.py", "{ckpt}"]))
    assert all(field.description for field in LevoOptions.model_fields.values())


# --- sampling and checkpoints ------------------------------------------------------------


def test_levo_adapter_forwards_temperature_top_k_and_cfg_coef(tmp_path, ckpt, standin_log):
    command = [*COMMAND, "--temperature={temperature}", "--top-k={top_k}"]  # flag-style placeholders, beside the env
    model = make_model(ckpt, standin_log, command=command)
    params = SamplingParams(temperature=1.25, top_k=30, cfg_coef=2.0)
    results = model.sample([CandidateRequest("x", condition("c-1"), seed=1)], params, tmp_path / "out")
    assert results[0].error is None
    call = calls(standin_log)[0]
    assert call["sampling"] == {"cfg_coef": 2.0, "temperature": 1.25, "top_k": 30, "top_p": 0.0}
    assert "--temperature=1.25" in call["argv"] and "--top-k=30" in call["argv"]
    nucleus = model.sample([CandidateRequest("y", condition("c-1"), seed=2)], SamplingParams(top_p=0.8), tmp_path / "o2")
    assert nucleus[0].error is None and calls(standin_log)[1]["sampling"]["top_p"] == 0.8
    assert calls(standin_log)[1]["sampling"]["cfg_coef"] == 1.5  # cfg_coef: null is upstream's


def test_levo_adapter_refuses_sampling_an_unpatched_script_cannot_take(tmp_path, ckpt, standin_log):
    unpatched = make_model(ckpt, standin_log, sampling_env="SONGPREF_OTHER_SAMPLING")
    assert unpatched.describe()["sampling"]["forwarded"] == {}
    with pytest.raises(LevoSamplingError, match=r"sampling.temperature 1.1 \(the script's: 0.9\)") as refused:
        unpatched.sample([CandidateRequest("x", condition("c-1"), seed=1)], SamplingParams(temperature=1.1, top_k=50),
                         tmp_path / "out")  # fmt: skip
    assert "top_k" not in str(refused.value) and "UPSTREAM_SAMPLING_PATCH" in str(refused.value)
    assert calls(standin_log) == []
    upstream = SamplingParams(temperature=0.9, top_k=50, cfg_coef=1.5)  # upstream's own values need no forwarding
    assert unpatched.sample([CandidateRequest("x", condition("c-1"), seed=1)], upstream, tmp_path / "o2")[0].error is None
    flags = make_model(ckpt, standin_log, sampling_env="SONGPREF_OTHER_SAMPLING", command=[*COMMAND, "--temp={temperature}"])
    flags.check_sampling(SamplingParams(temperature=1.1, top_k=50))
    with pytest.raises(LevoSamplingError, match=r"sampling.top_k 10 .*\{top_k\}"):
        flags.check_sampling(SamplingParams(temperature=1.1, top_k=10))
    with pytest.raises(LevoSamplingError, match="top_p alone"):
        make_model(ckpt, standin_log).check_sampling(SamplingParams(top_k=50, top_p=0.9))
    assert "SONGPREF_SAMPLING" in UPSTREAM_SAMPLING_PATCH and "top_k" in UPSTREAM_SAMPLING_PATCH


def test_levo_adapter_fails_candidates_when_the_script_does_not_confirm_sampling(tmp_path, ckpt, standin_log):
    model = make_model(ckpt, standin_log, env={"STANDIN_LOG": str(standin_log), "STANDIN_FORGET_SAMPLING": "1"})
    result = model.sample([CandidateRequest("x", condition("c-1"), seed=1)], SamplingParams(), tmp_path / "out")[0]
    assert result.audio == {} and "did not confirm the sampling" in result.error


def test_levo_checkpoint_option_and_sampling_refusal_at_plan_time(tmp_path, ckpt):
    from pipeline.config import RoundConfig
    from pipeline.models.checkpoint import options_with_checkpoint
    from pipeline.stages.candidates import CandidatesStage
    from pipeline.store import RoundStore

    options = {"repo_dir": str(STANDIN), "checkpoint_dir": str(ckpt), "python": sys.executable,
               "sampling_env": "SONGPREF_OTHER_SAMPLING"}  # fmt: skip
    assert options_with_checkpoint("levo", options, tmp_path / "merged")["checkpoint_dir"] == str(tmp_path / "merged")
    assert "checkpoint" not in options_with_checkpoint("levo", options, tmp_path / "merged")  # LevoOptions would refuse it
    assert options_with_checkpoint("tiny", {}, tmp_path / "m") == {"checkpoint": str(tmp_path / "m")}
    config = RoundConfig.model_validate({"model": {"backend": "levo", "options": options}, "sampling": {"temperature": 1.3}})
    with pytest.raises(LevoSamplingError, match="sampling.temperature 1.3"):
        CandidatesStage(config, RoundStore(str(tmp_path / "round"))).plan()
