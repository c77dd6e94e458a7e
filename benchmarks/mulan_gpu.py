"""MuQ-MuLan scoring throughput on a GPU: clips batched across songs versus the package's serial call.

The model has MuQ-MuLan-large's shape (MuQ-large audio tower: 1024-wide, 12-layer conformer; an
xlm-roberta-base text tower; two 8-layer, 768-wide heads; 512-d joint space) with random weights:
no checkpoint can be downloaded here, and throughput does not depend on the weights' values.
The towers are built in memory (their `from_pretrained` is redirected to a random initialisation)
instead of being written to and read back from disk.

Measured on the same synthetic songs (FLAC, 48 kHz stereo), decoded and resampled once up front
so that the model paths are compared on the model work alone (`io: false`):
- `package_serial`: the package's default `MuQMuLan(wavs=song)` (one clip per forward pass),
  then `MuQMuLan(texts=[description])` and `calc_similarity`, song after song;
- `package_parallel`: the same with `parallel_processing=True` (one song's clips per pass);
- `batched`: what `MulanScorer.score` does — clips of all songs, `batch_clips` per pass;
and once end to end (`io: true`): `MulanScorer.score` from the files, decoding on loader threads.
Each run records how far its scores are from the package's serial ones, and, where a real
torchaudio is installed, how far the shim's torchaudio stand-in features are from torchaudio's.

Run: python benchmarks/mulan_gpu.py --out results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MUQ_LARGE = dict(
    label_rate=25, num_codebooks=1, codebook_dim=16, codebook_size=4096, features=["melspec_2048"],
    hop_length=240, n_mels=128, conv_dim=512, encoder_dim=1024, encoder_depth=12,
    stat={"melspec_2048_cnt": 14282760192, "melspec_2048_mean": 6.768444971712967,
          "melspec_2048_std": 18.417922652295623},
    w2v2_config=dict(hidden_size=1024, num_attention_heads=16, intermediate_size=4096, conv_depthwise_kernel_size=31,
                     position_embeddings_type="rotary", rotary_embedding_base=10000, hidden_act="swish",
                     layer_norm_eps=1e-5, hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.1,
                     conformer_conv_dropout=0.1, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16),
)
MULAN_LARGE = dict(
    mulan=dict(sr=24000, clip_secs=10, dim_latent=512, decoupled_contrastive_learning=True,
               hierarchical_contrastive_loss=False, hierarchical_contrastive_loss_layers=None,
               sigmoid_contrastive_loss=False, rank_contrast=True),
    audio_model=dict(name="OpenMuQ/MuQ-large-msd-iter", model_dim=1024, use_layer_idx=-1),
    text_model=dict(name="xlm-roberta-base", model_dim=768),
    audio_transformer=dict(dim=768, tf_depth=8, heads=8, dim_head=64, attn_dropout=0.0, ff_dropout=0.0, ff_mult=4),
    text_transformer=dict(dim=768, tf_depth=8, max_seq_len=1024, dim_head=64, heads=8, attn_dropout=0.0,
                          ff_dropout=0.0, ff_mult=4),
)
WORDS = ("a bright happy sad pop rock jazz folk song with piano guitar drums strings female male vocals "
         "slow fast calm energetic dreamy dark warm ballad dance beat melody").split()


def tiny_tokenizer():
    """An XLM-RoBERTa (Unigram) tokenizer over a few words: token ids only need to fit the vocabulary."""
    from transformers import XLMRobertaTokenizer

    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + w, -1.0) for w in WORDS] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz,."]
    return XLMRobertaTokenizer(vocab=vocab + [("<mask>", 0.0)])


def build_model(seed: int = 0):
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from pipeline.scoring.mulan import prepare_for_inference
    from pipeline.scoring.muq_shim import conformer_compat, import_muq

    muq = import_muq()
    text_module = sys.modules["muq.muq_mulan.models.text"]
    real_muq = muq.MuQ
    xlmr = XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                            pad_token_id=1, bos_token_id=0, eos_token_id=2)  # xlm-roberta-base
    torch.manual_seed(seed)
    with conformer_compat(), \
            mock.patch.object(muq, "MuQ", SimpleNamespace(from_pretrained=lambda *a, **k: real_muq(MUQ_LARGE))), \
            mock.patch.object(text_module, "XLMRobertaModel",
                              SimpleNamespace(from_pretrained=lambda *a, **k: XLMRobertaModel(xlmr))):
        model = muq.MuQMuLan(MULAN_LARGE)
    return prepare_for_inference(model, tokenizer=tiny_tokenizer())


def write_songs(folder: Path, n: int, seconds: float, seed: int = 0):
    """Stereo 48 kHz FLAC songs (a wobbling tone plus noise) with short made-up descriptions."""
    from concurrent.futures import ThreadPoolExecutor

    import soundfile as sf

    from pipeline.scoring.base import ScoringItem

    def one(i: int) -> ScoringItem:
        rng = np.random.default_rng([seed, i])
        t = np.arange(int(seconds * 48000)) / 48000
        tone = 0.3 * np.sin(2 * np.pi * rng.uniform(110, 440) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * t))
        wave = tone[:, None] + 0.03 * rng.standard_normal((t.size, 2))
        path = folder / f"song{i:03d}.flac"
        sf.write(path, wave.astype(np.float32), 48000)
        return ScoringItem(f"song{i:03d}", path, "", "en", " ".join(rng.choice(WORDS, size=rng.integers(5, 15))))

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(n)))


def package_scores(model, waves, texts, parallel, autocast):
    """The package's own inference call, one song at a time (`parallel`: that song's clips in one pass)."""
    import torch

    scores = []
    for wave, text in zip(waves, texts):
        with torch.inference_mode(), autocast():
            audio = model(wavs=wave[None].to(model.device), parallel_processing=parallel)  # as the package's example
            latent = model(texts=[text])
            scores.append(float(model.calc_similarity(audio.float(), latent.float())[0, 0]))
    return scores


def batched_scores(scorer, waves, texts, batch_clips):
    """The scorer's model work without file decoding: clips of all songs, `batch_clips` per pass."""
    from pipeline.scoring.embedding_scorer import cut_clips

    per_song = [cut_clips(w.numpy(), scorer.clip_samples) for w in waves]
    clips = np.concatenate(per_song)
    vectors = np.concatenate([scorer._embed_clips(clips[i:i + batch_clips])
                              for i in range(0, len(clips), batch_clips)])
    text_vectors = scorer.embed_texts(texts)
    bounds = np.cumsum([0] + [len(c) for c in per_song])
    return [float(vectors[a:b].mean(0) @ text_vectors[t]) for a, b, t in zip(bounds[:-1], bounds[1:], texts)]


