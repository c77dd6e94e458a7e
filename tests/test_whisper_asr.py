"""The whisper transcriber on a tiny random Whisper checkpoint: real code end to end, on CPU.

Random weights decode arbitrary but deterministic tokens, which is all these tests need: the fast
decoder must reproduce the reference token for token, and batching must not change any text.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
whisper = pytest.importorskip("whisper")
sf = pytest.importorskip("soundfile")

from pipeline.scoring.base import ScoringItem  # noqa: E402
from pipeline.scoring.whisper_asr import WhisperOptions, WhisperTranscriber, rms_dbfs, whisper_language  # noqa: E402
from pipeline.scoring.whisper_fast import _WEIGHTS, deterministic_attention, greedy_decode, greedy_plan, release  # noqa: E402

RATE = 16000


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
                           n_vocab=51865, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=2)
    model = Whisper(dims)
    # The positional embedding is torch.empty in whisper. With tied N(0, 1) token embeddings a
    # random model echoes its last token; a small token and a large positional embedding make
    # the tokens change with position, so a cache written at the wrong place changes them.
    torch.nn.init.normal_(model.decoder.positional_embedding, std=1.0)
    torch.nn.init.normal_(model.decoder.token_embedding.weight, std=0.02)
    path = tmp_path_factory.mktemp("whisper") / "tiny-random.pt"
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> dict[str, Path]:
    """Noise and tone songs of different lengths, a silent one and a corrupt one."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("songs")
    files = {}
    for name, seconds, rate in [("a", 40.0, 16000), ("b", 12.0, 22050), ("c", 35.0, 16000)]:
        t = np.arange(int(seconds * rate)) / rate
        audio = 0.2 * np.sin(2 * np.pi * (220 + 110 * rng.random()) * t) + 0.05 * rng.standard_normal(t.size)
        files[name] = root / f"{name}.flac"
        sf.write(files[name], audio.astype(np.float32), rate)
    # A song whose second window is silent: it must be skipped by the gate.
    audio = np.concatenate([0.1 * rng.standard_normal(30 * RATE), np.zeros(30 * RATE), 0.1 * rng.standard_normal(3 * RATE)])
    files["gap"] = root / "gap.wav"
    sf.write(files["gap"], audio.astype(np.float32), RATE)
    files["silent"] = root / "silent.wav"
    sf.write(files["silent"], np.zeros(5 * RATE, dtype=np.float32), RATE)
    files["short"] = root / "short.wav"
    sf.write(files["short"], 0.1 * np.ones(RATE // 10, dtype=np.float32), RATE)
    files["corrupt"] = root / "corrupt.flac"
    files["corrupt"].write_bytes(b"fLaC but not really a flac file")
    return files


def _item(name: str, path: Path, language: str = "en") -> ScoringItem:
    return ScoringItem(candidate_id=name, audio_path=path, lyric="[verse] la la", language=language, description="")


def _transcriber(checkpoint, **kw) -> WhisperTranscriber:
    return WhisperTranscriber(WhisperOptions(checkpoint=str(checkpoint), device="cpu", max_tokens=12, **kw))


@pytest.fixture(scope="module")
def transcriber(checkpoint) -> WhisperTranscriber:
    return _transcriber(checkpoint)


def test_options_are_strict_and_documented():
    with pytest.raises(Exception):
        WhisperOptions(checkpoint="x.pt", beam_size=5)
    assert all(f.description for f in WhisperOptions.model_fields.values())
    assert WhisperOptions(checkpoint="x.pt").decoder == "fast"


def test_language_codes():
    assert whisper_language("en-US") == "en"
    assert whisper_language("zh_CN") == "zh"
    assert whisper_language("English") == "en"
    assert whisper_language("xx") is None and whisper_language("") is None


def test_end_to_end_with_failures_in_order(transcriber, songs):
    names = ["a", "corrupt", "b", "silent", "c", "short", "gap"]
    items = [_item(n, songs[n]) for n in names]
    result = transcriber.transcribe(items)
    assert [t.candidate_id for t in result] == names
    by_name = {t.candidate_id: t for t in result}
    for name in ["a", "b", "c", "gap"]:
        assert by_name[name].error is None and by_name[name].language == "en"
        assert isinstance(by_name[name].text, str)
    assert by_name["corrupt"].error.startswith("unreadable audio")
    assert by_name["silent"].error.startswith("no vocals")
    assert by_name["short"].error.startswith("too short")
    assert all(by_name[n].text == "" for n in ["corrupt", "silent", "short"])
    described = transcriber.describe()
    assert described["backend"] == "whisper" and len(described["checkpoint_sha256"]) == 64
    assert described["options"]["batch_windows"] == 192 and described["options"]["pad_multiple"] == 8


def test_gate_skips_quiet_windows(transcriber, songs):
    windows, error = transcriber._windows(0, _item("gap", songs["gap"]))
    assert error is None and [w.index for w in windows] == [0, 2]
    assert rms_dbfs(np.zeros(10)) < -150


def test_fast_tokens_equal_reference_tokens(transcriber, songs):
    audio = [transcriber._windows(0, _item(n, songs[n]))[0] for n in ["a", "b", "c"]]
    mel = transcriber.log_mel([w.audio for ws in audio for w in ws])
    assert mel.shape == (5, 80, 3000)  # 40 s, 12 s and 35 s songs
    features = transcriber.encode(mel)
    for language in ["en", "zh"]:
        fast, _ = transcriber.decode_tokens(features, language, decoder="fast")
        ref, _ = transcriber.decode_tokens(features, language, decoder="reference")
        assert fast == ref
        assert any(len(t) > 0 for t in fast)


def test_fast_equals_reference_on_long_runs_and_detection(transcriber, songs):
    # Without end-of-text every window runs the full length, so the cache is exercised to the end.
    model = transcriber.model
    mel = transcriber.log_mel([w.audio for w in transcriber._windows(0, _item("c", songs["c"]))[0]])
    features = transcriber.encode(mel)
    eot = whisper.tokenizer.get_tokenizer(True).eot
    options = whisper.DecodingOptions(language="en", sample_len=40, without_timestamps=True, fp16=False,
                                      suppress_tokens=f"-1,{eot}")
    fast = greedy_decode(model, features, greedy_plan(model, options))
    ref = [r.tokens for r in whisper.decode(model, features, options)]
    assert fast == ref and all(len(t) == 40 for t in fast)
    assert len(set(fast[0])) > 20  # varied tokens: a real check of the cache, not an echo
    # Unknown language: detected per window, as whisper.decode does.
    fast, fast_langs = transcriber.decode_tokens(features, None, decoder="fast")
    ref, ref_langs = transcriber.decode_tokens(features, None, decoder="reference")
    assert fast == ref and fast_langs == ref_langs


def test_matmul_attention_fast_equals_reference(checkpoint, songs):
    """whisper's own attention (SDPA off) in both decoders: the fast one keeps the cross-attention
    keys pre-scaled in the products' layout, and must still give the reference's tokens."""
    t = _transcriber(checkpoint, decoder_attention="matmul")
    mel = t.log_mel([w.audio for n in ["a", "c"] for w in t._windows(0, _item(n, songs[n]))[0]])
    features = t.encode(mel)
    model, eot = t.model, whisper.tokenizer.get_tokenizer(True).eot
    options = whisper.DecodingOptions(language="en", sample_len=40, without_timestamps=True, fp16=False,
                                      suppress_tokens=f"-1,{eot}")
    with deterministic_attention("matmul"):
        fast = greedy_decode(model, features, greedy_plan(model, options))
        ref = [r.tokens for r in whisper.decode(model, features, options)]
    assert fast == ref and all(len(x) == 40 for x in fast) and len(set(fast[0])) > 20
    assert any(r.matmul for r in _WEIGHTS[model].runners.values())
    # Through the transcriber's option, with the language detected per window.
    assert t.decode_tokens(features, None, decoder="fast") == t.decode_tokens(features, None, decoder="reference")


def test_splitkv_where_its_kernel_cannot_run_falls_back_in_both_decoders(checkpoint, songs, monkeypatch):
    """`decoder_attention: splitkv` on a machine without CUDA (and without Triton's interpreter): both
    decoders use whisper's own attention, and the padding rows still stop at once."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    from pipeline.scoring import decode_attention

    if decode_attention.available(torch.device("cpu")):
        pytest.skip("the split-KV kernel runs on this CPU")
    t = _transcriber(checkpoint, decoder_attention="splitkv")
    mel = t.log_mel([w.audio for n in ["a", "c"] for w in t._windows(0, _item(n, songs[n]))[0]])
    features = t.encode(mel)
    fast, _ = t.decode_tokens(features, "en", decoder="fast", rows=len(features) - 1)
    ref, _ = t.decode_tokens(features, "en", decoder="reference")
    assert fast[:-1] == ref[:-1] and fast[-1] == [] and all(fast[:-1])
    assert not any(r.splitkv for r in _WEIGHTS[t.model].runners.values())


def test_batching_across_songs_changes_no_text(checkpoint, songs):
    items = [_item(n, songs[n]) for n in ["a", "b", "gap"]]
    together = _transcriber(checkpoint, batch_windows=64).transcribe(items)
    one_window = _transcriber(checkpoint, batch_windows=1)
    alone = [one_window.transcribe([item])[0] for item in items]
    assert [t.text for t in together] == [t.text for t in alone]
    reference = _transcriber(checkpoint, batch_windows=3, decoder="reference").transcribe(items)
    assert [t.text for t in reference] == [t.text for t in together]


def test_languages_are_grouped_per_batch(checkpoint, songs):
    items = [_item("b", songs["b"], "en"), _item("b", songs["b"], "zh-CN"), _item("b", songs["b"], "en")]
    result = _transcriber(checkpoint, batch_windows=2).transcribe(items)
    assert [t.language for t in result] == ["en", "zh", "en"]
    assert result[0].text == result[2].text
    forced = _transcriber(checkpoint, language="de").transcribe(items[:1])
    assert forced[0].language == "de"


def test_padded_sizes():
    t = WhisperTranscriber(WhisperOptions(checkpoint="x.pt", batch_windows=20, pad_multiple=8))
    assert [t.padded_size(n) for n in [1, 8, 9, 17, 20]] == [8, 8, 16, 20, 20]
    t = WhisperTranscriber(WhisperOptions(checkpoint="x.pt", batch_windows=20, pad_multiple=1))
    assert [t.padded_size(n) for n in [1, 9, 20]] == [1, 9, 20]
    t = WhisperTranscriber(WhisperOptions(checkpoint="x.pt", batch_windows=20, pad_multiple=20))
    assert [t.padded_size(n) for n in [1, 9, 20]] == [20, 20, 20]


def test_padding_a_partial_batch_changes_no_text(checkpoint, songs):
    items = [_item(n, songs[n]) for n in ["a", "b", "gap", "c"]]  # 2 + 1 + 2 + 2 windows
    unpadded = _transcriber(checkpoint, batch_windows=4, pad_multiple=1).transcribe(items)
    padded = _transcriber(checkpoint, batch_windows=4, pad_multiple=4).transcribe(items)  # 4, then 3 padded to 4
    assert [t.text for t in padded] == [t.text for t in unpadded]
    assert [t.language for t in padded] == [t.language for t in unpadded]
    reference = _transcriber(checkpoint, batch_windows=4, pad_multiple=4, decoder="reference").transcribe(items)
    assert [t.text for t in reference] == [t.text for t in padded]


def test_runners_are_kept_per_batch_size_over_shared_buffers(transcriber, songs):
    model = transcriber.model
    audio = [w.audio for n in ["a", "c", "gap"] for w in transcriber._windows(0, _item(n, songs[n]))[0]]
    features = transcriber.encode(transcriber.log_mel(audio))  # 6 windows
    eot = whisper.tokenizer.get_tokenizer(True).eot
    options = whisper.DecodingOptions(language="en", sample_len=16, without_timestamps=True, fp16=False,
                                      suppress_tokens=f"-1,{eot}")
    plan = greedy_plan(model, options)
    release(model)
    w = None
    for n in [6, 3, 6, 3, 5]:
        fast = greedy_decode(model, features[:n], plan)
        assert fast == [r.tokens for r in whisper.decode(model, features[:n], options)]
        w = _WEIGHTS[model]
        assert w.buffers.capacity == 6  # smaller batches view the first rows: no new allocation
    assert sorted(k[0] for k in w.runners) == [3, 5, 6]
    buffers = w.buffers
    greedy_decode(model, features[:2].repeat(4, 1, 1), plan)  # 8 rows: the buffers grow, the old runners go
    assert w.buffers is not buffers and w.buffers.capacity == 8 and [k[0] for k in w.runners] == [8]
    release(model)
    assert not w.runners and w.buffers is None


def test_batched_log_mel_equals_whisper_per_window(transcriber):
    rng = np.random.default_rng(1)
    windows = [0.1 * rng.standard_normal(30 * RATE).astype(np.float32),
               0.3 * rng.standard_normal(7 * RATE).astype(np.float32), np.full(100, 0.01, dtype=np.float32)]
    per_window = torch.stack([whisper.pad_or_trim(whisper.log_mel_spectrogram(
        torch.from_numpy(a), 80, padding=30 * RATE - a.size), 3000) for a in windows])
    assert torch.equal(transcriber.log_mel(windows), per_window)


def test_encoder_chunks_change_no_text(checkpoint, songs):
    items = [_item(n, songs[n]) for n in ["a", "b", "gap", "c"]]
    one = _transcriber(checkpoint, batch_windows=5, encode_windows=1, pad_multiple=1).transcribe(items)
    chunked = _transcriber(checkpoint, batch_windows=5, encode_windows=2, pad_multiple=1).transcribe(items)
    assert [t.text for t in one] == [t.text for t in chunked]
