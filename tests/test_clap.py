"""The `clap` scorer end to end on a tiny random ClapModel built and saved locally (no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from pipeline.scoring.base import ScoringItem

pytest.importorskip("transformers")

WORDS = "a happy sad pop rock song with piano guitar drums slow fast calm".split()


def byte_level_vocab() -> dict[str, int]:
    """A RoBERTa (byte-level BPE) vocabulary: specials, the 256 byte symbols, a few whole words."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = ["<s>", "<pad>", "</s>", "<unk>"] + list(bytes_to_unicode().values())
    return {t: i for i, t in enumerate(tokens + ["<mask>"])}


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    import torch
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig
    from transformers import RobertaTokenizer

    out = tmp_path_factory.mktemp("clap-tiny")
    tokenizer = RobertaTokenizer(vocab=byte_level_vocab(), merges=[], model_max_length=30)
    text = ClapTextConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=32, projection_dim=8)
    audio = ClapAudioConfig(patch_embeds_hidden_size=8, hidden_size=64, depths=[1, 1, 1, 1],
                            num_attention_heads=[1, 1, 1, 1], projection_dim=8, window_size=8)
    torch.manual_seed(0)
    ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=8)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    ClapFeatureExtractor().save_pretrained(out)  # 48 kHz, 64 mel bins, 10-s windows
    return out


def write(path, seconds, rate=44100, channels=2, amplitude=0.3, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = amplitude * np.sin(2 * np.pi * rng.uniform(110, 440) * t)
    sf.write(path, (tone[:, None] + 0.02 * rng.standard_normal((t.size, channels))).astype(np.float32), rate)
    return path


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    sf.write(d / "silent.wav", np.zeros(48000, np.float32), 48000)
    (d / "broken.flac").write_bytes(b"not audio")
    songs = [write(d / "a.flac", 21, seed=1), write(d / "b.wav", 6, rate=16000, channels=1, seed=2),
             write(d / "c.flac", 12, rate=48000, seed=3)]
    texts = ["a happy pop song with piano", "sad slow guitar", "fast rock drums " * 20]
    good = [ScoringItem(f"s{i}", p, "", "en", t) for i, (p, t) in enumerate(zip(songs, texts))]
    bad = [ScoringItem("silent", d / "silent.wav", "", "en", "calm"),
           ScoringItem("broken", d / "broken.flac", "", "en", "calm"),
           ScoringItem("missing", d / "nope.wav", "", "en", "calm"),
           ScoringItem("no-text", songs[0], "", "en", "  ")]
    return good, bad


def test_the_scorer_needs_an_existing_model_dir(tmp_path):
    from pydantic import ValidationError

    from pipeline.scoring.clap import ClapOptions, ClapScorer

    ClapOptions(model_dir=tmp_path / "absent")  # a config is checkable on a machine without the model
    with pytest.raises(ValueError, match="absent does not exist"):
        ClapScorer(ClapOptions(model_dir=tmp_path / "absent"))
    with pytest.raises(ValidationError):
        ClapOptions(model_dir=tmp_path, batch=3)  # unknown fields are refused
    assert ClapOptions(model_dir=tmp_path).sample_rate == 48000


def test_scores_songs_and_reports_bad_items(clap_dir, items):
    from pipeline.scoring.clap import ClapOptions, ClapScorer

    good, bad = items
    scorer = ClapScorer(ClapOptions(model_dir=clap_dir, device="cpu", batch_clips=3, batch_texts=2))
    results = scorer.score([bad[0], good[0], bad[1], good[1], bad[2], good[2], bad[3]])
    by_id = {r.candidate_id: r for r in results}
    assert [r.candidate_id for r in results] == ["silent", "s0", "broken", "s1", "missing", "s2", "no-text"]
    for item in good:
        r = by_id[item.candidate_id]
        assert r.error is None and -1.0 <= r.similarity <= 1.0
    assert by_id["s0"].details["clips"] == 3 and by_id["s1"].details["clips"] == 1
    assert "silent" in by_id["silent"].error
    assert "unreadable" in by_id["broken"].error
    assert "not found" in by_id["missing"].error
    assert by_id["no-text"].error == "empty description"

    # A score does not depend on batching: one song alone, one clip per pass, gives the same number.
    alone = ClapScorer(ClapOptions(model_dir=clap_dir, device="cpu", batch_clips=1, batch_texts=1))
    again = alone.score([good[0]])[0]
    assert again.similarity == pytest.approx(by_id["s0"].similarity, abs=1e-5)

    described = scorer.describe()
    assert described["backend"] == "clap" and described["sample_rate"] == 48000
    assert len(described["model_digest"]) == 64
