"""Benchmark: the whisper transcriber on a GPU, large-v3 shape, random weights, fp16.

Measures audio seconds per wall second, side by side in one process on the same synthetic songs:

  (a) a loop of `model.transcribe` over the songs (a subset: it is slow), greedy, without
      timestamps, no fallback, no conditioning on previous text: the same 30 s windows;
  (b) the batched transcriber with the reference decoder (`whisper.decode` on each batch);
  (c) the batched transcriber with the fast decoder at WhisperOptions' defaults (and (c') without
      CUDA graphs), and variants: the old batching (64 windows, no padding), every window of the
      call in one batch, partial batches padded to full size, the memory-efficient attention kernel,
      whisper's own attention without SDPA (`matmul`, with its reference row);
  (d) the encoder alone over the same windows.

`--kernel-bench` first times one layer's cross-attention of a full batch alone (random keys and
values in whisper's layout): SDPA's flash and cuDNN kernels against the split-KV kernel of
`pipeline.scoring.decode_attention` at a few (split, block, warps, stages) settings, each against the bytes
it must read; with `--tune-splitkv` the fastest setting is used for every split-KV row after it.

Each fast row is timed twice: `cold`, the first call after the decoder's graphs were released (it
captures a graph set for each batch size it meets), and `warm`, the same call again (the graph
sets are kept per batch size, as across the calls of a pipeline run); x_realtime is the warm one.
A sweep gives the fast decoder's time per step against the batch size. The memory floor of a
step (`step_floor`: the bytes it must read over the bandwidth of a device-to-device copy measured
here) stands beside each kernel's measured step time.

End-of-text is suppressed everywhere and every window decodes exactly `--tokens` tokens, so the
work is the same in each row whatever the random weights would emit. `--eot-mean-tokens N` adds
rows with end-of-text allowed: the end-of-text token's embedding row is scaled (by bisection on
one batch) until the random model's windows end after N tokens on average, a lyric's length; then
the reference and the fast scorer (split-KV kernel, compiled encoder) transcribe the songs, the
fast one with and without skipping finished windows' attention. Audio goes through the
transcriber's own path (FLAC files on disk, read, windowed, log-mel). The fast decoder's tokens
are checked against the reference's on one batch, and all song texts of (b) and (c) are compared.

    python benchmarks/whisper_gpu.py --out whisper_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.scoring.base import ScoringItem  # noqa: E402
from pipeline.scoring.whisper_asr import WhisperOptions, WhisperTranscriber, load_audio  # noqa: E402

LARGE_V3 = dict(n_mels=128, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20, n_audio_layer=32,
                n_vocab=51866, n_text_ctx=448, n_text_state=1280, n_text_head=20, n_text_layer=32)
# A smoke-test shape: the script's whole path in seconds on a CPU.
TINY = dict(LARGE_V3, n_audio_state=64, n_audio_head=2, n_audio_layer=2, n_text_state=64, n_text_head=2, n_text_layer=2)


def build_model(seed: int, dims: dict, device: str):
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(seed)
    with torch.device(device):
        model = Whisper(ModelDimensions(**dims))
        # torch.empty in whisper. A small token and a large positional embedding keep the random
        # model from echoing its last token (tied embeddings), so the decoded tokens vary.
        torch.nn.init.normal_(model.decoder.positional_embedding, std=1.0)
        torch.nn.init.normal_(model.decoder.token_embedding.weight, std=0.02)
    # fp32 weights, fp16 compute: as whisper.load_model + transcribe(fp16=True) run a checkpoint.
    return model.eval()


def write_songs(root: Path, count: int, lo: float, hi: float, seed: int) -> list[ScoringItem]:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    items = []
    for i in range(count):
        seconds = float(rng.uniform(lo, hi))
        t = np.arange(int(seconds * 16000)) / 16000
        notes = 110 * 2 ** (rng.integers(0, 24, size=int(seconds * 2) + 1) / 12)  # a new note every 0.5 s
        f = notes[(t * 2).astype(int)]
        audio = 0.3 * np.sin(2 * np.pi * np.cumsum(f) / 16000) + 0.05 * rng.standard_normal(t.size)
        path = root / f"song{i:02d}.flac"
        sf.write(path, audio.astype(np.float32), 16000)
        items.append(ScoringItem(f"song{i:02d}", path, lyric="", language="en", description=""))
    return items


def copy_bandwidth() -> float:
    """Device memory bandwidth measured here: bytes read plus written by a 4 GiB device-to-device copy."""
    import torch

    a = torch.empty(2**31, dtype=torch.float16, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize()
    rate = 10 * 2 * a.numel() * 2 / (time.perf_counter() - start)
    del a, b
    torch.cuda.empty_cache()
    return rate


def step_floor(model, batch: int, tokens: int, bandwidth: float | None) -> dict:
    """The fewest bytes one greedy step of `batch` windows must read (fp16): every layer's
    cross-attention keys and values of every window, the self-attention cache at the mean
    position, the decoder's weights once (the logits' embedding included); over the bandwidth."""
    dims = model.dims
    d, layers = dims.n_text_state, dims.n_text_layer
    cross = layers * batch * dims.n_audio_ctx * d * 2 * 2
    self_cache = layers * batch * (4 + tokens / 2) * d * 2 * 2
    weights = 2 * sum(p.numel() for n, p in model.decoder.named_parameters() if n != "positional_embedding")
    total = cross + self_cache + weights
    datasheet = 3.35e12  # H100 SXM HBM3
    return {"batch": batch, "bytes_cross_attention": cross, "bytes_self_attention_mean": self_cache,
            "bytes_weights": weights, "bytes_total": total, "bandwidth_measured": bandwidth,
            "floor_s_measured_bandwidth": total / bandwidth if bandwidth else None,
            "floor_s_datasheet_3_35_TBps": total / datasheet}


def timed(fn):
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    value = fn()
    sync()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=32)
    parser.add_argument("--min-seconds", type=float, default=120.0)
    parser.add_argument("--max-seconds", type=float, default=180.0)
    parser.add_argument("--loop-songs", type=int, default=2, help="songs for the model.transcribe loop")
    parser.add_argument("--tokens", type=int, default=100, help="tokens decoded per 30 s window")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape", choices=["large-v3", "tiny"], default="large-v3")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--sweep", default="16,32,64,96,128,160,192", help="batch sizes for the step-time sweep")
    parser.add_argument("--sweep-efficient", default="64,128,192", help="the same with the efficient kernel")
    parser.add_argument("--sweep-matmul", default="64,128,192", help="the same with whisper's own (matmul) attention")
    parser.add_argument("--variants", default="bw64_nopad,bw128,pad1,pad_full,efficient,matmul")
    parser.add_argument("--check-backends", default="flash,efficient,matmul", help="attention kernels of the token check")
    parser.add_argument("--sweep-splitkv", default="", help="the same with the split-KV kernel")
    parser.add_argument("--kernel-bench", action="store_true", help="one layer's cross-attention per kernel, first")
    parser.add_argument("--tune-splitkv", action="store_true", help="use the fastest split-KV setting of --kernel-bench")
    parser.add_argument("--skip", default="", help="comma-separated parts left out: no_graphs, padding, loop")
    parser.add_argument("--eot-mean-tokens", type=float, default=0.0,
                        help="also time end-of-text allowed, the model's windows ending after this many tokens on average")
    parser.add_argument("--out", type=Path, default=Path("whisper_gpu.json"))
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    import torch
    import whisper

    from pipeline.scoring.whisper_fast import release

    cuda = args.device == "cuda"
    model = build_model(args.seed, LARGE_V3 if args.shape == "large-v3" else TINY, args.device)
    fp16 = cuda
    eot = whisper.tokenizer.get_tokenizer(True, num_languages=model.num_languages).eot
    suppress = f"-1,{eot}"  # no end-of-text: every window decodes exactly --tokens tokens
    root = Path(tempfile.mkdtemp(prefix="whisper-bench-"))
    items = write_songs(root, args.songs, args.min_seconds, args.max_seconds, args.seed)
    seconds = [load_audio(i.audio_path).size / 16000 for i in items]
    total = sum(seconds)
    defaults = WhisperOptions(checkpoint="x")

    def scorer(decoder: str = "fast", suppress_tokens: str = suppress, **kw) -> WhisperTranscriber:
        options = WhisperOptions(checkpoint=f"random-{args.shape}", device=args.device, fp16=fp16, decoder=decoder,
                                 max_tokens=args.tokens, suppress_tokens=suppress_tokens, vad_threshold_db=-60.0, **kw)
        return WhisperTranscriber(options, model=model)

    n_windows = sum(len(scorer()._windows(i, item)[0]) for i, item in enumerate(items))
    variants = {
        "bw64_nopad": dict(batch_windows=64, pad_multiple=1, encode_windows=64),  # the previous defaults
        "bw128": dict(batch_windows=128),
        "pad1": dict(pad_multiple=1),  # no padding: a graph set for every batch size met
        "all_in_one": dict(batch_windows=-(-n_windows // 8) * 8),  # every window of the call in one batch
        "pad_full": dict(pad_multiple=defaults.batch_windows),  # a partial batch padded to the full size
        "efficient": dict(decoder_attention="efficient"),
        "matmul": dict(decoder_attention="matmul"),
        "cudnn": dict(decoder_attention="cudnn"),
        "cudnn_compiled_encoder": dict(decoder_attention="cudnn", compile_encoder=True),
        "compiled_encoder": dict(compile_encoder=True),
        "splitkv": dict(decoder_attention="splitkv"),
        "splitkv_compiled_encoder": dict(decoder_attention="splitkv", compile_encoder=True),
        "splitkv_compiled_encoder_pad1": dict(decoder_attention="splitkv", compile_encoder=True, pad_multiple=1),
        "splitkv_compiled_encoder_ew64": dict(decoder_attention="splitkv", compile_encoder=True, encode_windows=64),
        "splitkv_compiled_encoder_ew128": dict(decoder_attention="splitkv", compile_encoder=True, encode_windows=128),
    }
    rows, texts, result = {}, {}, {}

    def save():
        result.update({
            "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
            "torch": torch.__version__, "whisper": whisper.__version__, "python": platform.python_version(),
            "model": f"{args.shape} shape, random weights, fp32 weights, {'fp16' if fp16 else 'fp32'} compute",
            "songs": args.songs, "audio_seconds": round(total, 1), "windows": n_windows,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "defaults": {"batch_windows": defaults.batch_windows, "pad_multiple": defaults.pad_multiple,
                         "encode_windows": defaults.encode_windows, "decoder_attention": defaults.decoder_attention},
            "tokens_per_window": args.tokens, "loop_songs": args.loop_songs, "rows": rows,
        })
        args.out.write_text(json.dumps(result, indent=2))

    def peak_reset():
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak():
        return round(torch.cuda.max_memory_allocated() / 2**30, 1) if cuda else None

    def row(label, wall, cold=None, **extra):
        r = {"audio_s": round(total, 1), "wall_s": round(wall, 3), "x_realtime": round(total / wall, 1)}
        if cold is not None:
            r.update(cold_wall_s=round(cold, 3), cold_x_realtime=round(total / cold, 1))
        r.update(extra, peak_gpu_gib=peak())
        rows[label] = r
        print(f"{label}: {json.dumps(r)}", flush=True)
        save()

    def run_fast(label, suppress_tokens=suppress, **kw):
        t = scorer("fast", suppress_tokens, **kw)
        t.transcribe(items[:1])  # kernels, cuBLAS, allocator
        release(model)
        peak_reset()
        _, cold = timed(lambda: t.transcribe(items))  # captures a graph set per batch size met
        out, wall = timed(lambda: t.transcribe(items))  # graph sets kept from the call before
        assert all(r.error is None for r in out), [r.error for r in out]
        texts[label] = [r.text for r in out]
        row(label, wall, cold, options=kw or "defaults")

    def run_reference(label, suppress_tokens=suppress, **kw):
        release(model)
        t = scorer("reference", suppress_tokens, **kw)
        t.transcribe(items[:1])
        peak_reset()
        out, wall = timed(lambda: t.transcribe(items))
        texts[label] = [r.text for r in out]
        row(label, wall, options=kw or "defaults")

    if args.kernel_bench and cuda:
        result["cross_attention_one_layer"] = bench = cross_attention_bench(model, defaults.batch_windows)
        save()
        if args.tune_splitkv:
            from pipeline.scoring import decode_attention

            best = min((v for v in bench["splitkv"].values() if "ms" in v), key=lambda v: v["ms"])
            (decode_attention.SPLIT_KEYS, decode_attention.BLOCK_KEYS, decode_attention.NUM_WARPS,
             decode_attention.NUM_STAGES) = best["setting"]
            result["splitkv_setting"] = best["setting"]
            print("split-KV setting", best["setting"], flush=True)

    # (c) first: the row this benchmark is for. Then (b), the variants and (c').
    run_fast("c_batched_fast")
    run_reference("b_batched_reference")
    for name in [v for v in args.variants.split(",") if v]:
        run_fast(f"c_fast_{name}", **variants[name])
    for backend in ("efficient", "matmul", "cudnn", "splitkv"):
        if backend in args.variants.split(","):
            run_reference(f"b_reference_{backend}", decoder_attention=backend)
    if "splitkv_compiled_encoder" in args.variants.split(","):  # the reference over the same compiled encoder
        run_reference("b_reference_splitkv_compiled_encoder", **variants["splitkv_compiled_encoder"])
    if "no_graphs" not in skip:
        t = scorer("fast", cuda_graphs=False)
        t.transcribe(items[:1])
        release(model)
        peak_reset()
        out, wall = timed(lambda: t.transcribe(items))
        texts["c_batched_fast_no_graphs"] = [r.text for r in out]
        row("c_batched_fast_no_graphs", wall)

    same = lambda a, b: texts[a] == texts[b] if a in texts and b in texts else None  # noqa: E731  None: not run
    check = {
        "texts_identical_b_c": same("b_batched_reference", "c_batched_fast"),
        "texts_identical_c_cprime": same("c_batched_fast", "c_batched_fast_no_graphs"),
        "texts_identical_b_c_efficient": same("b_reference_efficient", "c_fast_efficient"),
        "texts_identical_b_c_matmul": same("b_reference_matmul", "c_fast_matmul"),
        "texts_identical_b_c_cudnn": same("b_reference_cudnn", "c_fast_cudnn"),
        "texts_identical_b_c_splitkv": same("b_reference_splitkv", "c_fast_splitkv"),
        "texts_identical_b_c_splitkv_compiled_encoder": same("b_reference_splitkv_compiled_encoder",
                                                             "c_fast_splitkv_compiled_encoder"),
        # Other batchings decode windows in other batch sizes: equal texts are expected, not promised.
        "texts_equal_to_default": {k: texts[k] == texts["c_batched_fast"] for k in texts if k.startswith("c_fast_")},
    }
    result["check"] = check
    save()

    # Token check and per-step decoder time on one full batch of windows, for each kernel.
    t = scorer("fast")
    windows = [w.audio for i, item in enumerate(items) for w in t._windows(i, item)[0]]
    chunk = 64
    features = torch.cat([t.encode(t.log_mel(windows[s: s + chunk])) for s in range(0, n_windows, chunk)])
    bw = defaults.batch_windows
    batch = features[:bw] if len(features) >= bw else features.repeat(-(-bw // len(features)), 1, 1)[:bw]
    result["memory_floor"] = floor = step_floor(model, bw, args.tokens, copy_bandwidth() if cuda else None)
    print("floor", json.dumps(floor), flush=True)
    for backend in [b for b in args.check_backends.split(",") if b]:
        t = scorer("fast", decoder_attention=backend)
        release(model)
        t.decode_tokens(batch, "en", decoder="fast")  # the runner for this batch size, graphs captured
        (fast_tokens, _), fast_s = timed(lambda: t.decode_tokens(batch, "en", decoder="fast"))
        fast_again, _ = t.decode_tokens(batch, "en", decoder="fast")
        release(model)
        (ref_tokens, _), ref_s = timed(lambda: t.decode_tokens(batch, "en", decoder="reference"))
        ref_again, _ = t.decode_tokens(batch, "en", decoder="reference")
        # The last 13 rows as padding (179 windows in a 192 batch, as the songs give): the fast decoder
        # finishes them at once; the other rows must keep their tokens.
        real = bw - 13
        release(model)
        t.decode_tokens(batch, "en", decoder="fast", rows=real)
        (rows_tokens, _), rows_s = timed(lambda: t.decode_tokens(batch, "en", decoder="fast", rows=real))
        check[backend] = {
            "reference_repeatable": ref_again == ref_tokens, "fast_repeatable": fast_again == fast_tokens,
            "windows": len(fast_tokens), "windows_identical_second_runs": sum(a == b for a, b in zip(fast_again, ref_again)),
            "tokens_identical": fast_tokens == ref_tokens,
            "windows_identical": sum(a == b for a, b in zip(fast_tokens, ref_tokens)),
            "tokens_per_window": sorted({len(x) for x in fast_tokens}),
            "distinct_tokens": len({x for row in fast_tokens for x in row}),
            "decode_ms_per_step_fast": round(1000 * fast_s / args.tokens, 2),
            "decode_ms_per_step_reference": round(1000 * ref_s / args.tokens, 2),
            "fast_step_over_floor": round(fast_s / args.tokens / floor["floor_s_measured_bandwidth"], 2) if cuda else None,
            "padding_rows_stopped": {"rows": real, "tokens_identical": rows_tokens[:real] == fast_tokens[:real],
                                     "padding_empty": all(not x for x in rows_tokens[real:]),
                                     "decode_ms_per_step_fast": round(1000 * rows_s / args.tokens, 2)},
        }
        print(backend, json.dumps(check[backend]), flush=True)
        save()
    # Padding on the GPU: 50 windows decoded padded to the full batch vs alone, by the reference.
    t = scorer("fast")
    if "padding" not in skip:
        part = batch[:50]
        padded = torch.cat([part, part[-1:].expand(bw - 50, *part.shape[1:])])
        release(model)
        padded_tokens, _ = t.decode_tokens(padded, "en", decoder="fast")
        release(model)
        alone, _ = t.decode_tokens(part, "en", decoder="reference")
        check["padding"] = {"windows": 50, "padded_to": bw,
                            "fast_padded_equals_reference_unpadded": padded_tokens[:50] == alone,
                            "windows_identical": sum(a == b for a, b in zip(padded_tokens[:50], alone))}  # fmt: skip
        print(json.dumps(check["padding"]), flush=True)
        save()

    # Step time against batch size (graphs captured before timing).
    sweep = {}
    for backend, sizes in [("flash", args.sweep), ("efficient", args.sweep_efficient), ("matmul", args.sweep_matmul),
                           ("splitkv", args.sweep_splitkv)]:  # fmt: skip
        t = scorer("fast", decoder_attention=backend)
        for b in [int(x) for x in sizes.split(",") if x]:
            f = features.repeat(-(-b // len(features)), 1, 1)[:b]
            release(model)
            peak_reset()
            t.decode_tokens(f, "en", decoder="fast")
            _, s = timed(lambda: t.decode_tokens(f, "en", decoder="fast"))
            sweep.setdefault(backend, {})[b] = {"ms_per_step": round(1000 * s / args.tokens, 2),
                                                "us_per_window_step": round(1e6 * s / args.tokens / b, 1),
                                                "peak_gpu_gib": peak()}
            print(backend, b, sweep[backend][b], flush=True)
            result["sweep"] = sweep
            save()
    release(model)

    # (d) the encoder alone over every window of the songs, in batches, mel precomputed.
    for eb in sorted({defaults.encode_windows, 128}):
        mels = [t.log_mel(windows[s: s + eb]) for s in range(0, n_windows, eb)]
        t.encode(mels[0])

        def encode_all():
            for m in mels:
                t.encode(m)

        _, wall = timed(encode_all)
        row("d_encoder_only" if eb == defaults.encode_windows else f"d_encoder_only_batch{eb}", wall, batch=eb)
        del mels
    # Mel alone (host audio to log-mel on the device), as the transcriber computes it.
    ew = defaults.encode_windows
    _, wall = timed(lambda: [t.log_mel(windows[s: s + ew]) for s in range(0, n_windows, ew)])
    row("e_log_mel_only", wall)

    if args.eot_mean_tokens:
        result["end_of_text"] = end_of_text_rows(args, model, batch, scorer, run_fast, run_reference, texts, eot)
        save()

    # (a) the model.transcribe loop, same decoding rules, on a subset of the songs.
    if "loop" in skip or args.loop_songs < 1:
        save()
        print_table(rows, result)
        return
    loop_items = items[: args.loop_songs]
    options = dict(language="en", temperature=0.0, without_timestamps=True, condition_on_previous_text=False,
                   no_speech_threshold=None, compression_ratio_threshold=None, logprob_threshold=None,
                   sample_len=args.tokens, suppress_tokens=suppress, fp16=fp16, verbose=None)
    model.transcribe(load_audio(loop_items[0].audio_path)[: 30 * 16000], **options)  # warm-up

    def loop():
        return [model.transcribe(load_audio(i.audio_path), **options) for i in loop_items]

    _, wall = timed(loop)
    loop_s = sum(seconds[: args.loop_songs])
    rows["a_transcribe_loop"] = {"audio_s": round(loop_s, 1), "wall_s": round(wall, 3), "x_realtime": round(loop_s / wall, 1)}

    fast_x = rows["c_batched_fast"]["x_realtime"]
    result.update({
        "speedup_fast_vs_transcribe_loop": round(fast_x / rows["a_transcribe_loop"]["x_realtime"], 1),
        "speedup_fast_vs_batched_reference": round(fast_x / rows["b_batched_reference"]["x_realtime"], 2),
        "peak_gpu_memory_gib_default_row": rows["c_batched_fast"]["peak_gpu_gib"],
    })
    save()
    print_table(rows, result)


def end_of_text_rows(args, model, batch, scorer, run_fast, run_reference, texts, eot) -> dict:
    """Rows with end-of-text allowed, the random model's windows ending after about `--eot-mean-tokens`
    tokens: the end-of-text embedding row scaled until one batch's mean length is that (bisection on
    a log scale: a larger row wins the argmax sooner). The model's row is restored afterwards."""
    import torch

    from pipeline.scoring import whisper_fast

    allowed = "-1"
    weight = model.decoder.token_embedding.weight
    row = weight[eot].detach().clone()

    def set_scale(scale: float) -> None:
        with torch.no_grad():
            weight[eot] = row * scale
        whisper_fast.release(model)
        whisper_fast._WEIGHTS.pop(model, None)  # the fast decoder's cast copy of the embedding

    def lengths(scale: float) -> list[int]:
        set_scale(scale)
        tokens, _ = scorer("fast", allowed, decoder_attention="splitkv").decode_tokens(batch, "en", decoder="fast")
        return [len(x) for x in tokens]

    lo, hi, tried = 1.0, 16.0, {}
    for _ in range(10):
        mid = (lo * hi) ** 0.5
        tried[round(mid, 4)] = float(np.mean(lengths(mid)))
        print("end-of-text scale", round(mid, 4), "mean tokens", tried[round(mid, 4)], flush=True)
        lo, hi = (mid, hi) if tried[round(mid, 4)] > args.eot_mean_tokens else (lo, mid)
    scale = min(tried, key=lambda k: abs(tried[k] - args.eot_mean_tokens))
    n = np.array(lengths(scale))
    out = {"target_mean_tokens": args.eot_mean_tokens, "scale": scale, "bisection": tried,
           "batch_tokens_per_window": {"mean": round(float(n.mean()), 1), "p10": int(np.percentile(n, 10)),
                                       "median": int(np.median(n)), "p90": int(np.percentile(n, 90)),
                                       "at_cap": int((n >= args.tokens).sum()), "windows": int(n.size)}}
    print("end-of-text", json.dumps(out), flush=True)
    kw = dict(decoder_attention="splitkv", compile_encoder=weight.is_cuda)
    run_fast("eot_c_fast_splitkv_compiled_encoder", allowed, **kw)
    run_reference("eot_b_reference_splitkv_compiled_encoder", allowed, **kw)
    # The same fast scorer with every row's attention computed to the end (no finished-row skip).
    skip = whisper_fast._Runner._decode_attention
    whisper_fast._Runner._decode_attention = lambda self, q, k, v: attention_of_every_row(q, k, v, self.w.dims.n_text_head)
    try:
        run_fast("eot_c_fast_splitkv_compiled_encoder_no_skip", allowed, **kw)
    finally:
        whisper_fast._Runner._decode_attention = skip
    out["texts_identical_b_c"] = texts["eot_b_reference_splitkv_compiled_encoder"] == texts["eot_c_fast_splitkv_compiled_encoder"]
    out["texts_identical_skip_no_skip"] = (texts["eot_c_fast_splitkv_compiled_encoder"]
                                           == texts["eot_c_fast_splitkv_compiled_encoder_no_skip"])
    out["song_words_mean"] = round(float(np.mean([len(t.split()) for t in texts["eot_c_fast_splitkv_compiled_encoder"]])), 1)
    set_scale(1.0)
    print("end-of-text", json.dumps(out), flush=True)
    return out