def timed(fn, device, repeats=1):
    """Best wall time of `repeats` calls (synchronised), and the last call's result."""
    import torch

    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return out, best


def feature_check(device):
    """Max |stand-in - torchaudio| of MuQ's log-mel features, when torchaudio loads here."""
    import torch

    try:
        import torchaudio
    except Exception as exc:
        return {"torchaudio": f"not importable: {type(exc).__name__}"}
    from pipeline.scoring.muq_shim import _torchaudio_stub

    stub = _torchaudio_stub()["torchaudio.transforms"]
    wave = torch.randn(4, 240000, device=device) * 0.1
    kw = dict(sample_rate=24000, n_fft=2048, hop_length=240, n_mels=128)
    ref = torchaudio.transforms.AmplitudeToDB()(torchaudio.transforms.MelSpectrogram(**kw).to(device)(wave))
    got = stub.AmplitudeToDB()(stub.MelSpectrogram(**kw).to(device)(wave))
    return {"torchaudio": torchaudio.__version__, "max_abs_db_diff": float((ref - got).abs().max()),
            "ref_db_range": [float(ref.min()), float(ref.max())]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--batch-clips", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--precisions", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch
    import transformers

    from pipeline.scoring.embedding_scorer import load_mono
    from pipeline.scoring.mulan import MulanOptions, MulanScorer
    from pipeline.scoring.muq_shim import uses_torchaudio_stand_in

    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = {"device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor(),
              "torch": torch.__version__, "transformers": transformers.__version__,
              "songs": args.songs, "song_seconds": args.seconds, "runs": []}
    t0 = time.perf_counter()
    model = build_model().to(device)
    result["build_seconds"] = round(time.perf_counter() - t0, 1)
    result["parameters_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    result["features_torchaudio_stand_in"] = uses_torchaudio_stand_in()
    result["feature_check"] = feature_check(device)

    def record(entry):
        result["runs"].append(entry)
        print(entry, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        items, seconds = timed(lambda: write_songs(Path(tmp), args.songs, args.seconds), device)
        result["write_seconds"] = round(seconds, 2)
        waves, seconds = timed(lambda: [torch.from_numpy(load_mono(i.audio_path, 24000)) for i in items], device)
        result["decode_resample_seconds_one_thread"] = round(seconds, 2)
        texts = [i.description for i in items]
        n_clips = sum(int(np.ceil(len(w) / 240000)) for w in waves)
        result["clips"] = n_clips
        for precision in args.precisions:
            opts = dict(model_dir=tmp, device=device, precision=precision, loader_threads=8)
            scorer = MulanScorer.from_model(model, MulanOptions(**opts))
            package_scores(model, waves[:2], texts[:2], False, scorer.autocast)  # warm-up
            batched_scores(scorer, waves[:4], texts[:4], max(args.batch_clips))
            reference = None
            for parallel in (False, True):
                scores, seconds = timed(lambda: package_scores(model, waves, texts, parallel, scorer.autocast), device)
                reference = reference or scores
                record({"path": "package_parallel" if parallel else "package_serial", "io": False,
                        "precision": precision, "seconds": round(seconds, 3),
                        "songs_per_s": round(len(items) / seconds, 2), "clips_per_s": round(n_clips / seconds, 1),
                        "max_abs_score_diff_vs_serial": max(abs(a - b) for a, b in zip(scores, reference))})
            for batch in args.batch_clips:
                scores, seconds = timed(lambda: batched_scores(scorer, waves, texts, batch), device, args.repeats)
                record({"path": "batched", "io": False, "precision": precision, "batch_clips": batch,
                        "seconds": round(seconds, 3), "songs_per_s": round(len(items) / seconds, 2),
                        "clips_per_s": round(n_clips / seconds, 1),
                        "max_abs_score_diff_vs_serial": max(abs(a - b) for a, b in zip(scores, reference))})
            scorer.options = MulanOptions(**opts, batch_clips=max(args.batch_clips))
            out, seconds = timed(lambda: scorer.score(items), device)
            record({"path": "batched", "io": True, "precision": precision, "batch_clips": max(args.batch_clips),
                    "loader_threads": 8, "seconds": round(seconds, 3), "songs_per_s": round(len(items) / seconds, 2),
                    "clips_per_s": round(n_clips / seconds, 1),
                    "max_abs_score_diff_vs_serial": max(abs(a - r.details["dot"]) for a, r in zip(reference, out))})
    if device == "cuda":
        result["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
