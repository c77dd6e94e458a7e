"""Benchmark: `hf-codec` sampling on a GPU at YuE's stage-1 shape (Llama 7B), random weights, bf16.

The sampler is the backend's own (`pipeline.models.causal_lm.sample_interleaved`: a static KV
cache, one seeded generator per row, only codec tokens allowed, vocals and accompaniment
interleaved). The LM has YuE-s1-7B's shape: Llama, hidden 4096, 32 layers, 32 heads, MLP 11008,
vocabulary 83734 (text, then X-Codec codebook-0 tokens from id 45334). A song is YuE's default
stage-1 budget: a 300-token prompt and up to 3000 codec tokens (1500 frames, 30 s at 50 Hz);
the cache is sized for it, and the end token is held back so every row runs the whole time.

Measured:
- copy bandwidth: a device-to-device copy of a 2 GiB buffer (bytes read + written per second);
- batch 1: tokens/s of one song over `--steps1` decode steps (prefill excluded), against the
  memory-bandwidth bound: the weight bytes read per step (every weight but the input embedding,
  of which one row is read) over the copy bandwidth; beside it the LM's forward alone per step
  (the sampler's masking, drawing and host copy excluded);
- batch sweep: batch sizes doubling until the GPU runs out of memory, then halved towards the
  largest that fits; total tokens/s of each over `--steps` decode steps; the largest that fits
  is the batch that fills memory.

Needs only torch and transformers (the repository's own sampler is imported from this checkout).

    python benchmarks/hfcodec_gpu.py                # GPU: writes benchmarks/results/hfcodec_gpu.json
    python benchmarks/hfcodec_gpu.py --tiny         # the same path on a CPU in seconds (result in /tmp)
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.models.base import SamplingParams  # noqa: E402
from pipeline.models.causal_lm import InterleavedSongs, sample_interleaved  # noqa: E402

YUE_S1 = dict(vocab_size=83734, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
              num_key_value_heads=32, max_position_embeddings=16384, tie_word_embeddings=False)  # fmt: skip
YUE = dict(code_offset=45334, codebook=1024, end_id=32002, prompt=300, song_tokens=3000)
TINY = dict(YUE_S1, vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=1024)  # fmt: skip
TINY_SONG = dict(code_offset=1024, codebook=256, end_id=2, prompt=32, song_tokens=256)
RESULTS = Path(__file__).resolve().parent / "results"


class StopAfter(Exception):
    pass


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth(device: str, nbytes: int, repeats: int = 20) -> float:
    """Bytes moved (read + written) per second by a device-to-device copy of `nbytes`."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    sync(device)
    seconds = time.perf_counter() - start
    del src, dst
    return 2 * nbytes * repeats / seconds


