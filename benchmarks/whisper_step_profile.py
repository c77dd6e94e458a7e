"""Benchmark: where a fast-decoder step of Whisper (large-v3 shape) spends its time, and the encoder's share.

The fast scorer runs at about 1,070x real time against a 1,500x goal: 1.38 s of encoder and
100 steps of 31.4 ms for 179 windows, each step about twice its memory floor. This script takes
the decoder apart on one batch of `--batch` windows (random weights and encoder states; timing
does not depend on values):

- one step profiled without CUDA graphs, its kernel time grouped (attention, matrix products,
  element-wise and the rest) and the top kernels;
- the cross-attention of one layer alone, per SDPA kernel, against the bytes it must read;
- the encoder over `--encode-windows` windows: eager, and compiled by torch.compile.

    python benchmarks/whisper_step_profile.py [--batch 192] [--out benchmarks/results/whisper_step_profile.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.whisper_gpu import LARGE_V3, TINY, build_model, copy_bandwidth  # noqa: E402


def cuda_time(fn, repeat: int) -> float:
    import torch

    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat


def kernel_groups(prof) -> dict:
    """GPU kernel time by group, and the top kernels, from a torch.profiler run."""
    groups: dict[str, float] = {}
    kernels = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", 0.0) or 0.0
        if t <= 0 or e.key.startswith("aten::") or e.key.startswith("cuda"):
            continue
        name = e.key.lower()
        group = ("attention" if ("flash" in name or "fmha" in name or "attention" in name or "partial_kernel" in name
                                 or "combine_kernel" in name) else
                 "matmul" if ("gemm" in name or "sm90" in name or "cutlass" in name or "xmma" in name) else
                 "softmax/argmax/reduce" if ("softmax" in name or "reduce" in name or "argmax" in name) else
                 "elementwise/copy")  # fmt: skip
        groups[group] = groups.get(group, 0.0) + t
        kernels.append((t, e.key[:120], e.count))
    kernels.sort(reverse=True)
    return {"groups_ms": {k: round(v / 1e3, 3) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
            "top_kernels": [{"ms": round(t / 1e3, 3), "kernel": k, "calls": c} for t, k, c in kernels[:12]]}  # fmt: skip


def main() -> None:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import whisper
    from whisper.decoding import DecodingOptions

    from pipeline.scoring.whisper_fast import _weights, deterministic_attention, greedy_plan, release

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=192)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--encode-windows", type=int, default=32)
    parser.add_argument("--shape", choices=["large-v3", "tiny"], default="large-v3")
    parser.add_argument("--attention", default="flash", help="decoder_attention of the profiled step: flash or splitkv")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "whisper_step_profile.json")
    args = parser.parse_args()
    dims = LARGE_V3 if args.shape == "large-v3" else TINY
    device = torch.device("cuda")
    model = build_model(0, dims, "cuda")
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "batch": args.batch,
                    "attention": args.attention, "bandwidth_measured": copy_bandwidth()}  # fmt: skip
    eot = whisper.tokenizer.get_tokenizer(True, num_languages=model.num_languages).eot
    plan = greedy_plan(model, DecodingOptions(language="en", without_timestamps=True, fp16=True, sample_len=args.steps,
                                              suppress_tokens=f"-1,{eot}"))  # every window decodes all steps  # fmt: skip
    feats = torch.randn(args.batch, dims["n_audio_ctx"], dims["n_audio_state"], device=device, dtype=torch.float16)
    init = torch.tensor([plan.initial_tokens] * args.batch, dtype=torch.long, device=device)
    t0 = len(plan.initial_tokens)
    w = _weights(model, torch.float16)
    with torch.no_grad(), deterministic_attention(args.attention):
        for graphs in (True, False):
            r = w.runner(plan, args.batch, dims["n_audio_ctx"], device, graphs)
            r.prefill(init, feats)
            step_s = cuda_time(lambda: r.step(t0 + 50), 20)  # at the middle position of a window
            report[f"step_ms_{'graphs' if graphs else 'eager'}"] = round(step_s * 1e3, 3)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                r.step(t0 + 50)
            torch.cuda.synchronize()
        report["profile_5_eager_steps"] = kernel_groups(prof)
        if args.attention == "splitkv":  # a step with every other window finished: its attention skipped
            r = w.runner(plan, args.batch, dims["n_audio_ctx"], device, True)
            r.prefill(init, feats)
            r.tok[::2] = plan.eot
            report["step_ms_graphs_half_finished"] = round(cuda_time(lambda: r.step(t0 + 50), 20) * 1e3, 3)
        # One layer's cross-attention alone, per kernel: 1 query row per window and head.
        h, d = dims["n_text_head"], dims["n_text_state"] // dims["n_text_head"]
        q = torch.randn(args.batch, h, 1, d, device=device, dtype=torch.float16)
        k = torch.randn(args.batch, h, dims["n_audio_ctx"], d, device=device, dtype=torch.float16)
        v = torch.randn_like(k)
        bytes_kv = 2 * k.numel() * 2
        cross = {}
        for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                              ("cudnn", SDPBackend.CUDNN_ATTENTION), ("math", SDPBackend.MATH)):  # fmt: skip
            try:
                with sdpa_kernel([backend]):
                    s = cuda_time(lambda: F.scaled_dot_product_attention(q, k, v), 50)
                cross[name] = {"ms_per_layer": round(s * 1e3, 4), "ms_per_step_all_layers": round(s * 1e3 * dims["n_text_layer"], 2),
                               "bandwidth_TBps": round(bytes_kv / s / 1e12, 2)}  # fmt: skip
            except RuntimeError as error:
                cross[name] = {"error": str(error)[:160]}
        report["cross_attention_one_layer"] = cross | {"bytes_kv": bytes_kv}
        print(json.dumps(report, indent=1), flush=True)
        del r, w, feats, q, k, v
        release(model)
        # The encoder: eager against torch.compile (the same windows).
        mel = torch.randn(args.encode_windows, dims["n_mels"], 3000, device=device, dtype=torch.float16)
        encoder = model.encoder  # fp32 weights cast per call, as the transcriber runs it
        with deterministic_attention():
            eager = cuda_time(lambda: encoder(mel), 3)
            started = time.perf_counter()
            compiled = torch.compile(encoder)
            compiled(mel)
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - started
            fused = cuda_time(lambda: compiled(mel), 3)
            diff = (compiled(mel).float() - encoder(mel).float()).abs().max().item()
        report["encoder"] = {"windows": args.encode_windows, "eager_s": round(eager, 4), "compiled_s": round(fused, 4),
                             "compile_s": round(compile_s, 1), "ms_per_window_eager": round(eager / args.encode_windows * 1e3, 3),
                             "ms_per_window_compiled": round(fused / args.encode_windows * 1e3, 3), "max_abs_diff": diff}  # fmt: skip
    print(json.dumps(report["encoder"], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
