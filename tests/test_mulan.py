"""The `muq-mulan` scorer end to end on a tiny random MuQ-MuLan built from local directories.

MuQ-MuLan's towers are loaded by name: the MuQ directory's path must contain "muq" and the text
one "xlm-roberta". The joint config names them like hub ids ("OpenMuQ/muq-tiny"), and the
directories sit inside the model directory under their last path part, which is where the scorer
looks when the names are not local paths.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf

from pipeline.scoring.base import ScoringItem

# `import muq` itself fails here without the shim (no torchaudio), so look for the package, not import it.
if importlib.util.find_spec("muq") is None:
    pytest.skip("muq is not installed: pip install -c constraints.txt --no-deps muq==0.1.0 einops easydict",
                allow_module_level=True)

WORDS = "a bright happy sad pop rock song with piano guitar drums female male vocals slow fast calm".split()
TINY_MUQ = dict(
    label_rate=25, num_codebooks=1, codebook_dim=4, codebook_size=16, features=["melspec_2048"], hop_length=240,
    n_mels=128, conv_dim=4, encoder_dim=32, encoder_depth=2,
    stat={"melspec_2048_cnt": 1, "melspec_2048_mean": 6.77, "melspec_2048_std": 18.4},
    w2v2_config=dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, conv_depthwise_kernel_size=3,
                     position_embeddings_type="rotary", rotary_embedding_base=10000, hidden_act="swish",
                     layer_norm_eps=1e-5, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                     conformer_conv_dropout=0.0, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2),
)


def tiny_mulan_config(audio_name: str, text_name: str) -> dict:
    head = dict(dim=32, tf_depth=1, heads=2, dim_head=16, attn_dropout=0.0, ff_dropout=0.0, ff_mult=2)
    return dict(
        mulan=dict(sr=24000, clip_secs=10, dim_latent=16, decoupled_contrastive_learning=True,
                   hierarchical_contrastive_loss=False, hierarchical_contrastive_loss_layers=None,
                   sigmoid_contrastive_loss=False, rank_contrast=True),
        audio_model=dict(name=audio_name, model_dim=32, use_layer_idx=-1),
        text_model=dict(name=text_name, model_dim=32),
        audio_transformer=head,
        text_transformer=dict(head, max_seq_len=64),
    )


def write_tiny_mulan(root: Path, vocab: list[tuple[str, float]]) -> Path:
    """A MuQ-MuLan directory at `root`: joint config + weights, with both towers (text vocabulary
    `vocab`) as sub-directories. Also used by tests/production_dirs.py."""
    import torch
    from safetensors.torch import save_file
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizer

    from pipeline.scoring.muq_shim import conformer_compat, import_muq

    muq = import_muq()
    audio_dir, text_dir = root / "muq-tiny", root / "xlm-roberta-tiny"
    XLMRobertaTokenizer(vocab=vocab + [("<mask>", 0.0)]).save_pretrained(text_dir)
    torch.manual_seed(0)
    XLMRobertaModel(XLMRobertaConfig(vocab_size=len(vocab) + 1, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=40,
                                     type_vocab_size=1, pad_token_id=1)).save_pretrained(text_dir)
    with conformer_compat():
        muq.MuQ(TINY_MUQ).save_pretrained(audio_dir)
        model = muq.MuQMuLan(tiny_mulan_config(str(audio_dir), str(text_dir)))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, root / "model.safetensors")
    # Named like the published checkpoint does: hub ids, resolved to the sub-directories above.
    (root / "config.json").write_text(json.dumps(tiny_mulan_config("OpenMuQ/muq-tiny", "FacebookAI/xlm-roberta-tiny")))
    return root


@pytest.fixture(scope="module")
def mulan_dir(tmp_path_factory):
    """A MuQ-MuLan directory: joint config + weights, with both towers as sub-directories."""
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + w, -1.0) for w in WORDS] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return write_tiny_mulan(tmp_path_factory.mktemp("mulan") / "MuQ-MuLan-tiny", vocab)


def write(path, seconds, rate=44100, channels=2, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * rng.uniform(110, 440) * t)
    sf.write(path, (tone[:, None] + 0.02 * rng.standard_normal((t.size, channels))).astype(np.float32), rate)
    return path


@pytest.fixture(scope="module")
def scorer(mulan_dir):
    from pipeline.scoring.mulan import MulanOptions, MulanScorer

    return MulanScorer(MulanOptions(model_dir=mulan_dir, device="cpu", batch_clips=3))


def test_options_are_strict(tmp_path):
    from pydantic import ValidationError

    from pipeline.scoring.mulan import MulanOptions

    with pytest.raises(ValidationError):
        MulanOptions()  # model_dir is required
    with pytest.raises(ValidationError):
        MulanOptions(model_dir=tmp_path, clips=3)
    options = MulanOptions(model_dir=tmp_path)
    assert (options.backend, options.sample_rate, options.clip_seconds) == ("muq-mulan", 24000, 10.0)


def test_scores_match_the_package_and_do_not_depend_on_batching(scorer, tmp_path):
    import torch

    from pipeline.scoring.embedding_scorer import load_mono
    from pipeline.scoring.mulan import MulanOptions, MulanScorer

    sf.write(tmp_path / "silent.wav", np.zeros(24000 * 3, np.float32), 24000)
    sf.write(tmp_path / "short.wav", np.full(2000, 0.1, np.float32), 24000)
    (tmp_path / "broken.flac").write_bytes(b"not audio")
    songs = [write(tmp_path / "a.flac", 23, seed=1), write(tmp_path / "b.wav", 7, rate=16000, channels=1, seed=2),
             write(tmp_path / "c.flac", 12, rate=48000, seed=3)]
    texts = ["a happy pop song with piano", "sad slow guitar", "fast rock drums " * 30]  # the last is truncated
    good = [ScoringItem(f"s{i}", p, "", "en", t) for i, (p, t) in enumerate(zip(songs, texts))]
    bad = [ScoringItem("silent", tmp_path / "silent.wav", "", "en", "calm"),
           ScoringItem("short", tmp_path / "short.wav", "", "en", "calm"),
           ScoringItem("broken", tmp_path / "broken.flac", "", "en", "calm"),
           ScoringItem("missing", tmp_path / "nope.flac", "", "en", "calm")]
    results = scorer.score([bad[0], good[0], bad[1], good[1], bad[2], good[2], bad[3]])
    by_id = {r.candidate_id: r for r in results}
    assert [r.candidate_id for r in results] == ["silent", "s0", "short", "s1", "broken", "s2", "missing"]
    assert "silent" in by_id["silent"].error and "too short" in by_id["short"].error
    assert "unreadable" in by_id["broken"].error and "not found" in by_id["missing"].error
    assert [by_id[f"s{i}"].details["clips"] for i in range(3)] == [3, 1, 2]

    # The package's own per-song call gives the same numbers (its dot product on the mean latent).
    model = scorer.model
    with torch.inference_mode():
        for item in good:
            wave = torch.from_numpy(load_mono(item.audio_path, 24000))
            expected = model.calc_similarity(model(wavs=wave[None]), model(texts=[item.description]))
            assert by_id[item.candidate_id].details["dot"] == pytest.approx(float(expected), abs=1e-5)
            assert -1.0 <= by_id[item.candidate_id].similarity <= 1.0

    one_by_one = MulanScorer.from_model(model, MulanOptions(model_dir=scorer.options.model_dir, batch_clips=1))
    for item in good:
        assert one_by_one.score([item])[0].similarity == pytest.approx(by_id[item.candidate_id].similarity, abs=1e-5)


def test_describe_names_every_part(scorer, mulan_dir):
    described = scorer.describe()
    assert described["backend"] == "muq-mulan"
    assert described["audio_model_dir"] == str((mulan_dir / "muq-tiny").resolve())
    assert described["text_model_dir"] == str((mulan_dir / "xlm-roberta-tiny").resolve())
    assert all(len(described[k]) == 64 for k in ("model_digest", "audio_model_digest", "text_model_digest"))
    json.dumps(described)


def test_loader_explains_missing_parts(mulan_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from pipeline.scoring.mulan import load_muq_mulan

    copy = tmp_path / "copy"
    shutil.copytree(mulan_dir, copy)
    shutil.move(copy / "muq-tiny", tmp_path / "audio-tower")
    with pytest.raises(FileNotFoundError, match="audio_model_dir"):
        load_muq_mulan(copy)
    with pytest.raises(ValueError, match="'muq'"):
        load_muq_mulan(copy, audio_model_dir=tmp_path / "audio-tower")
    shutil.move(tmp_path / "audio-tower", copy / "muq-tiny")
    weights = load_file(copy / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "audio_to_latents" not in k}, copy / "model.safetensors")
    with pytest.raises(ValueError, match="lack"):
        load_muq_mulan(copy)


def test_shim_leaves_no_stand_ins_behind_and_keeps_the_4x_conformer_contract():
    import torch

    from pipeline.scoring.muq_shim import conformer_compat, import_muq, uses_torchaudio_stand_in

    muq = import_muq()
    if uses_torchaudio_stand_in():
        assert "torchaudio" not in sys.modules and "torchaudio.transforms" not in sys.modules
    with conformer_compat():
        model = muq.MuQ(TINY_MUQ).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 24000 * 2) * 0.1, output_hidden_states=True)
    assert len(out.hidden_states) == TINY_MUQ["encoder_depth"] + 1
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)


def test_torchaudio_stand_in_matches_an_independent_log_mel():
    """The stand-in's MuQ features against transformers' numpy spectrogram (HTK mel, power, dB)."""
    import torch
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    from pipeline.scoring.muq_shim import _torchaudio_stub

    stub = _torchaudio_stub()["torchaudio.transforms"]
    wave = np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1
    got = stub.AmplitudeToDB()(stub.MelSpectrogram(sample_rate=24000, n_fft=2048, hop_length=240, n_mels=128)(
        torch.from_numpy(wave))).numpy()
    filters = mel_filter_bank(num_frequency_bins=1025, num_mel_filters=128, min_frequency=0.0, max_frequency=12000.0,
                              sampling_rate=24000, norm=None, mel_scale="htk")
    mel = spectrogram(wave, window_function(2048, "hann"), frame_length=2048, hop_length=240, power=2.0,
                      center=True, pad_mode="reflect", mel_filters=filters, mel_floor=1e-10)
    expected = 10 * np.log10(np.maximum(mel, 1e-10))
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-2