def build_model(shape: dict, device: str, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(LlamaConfig(**shape))
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def weight_bytes(model) -> tuple[int, int]:
    """(bytes of every weight, bytes read per decode step of one row: all but the input embedding)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    embedding = model.get_input_embeddings().weight
    return total, total - embedding.numel() * embedding.element_size()


def timed_run(model, song: dict, batch: int, steps: int, device: str) -> dict:
    """`steps` decode steps of `batch` rows, prefill excluded; the cache holds a whole song."""
    layout = InterleavedSongs(("vocals", "accompaniment"),
                              tuple(range(song["code_offset"], song["code_offset"] + song["codebook"])), song["end_id"])  # fmt: skip
    prompt = torch.randint(3, song["code_offset"], (song["prompt"],), generator=torch.Generator().manual_seed(1)).tolist()
    frames = song["song_tokens"] // 2
    marks: list[float] = []

    def on_step(step: int) -> None:
        marks.append(time.perf_counter())  # the step's draw was copied to the host: its work is done
        if step >= steps:
            raise StopAfter

    sync(device)
    start = time.perf_counter()
    try:
        sample_interleaved(model, prompt, list(range(batch)), layout, SamplingParams(), frames, min_frames=frames, on_step=on_step)
    except StopAfter:
        pass
    decode = marks[-1] - marks[0]  # steps 1..steps; step 0 is the prefill's token
    return {"batch": batch, "steps": steps, "prefill_s": round(marks[0] - start, 4), "decode_s": round(decode, 4),
            "step_ms": round(1000 * decode / steps, 3), "tokens_per_s_per_song": round(steps / decode, 2),
            "tokens_per_s_total": round(batch * steps / decode, 1),
            "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None}  # fmt: skip


@torch.no_grad()
def forward_only(model, song: dict, steps: int, device: str) -> float:
    """Milliseconds per decode step of the LM's forward alone at batch 1 (same cache, no sampling):
    what the sampler's own work (masking, drawing, the host copy of each token) adds shows beside it."""
    from pipeline.models.causal_lm import cache_keyword, static_cache

    cache = static_cache(model, 1, song["prompt"] + song["song_tokens"] + 1)
    key = cache_keyword(model)
    tokens = torch.randint(3, song["code_offset"], (1, song["prompt"]), device=device)
    model(input_ids=tokens, use_cache=True, logits_to_keep=1, **{key: cache})
    token = torch.full((1, 1), song["code_offset"], device=device)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        model(input_ids=token, use_cache=True, logits_to_keep=1, **{key: cache})
    sync(device)
    return 1000 * (time.perf_counter() - start) / steps


def try_batch(model, song, batch, steps, device) -> dict | None:
    """The run, or None when the batch does not fit in memory (its cache is freed before returning)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run = None
    try:
        run = timed_run(model, song, batch, steps, device)
    except torch.cuda.OutOfMemoryError:
        pass
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return run


def batch_sweep(model, song, steps, device, max_batch: int, log) -> tuple[list[dict], int | None]:
    """Doubling until out of memory (or max_batch), then bisecting: (every run, the largest batch that fits)."""
    runs, fits, fails, batch = [], 0, None, 1
    while batch <= max_batch:
        run = try_batch(model, song, batch, steps, device)
        log(f"batch {batch}: {'out of memory' if run is None else run}")
        if run is None:
            fails = batch
            break
        runs.append(run)
        fits, batch = batch, batch * 2
    while fails is not None and fails - fits > max(1, fits // 8):  # to within an eighth
        middle = (fits + fails) // 2
        run = try_batch(model, song, middle, steps, device)
        log(f"batch {middle}: {'out of memory' if run is None else run}")
        if run is None:
            fails = middle
        else:
            runs.append(run)
            fits = middle
    return runs, fits or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="A tiny Llama on the CPU: the whole path in seconds.")
    parser.add_argument("--steps1", type=int, default=512, help="Decode steps timed at batch 1.")
    parser.add_argument("--steps", type=int, default=24, help="Decode steps timed per batch size in the sweep.")
    parser.add_argument("--max-batch", type=int, default=1024, help="Largest batch the sweep tries.")
    parser.add_argument("--out", type=Path, help="Result JSON (default: benchmarks/results/hfcodec_gpu.json; --tiny: $TMPDIR).")
    args = parser.parse_args()
    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --tiny for the CPU smoke test")
    shape, song, dtype = (TINY, TINY_SONG, torch.float32) if args.tiny else (YUE_S1, YUE, torch.bfloat16)
    steps1, steps, max_batch = (32, 8, 8) if args.tiny else (args.steps1, args.steps, args.max_batch)
    out = args.out or (Path(tempfile.gettempdir()) / "hfcodec_gpu_tiny.json" if args.tiny else RESULTS / "hfcodec_gpu.json")
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    started = time.perf_counter()

    bandwidth = copy_bandwidth(device, (2 << 30) if device == "cuda" else (64 << 20))
    log(f"copy bandwidth: {bandwidth / 1e9:.1f} GB/s")
    model = build_model(shape, device, dtype)
    total, per_step = weight_bytes(model)
    log(f"model: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, {total / 2**30:.2f} GiB")
    try_batch(model, song, 1, 4, device)  # warm-up: kernels, allocator
    one = timed_run(model, song, 1, steps1, device)
    bound_ms = 1000 * per_step / bandwidth
    forward_ms = forward_only(model, song, steps1, device)
    one |= {"bound_step_ms": round(bound_ms, 3), "bound_tokens_per_s": round(1000 / bound_ms, 2),
            "fraction_of_bound": round(bound_ms / one["step_ms"], 3), "forward_only_step_ms": round(forward_ms, 3),
            "forward_only_fraction_of_bound": round(bound_ms / forward_ms, 3)}  # fmt: skip
    log(f"batch 1: {one}")
    runs, fills = batch_sweep(model, song, steps, device, max_batch, log)
    best = next((r for r in runs if r["batch"] == fills), None)
    result = {
        "what": "hf-codec sampling (pipeline.models.causal_lm.sample_interleaved), YuE stage-1 shape, random weights",
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if device == "cuda" else None,
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                     "python": platform.python_version()},
        "shape": shape, "song": song, "dtype": str(dtype).replace("torch.", ""),
        "parameters": sum(p.numel() for p in model.parameters()), "weight_bytes": total, "weight_bytes_per_step": per_step,
        "copy_bandwidth_gb_s": round(bandwidth / 1e9, 1),
        "batch_1": one,
        "fills_memory": {"batch": fills, **(best or {})},
        "sweep": sorted(runs, key=lambda r: r["batch"]),
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    log(f"batch 1: {one['tokens_per_s_per_song']} tokens/s, {one['fraction_of_bound']:.0%} of the bandwidth bound; "
        f"fills memory at batch {fills}: {(best or {}).get('tokens_per_s_total')} tokens/s in all; {result['seconds']} s -> {out}")  # fmt: skip


if __name__ == "__main__":
    main()