def attention_of_every_row(q, k, v, heads):
    """The split-KV kernel without `live`: finished rows read their caches too."""
    from pipeline.scoring.decode_attention import decode_attention

    return decode_attention(q, k, v, heads)


def print_table(rows: dict, result: dict) -> None:
    print(f"\n{'row':<34}{'audio s':>10}{'wall s':>10}{'x real time':>14}{'cold x':>10}")
    for label, r in rows.items():
        print(f"{label:<34}{r['audio_s']:>10}{r['wall_s']:>10}{r['x_realtime']:>14}{r.get('cold_x_realtime', ''):>10}")
    if "speedup_fast_vs_transcribe_loop" in result:
        print(f"fast vs transcribe loop: {result['speedup_fast_vs_transcribe_loop']}x; "
              f"fast vs batched reference: {result['speedup_fast_vs_batched_reference']}x; device {result['device']}")
    for backend, c in result.get("check", {}).items():
        if isinstance(c, dict) and "tokens_identical" in c:
            print(backend, {k: c[k] for k in ("tokens_identical", "windows_identical", "reference_repeatable", "fast_repeatable",
                                              "decode_ms_per_step_fast", "fast_step_over_floor") if k in c})  # fmt: skip


def cross_attention_bench(model, batch: int) -> dict:
    """One layer's cross-attention for `batch` windows, one query row each, per kernel (median of CUDA
    event timings over rotating key/value sets, so the L2 cache does not hold them)."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from pipeline.scoring import decode_attention

    dims = model.dims
    heads, width, frames = dims.n_text_head, dims.n_text_state, dims.n_audio_ctx
    gen = torch.Generator(device="cuda").manual_seed(0)
    sets = [tuple(torch.randn(batch, n, width, device="cuda", dtype=torch.float16, generator=gen) for n in (1, frames, frames))
            for _ in range(2)]  # fmt: skip
    kv_bytes = 2 * batch * frames * width * 2

    def median_ms(fn) -> float:
        for i in range(3):
            fn(*sets[i % 2])
        times = []
        for i in range(20):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn(*sets[i % 2])
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        return sorted(times)[len(times) // 2]

    def sdpa(q, k, v):
        split = lambda x: x.view(batch, -1, heads, width // heads).transpose(1, 2)  # noqa: E731  whisper's layout
        return F.scaled_dot_product_attention(split(q), split(k), split(v))

    out = {"batch": batch, "bytes_kv": kv_bytes, "sdpa": {}, "splitkv": {}}
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
        try:
            with sdpa_kernel([backend]):
                ms = median_ms(sdpa)
            out["sdpa"][name] = {"ms": round(ms, 4), "TBps": round(kv_bytes / ms / 1e9, 2)}
        except RuntimeError as error:
            out["sdpa"][name] = {"error": str(error)[:160]}
    names = ("SPLIT_KEYS", "BLOCK_KEYS", "NUM_WARPS", "NUM_STAGES")
    saved = [getattr(decode_attention, n) for n in names]
    q, k, v = sets[0]
    with sdpa_kernel([SDPBackend.MATH]):
        exact = sdpa(q.double(), k.double(), v.double())
    # (keys per split, keys per block, warps, stages)
    for setting in [(256, 64, 4, 3), (512, 64, 4, 3), (512, 64, 4, 4), (512, 64, 4, 2), (768, 64, 4, 3), (1536, 64, 4, 3),
                    (256, 64, 8, 3), (512, 128, 8, 3), (512, 32, 2, 3)]:  # fmt: skip
        for n, value in zip(names, setting):
            setattr(decode_attention, n, value)
        try:
            ms = median_ms(lambda q, k, v: decode_attention.decode_attention(q, k, v, heads))
            got = decode_attention.decode_attention(q, k, v, heads).double().view(batch, 1, heads, -1).transpose(1, 2)
            error = ((got - exact).norm() / exact.norm()).item()
            out["splitkv"][str(setting)] = {"setting": list(setting), "ms": round(ms, 4), "TBps": round(kv_bytes / ms / 1e9, 2),
                                            "rel_error_vs_float64": error}  # fmt: skip
        except Exception as error:  # a setting Triton cannot compile: say so and go on
            out["splitkv"][str(setting)] = {"setting": list(setting), "error": f"{type(error).__name__}: {str(error)[:160]}"}
        print("cross-attention", setting, out["splitkv"][str(setting)], flush=True)
    for n, value in zip(names, saved):
        setattr(decode_attention, n, value)
    print("cross-attention sdpa", out["sdpa"], flush=True)
    return out


if __name__ == "__main__":
    main()
