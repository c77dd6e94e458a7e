"""Benchmark: DPO of a LeVo-sized (about 2 B parameters) multi-stream policy on one GPU, against stock TRL on a Llama.

The policy is the tiny policy's architecture (`TinyPolicy`: an LM over [prefix ; header ; mixed
stream] and an AR decoder predicting vocals and accompaniment from the LM's states k = 2 frames
ahead) at LeLM's scale: width 1,536, 28 LM blocks and 12 AR-decoder blocks (12 heads, MLP 8,960),
16,384-entry codebooks for the mixed, vocals and accompaniment streams at 25 frames per second.
Random weights, bf16 weights and optimizer states. The anchor is TRL's stock DPOTrainer on a
LlamaForCausalLM with the same width and 40 blocks (untied embeddings over the policy's text
vocabulary), so the two models have about the same parameter count, trained on the same ids
(the same prompts and the same songs in the text form of preference_text.py: the Llama reads
3 ids per frame where the policy's LM reads one and its decoder one).

Data: `--pairs` pairs over the four benchmark conditions, each song's length drawn uniformly
in [0.6, 1] x `--seconds`, every token random (seeded): throughput does not depend on values.

Configurations (each a fresh model): policy full fine-tuning and LoRA through
MultiStreamDPOTrainer, Llama full fine-tuning and LoRA through DPOTrainer, and the policy's
full fine-tuning again with its two block stacks compiled by torch.compile (compilation falls in
the warm-up and the precompute). `/packed`: the micro-batch's rows packed end to end into one
sequence per block stack (`TinyLeLM.pack_rows`: no padding, attention causal inside each row through
PyTorch's variable-length flash kernel); before training, the packed and padded states of two rows
are compared (`packed_check`). `/packed/compiled`: packed, and each Llama block compiled on its
own (one graph for all 40 blocks; the packed sequence's length is dynamic, the kernel's row bound
fixed, so it compiles once). `/liger`: Liger's Triton kernels in both block stacks. `/batchN`: N
pairs a micro-batch, one micro-batch a step. Reference
log-probs precomputed everywhere; `--batch` pairs per micro-batch, `--accumulate` micro-batches
per step. The Llama runs with TRL's default gradient checkpointing (its activations at these
lengths do not fit otherwise); the policy without. SDPA's cuDNN kernel is off for every
configuration unless `--cudnn-attention` (the host spent 2-2.5 ms in each of its calls here,
the GPU idle meanwhile; the Llama's long rows run faster with it).

Model FLOPs are counted per row of every training forward (a hook reads the row's ids): per real
token 2 x (matmul weights it passes through) forward, plus causal attention 2·n²·d per block;
training counts 3 x forward for full fine-tuning and 2 x forward for LoRA (no weight gradients of
the frozen base); recomputation by checkpointing is not model FLOPs, padding neither. MFU is
those FLOPs per second over the timed steps against the card's dense bf16 peak (H100 SXM:
989.4 TFLOP/s) and against the bf16 matrix-product rate measured at the start (8192³).
TRL hashes every weight on the CPU to key its reference-log-prob cache (about 9 GB of bytes at
this size); the script keys it by a fresh name per configuration instead (setup time only).
One warm-up step is profiled: CUDA kernel time split into matrix products, attention,
optimizer and the rest, the step's time with no kernel running, and the host time spent in its
phases (the policy's forward and read-back of ids, TRL's loss, the optimizer) and in the top
host-side calls.

    python benchmarks/dpo_gpu.py [--seconds 150] [--pairs 24] [--steps 10] [--only levo/full ...] [--cudnn-attention]
    python benchmarks/dpo_gpu.py --preset test --device cpu   # tiny shapes, a check of the script
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import torch
import trl.trainer.dpo_trainer as dpo_module
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback

from alignment.dpo.options import DpoOptions, LoraOptions
from alignment.tiny_policy import TinyPolicy
from benchmarks.dpo_throughput import CONDITIONS, StepClock, TimedDPOTrainer, TimedMultiStreamDPOTrainer
from pipeline.models.tiny.codec import HEADER_SIZE
from pipeline.models.tiny.model import TinyLeLMConfig
from pipeline.models.tiny.preference_text import TinySongTokenizer, TokenLayout, completion_text, prompt_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "dpo_gpu.json"
FRAME_RATE = 25  # LeVo's codec frames per second
H100_BF16_DENSE = 989.4e12
PRESETS = {
    "levo": dict(hidden_size=1536, lm_layers=28, decoder_layers=12, num_heads=12, intermediate_size=8960,
                 mixed_vocab=16384, vocals_vocab=16384, accompaniment_vocab=16384),
    "test": dict(hidden_size=64, lm_layers=2, decoder_layers=1, num_heads=4, intermediate_size=128,
                 mixed_vocab=512, vocals_vocab=512, accompaniment_vocab=512),
}  # fmt: skip


def policy_config(preset: str, max_frames: int) -> TinyLeLMConfig:
    return TinyLeLMConfig(**PRESETS[preset], header_vocab=HEADER_SIZE, delay=2, max_frames=max_frames)


def random_dataset(config: TinyLeLMConfig, pairs: int, seconds: float, seed: int) -> tuple[Dataset, dict]:
    """Prompt/chosen/rejected texts: the benchmark conditions, random songs of 0.6-1 x `seconds`."""
    rng = random.Random(seed)
    layout = TokenLayout.from_config(config)

    def song() -> dict:
        frames = rng.randint(round(0.6 * seconds * FRAME_RATE), round(seconds * FRAME_RATE))
        return {"header": [rng.randrange(config.header_vocab) for _ in range(3)],
                **{s: [rng.randrange(getattr(config, f"{s}_vocab")) for _ in range(frames)]
                   for s in ("mixed", "vocals", "accompaniment")}}  # fmt: skip

    rows, frames = [], []
    for i in range(pairs):
        chosen, rejected = song(), song()
        frames += [len(chosen["mixed"]), len(rejected["mixed"])]
        rows.append({"prompt": prompt_text(CONDITIONS[i % len(CONDITIONS)], layout, config.max_prefix),
                     "chosen": completion_text(chosen), "rejected": completion_text(rejected)})  # fmt: skip
    return Dataset.from_list(rows), {"pairs": pairs, "seed": seed, "seconds_max": seconds, "frame_rate": FRAME_RATE,
                                     "frames_mean": sum(frames) / len(frames), "frames_min": min(frames),
                                     "frames_max": max(frames)}  # fmt: skip


def linear_weights(module: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


class FlopCounter:
    """Model FLOPs of every training forward, from each row's ids (see the module docstring)."""

    def __init__(self, model, layout: TokenLayout, kind: str, lora: bool):
        self.kind, self.multiplier, self.total = kind, 2 if lora else 3, 0.0
        offsets, sizes = layout.offsets(), layout.sizes()
        self.prefix_range = (offsets["K"], offsets["K"] + sizes["K"])  # one K id per prefix row
        self.mixed_range = (offsets["M"], offsets["M"] + sizes["M"])
        if kind == "policy":
            c = model.config
            self.d = c.hidden_size
            self.lm_blocks, self.dec_blocks = c.lm_layers, c.decoder_layers
            self.lm_block = linear_weights(model.lm.layers[0])
            self.dec_block = linear_weights(model.decoder.layers[0])
            self.heads = {s: h.weight.numel() for s, h in model.stream_heads().items()}
            self.cond_proj = model.cond_proj.weight.numel()
        else:
            c = model.config
            self.d, self.blocks = c.hidden_size, c.num_hidden_layers
            self.block = linear_weights(model.model.layers[0])
            self.head = model.lm_head.weight.numel()

    def row_forward(self, ids: torch.Tensor, completion: int) -> float:
        if self.kind == "policy":
            p = int(((ids >= self.prefix_range[0]) & (ids < self.prefix_range[1])).sum())
            t = int(((ids >= self.mixed_range[0]) & (ids < self.mixed_range[1])).sum())
            n = p + 3 + t  # LM positions: prefix, header, mixed
            weights = (self.lm_blocks * self.lm_block * n + self.dec_blocks * self.dec_block * t + self.cond_proj * t
                       + self.heads["header"] * 3 + self.heads["mixed"] * (t + 1)
                       + (self.heads["vocals"] + self.heads["accompaniment"]) * t)  # fmt: skip
            attention = 2 * self.d * (self.lm_blocks * n * n + self.dec_blocks * t * t)
            return 2 * weights + attention
        n = len(ids)
        return 2 * (self.blocks * self.block * n + self.head * completion) + 2 * self.d * self.blocks * n * n

    def hook(self, module, args, kwargs):
        if not (module.training and torch.is_grad_enabled()):
            return
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        mask, labels = kwargs.get("attention_mask"), kwargs.get("labels")
        for b in range(ids.shape[0]):
            row = ids[b][mask[b].bool()] if mask is not None else ids[b]
            completion = int((labels[b] != -100).sum()) if labels is not None else len(row)
            self.total += self.multiplier * self.row_forward(row.cpu(), completion)


class ProfileOneStep(TrainerCallback):
    """CUDA kernel time of one (untimed warm-up) step, split by kind of kernel."""

    def __init__(self, step: int):
        self.step, self.profiler, self.summary, self.began = step, None, None, 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            cuda = torch.cuda.is_available()
            if cuda:
                torch.cuda.synchronize()
            activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()
            self.began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.profiler is None or self.summary is not None:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - self.began
        self.profiler.__exit__(None, None, None)
        kinds = {"matmul": 0.0, "attention": 0.0, "optimizer": 0.0, "other": 0.0}
        by_name: dict[str, float] = {}
        for event in self.profiler.events():
            if event.device_type != torch.autograd.DeviceType.CUDA or event.name in TIMED_RANGES:
                continue  # the host ranges below also appear on the device's timeline: not kernels
            seconds, name = event.time_range.elapsed_us() / 1e6, event.name.lower()
            kind = ("attention" if any(k in name for k in ("flash", "fmha", "attention", "sdpa"))
                    else "matmul" if any(k in name for k in ("gemm", "nvjet", "cutlass", "cublas", "xmma"))
                    else "optimizer" if any(k in name for k in ("adam", "multi_tensor", "foreach"))
                    else "other")  # fmt: skip
            kinds[kind] += seconds
            by_name[event.name[:120]] = by_name.get(event.name[:120], 0.0) + seconds
        busy = sum(kinds.values())
        top = sorted(by_name.items(), key=lambda x: -x[1])[:15]
        ranges: dict[str, float] = {}
        for event in self.profiler.events():
            if event.name in TIMED_RANGES:
                ranges[event.name] = ranges.get(event.name, 0.0) + event.cpu_time_total / 1e6
        host = sorted(((e.key, e.self_cpu_time_total / 1e6, e.count) for e in self.profiler.key_averages()
                       if e.self_cpu_time_total > 0), key=lambda x: -x[1])[:15]  # fmt: skip
        self.summary = {"step_seconds_profiled": wall, "kernel_seconds": kinds, "kernel_seconds_total": busy,
                        "no_kernel_seconds": max(wall - busy, 0.0), "top_kernels": top,
                        "host_seconds_in": ranges, "host_self_seconds_top": host}  # fmt: skip


# Host-side ranges recorded in the profiled step (wall time on the CPU, kernels running or not).
TIMED_RANGES = {}


def time_host_ranges() -> None:
    """Wrap the step's phases in profiler ranges (the profiled step reports their host time)."""
    import functools

    from accelerate import Accelerator
    from transformers import Trainer

    def wrap(owner, attr, name):
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed_call(*args, **kwargs):
            with torch.profiler.record_function(name):
                return original(*args, **kwargs)

        setattr(owner, attr, timed_call)
        TIMED_RANGES[name] = attr

    from pipeline.models.tiny.model import TinyLeLM

    wrap(TinyPolicy, "read_row", "policy.read_row")
    wrap(TinyLeLM, "stream_states", "policy.stream_states")
    wrap(TinyPolicy, "forward", "policy.forward")
    wrap(dpo_module.DPOTrainer, "compute_loss", "trainer.compute_loss")
    wrap(Trainer, "training_step", "trainer.training_step")
    wrap(Trainer, "_maybe_log_save_evaluate", "trainer.log_save")
    wrap(Accelerator, "clip_grad_norm_", "clip_grad_norm")
    wrap(torch.optim.AdamW, "step", "optimizer.step")


def compiled_before(name: str) -> bool:
    return name.endswith("/compiled") or "/compiled/" in name


def packed_check(model, tokenizer, dataset) -> dict:
    """The packed rows' states against the padded ones for the first pair's two songs, per stream:
    the relative difference (bf16 rounding is about 1e-2; a row seeing another's keys gives order 1)."""
    row = dataset[0]
    ids = [torch.tensor(tokenizer(row["prompt"] + row[k])["input_ids"]) for k in ("chosen", "rejected")]
    rows = [model.read_row(i) for i in ids]
    conditions, tokens = [r[0] for r in rows], [r[1] for r in rows]
    out = {}
    with torch.no_grad():
        model.pack_rows = False
        padded, targets_a = model.flat_stream_states(conditions, tokens)
        model.pack_rows = True
        packed, targets_b = model.flat_stream_states(conditions, tokens)
    for s in padded:
        assert torch.equal(targets_a[s], targets_b[s]), s
        out[s] = ((packed[s].float() - padded[s].float()).norm() / padded[s].float().norm()).item()
    print(f"  packed vs padded states, relative difference: {out}", flush=True)
    if max(out.values()) > 0.1:
        raise RuntimeError(f"packed rows disagree with padded rows: {out}")
    return out


def matmul_rate(device: str) -> float | None:
    if device != "cuda":
        return None
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * reps / (time.perf_counter() - start)


def build_policy(config, device, dtype):
    torch.manual_seed(0)
    with torch.device(device):
        return TinyPolicy(config).to(dtype)


def build_llama(config: TinyLeLMConfig, vocab_size: int, device, dtype):
    llama = LlamaConfig(vocab_size=vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
                        num_hidden_layers=config.lm_layers + config.decoder_layers, num_attention_heads=config.num_heads,
                        num_key_value_heads=config.num_heads, max_position_embeddings=32768, tie_word_embeddings=False,
                        pad_token_id=0, eos_token_id=1, bos_token_id=None)  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):
        return LlamaForCausalLM(llama).to(dtype)


def run_config(name, kind, trainer_class, model, tokenizer, dataset, options, args, peak_measured) -> dict:
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    clock = StepClock(args.warmup, args.budget_s, sync=torch.cuda.synchronize if cuda else None)
    profile = ProfileOneStep(args.warmup - 1)
    counter = FlopCounter(model, tokenizer.token_layout, kind, options.lora is not None)
    with tempfile.TemporaryDirectory(prefix="dpo_gpu_") as out:
        config = options.dpo_config(Path(out), seed=0)
        config.disable_tqdm = True
        start = time.perf_counter()
        trainer = trainer_class(model=model, ref_model=None, args=config, train_dataset=dataset,
                                processing_class=tokenizer, peft_config=options.peft_config(),
                                callbacks=[profile, clock])  # the profiler's own work lands in its untimed step  # fmt: skip
        setup = time.perf_counter() - start
        clock.trainer = trainer
        flops_at_end = []
        handle = trainer.model.register_forward_pre_hook(counter.hook, with_kwargs=True)
        clock_end = clock.on_step_end

        def on_step_end(*a, **k):
            clock_end(*a, **k)
            flops_at_end.append(counter.total)

        clock.on_step_end = on_step_end
        trainer.train()
        handle.remove()
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in trainer.model.parameters())
        optim = str(trainer.args.optim)
    w = args.warmup
    timed = len(clock.ends) - w
    wall = clock.ends[-1] - clock.ends[w - 1]
    tokens = clock.tokens[-1] - clock.tokens[w - 1]
    flops = flops_at_end[-1] - flops_at_end[w - 1]
    result = {"name": name, "parameters": total, "trainable_parameters": trainable, "lora": options.lora is not None,
              "gradient_checkpointing": options.gradient_checkpointing, "optimizer": optim,
              "pairs_per_micro_batch": options.batch_size, "micro_batches_per_step": options.gradient_accumulation_steps,
              "timed_steps": timed, "timed_seconds": wall, "seconds_per_step": wall / timed,
              "tokens": tokens, "tokens_per_s": tokens / wall, "model_flops": flops, "model_flops_per_s": flops / wall,
              "mfu_vs_datasheet": flops / wall / H100_BF16_DENSE if cuda else None,
              "mfu_vs_measured_matmul": flops / wall / peak_measured if peak_measured else None,
              "step_seconds": [b - a for a, b in zip(clock.ends[w - 1 : -1], clock.ends[w:])],
              "setup_seconds": setup, "precompute_seconds": getattr(trainer, "precompute_seconds", 0.0),
              "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
              "profile": profile.summary}  # fmt: skip
    mfu = f", MFU {result['mfu_vs_datasheet']:.1%}" if cuda else ""
    print(f"  {name}: {timed} steps, {wall / timed:.3f} s/step, {result['tokens_per_s']:,.0f} tokens/s, "
          f"{flops / wall / 1e12:.1f} TFLOP/s{mfu} (setup {setup:.1f} s)", flush=True)  # fmt: skip
    del trainer
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="levo")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--seconds", type=float, default=150.0, help="longest song (LeVo base: 2 min 30 s)")
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--batch", type=int, default=1, help="pairs per micro-batch")
    parser.add_argument("--accumulate", type=int, default=2, help="micro-batches per optimizer step")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--cudnn-attention", action="store_true",
                        help="leave SDPA's cuDNN kernel on (the host spent 2-2.5 ms in each of its calls here, "
                             "the GPU idle meanwhile); default: flash / memory-efficient only")
    parser.add_argument("--max-total-s", type=float, default=None,
                        help="skip the configurations left once this many seconds have passed")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.warmup < 2:
        parser.error("--warmup must be at least 2 (one warm-up step is profiled)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    os.environ.setdefault("TQDM_DISABLE", "1")
    dpo_module.hash_module = lambda module: f"dpo-gpu-{time.time_ns()}"  # a fresh cache key, no 9 GB hash
    time_host_ranges()
    if args.device == "cuda" and not args.cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(False)  # for every configuration alike
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    started, load_before = time.perf_counter(), os.getloadavg()
    peak = matmul_rate(args.device)
    config = policy_config(args.preset, max_frames=round(args.seconds * FRAME_RATE) + 1)
    dataset, data = random_dataset(config, args.pairs, args.seconds, args.seed)
    tokenizer = TinySongTokenizer(layout=TokenLayout.from_config(config).__dict__)
    base = DpoOptions(max_steps=args.warmup + args.steps, batch_size=args.batch, gradient_accumulation_steps=args.accumulate,
                      save_steps=10**9, logging_steps=1, precompute_ref_log_probs=True,
                      device="cpu" if args.device == "cpu" else "auto")  # fmt: skip
    lora = base.model_copy(update={"lora": LoraOptions(target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])})

    def batched(pairs: int) -> DpoOptions:  # `pairs` pairs a micro-batch, one micro-batch a step
        return base.model_copy(update={"batch_size": pairs, "gradient_accumulation_steps": 1})

    plans = [
        ("levo/full", "policy", TimedMultiStreamDPOTrainer, base),
        ("llama/full", "llama", TimedDPOTrainer, base.model_copy(update={"gradient_checkpointing": True})),
        ("levo/lora", "policy", TimedMultiStreamDPOTrainer, lora),
        ("llama/lora", "llama", TimedDPOTrainer, lora.model_copy(update={"gradient_checkpointing": True})),
        ("levo/full/compiled", "policy", TimedMultiStreamDPOTrainer, base),
        # Liger's Triton kernels in both block stacks (RMSNorm, SwiGLU, RoPE: one kernel each where
        # transformers launches several); its module-wide patches are undone for the configurations after.
        ("levo/full/liger", "policy", TimedMultiStreamDPOTrainer, base),
        ("levo/full/liger/batch2", "policy", TimedMultiStreamDPOTrainer,
         base.model_copy(update={"batch_size": 2 * args.batch, "gradient_accumulation_steps": max(1, args.accumulate // 2)})),
        ("levo/full/liger/packed/batch2", "policy", TimedMultiStreamDPOTrainer, batched(2)),
        ("levo/full/liger/packed/batch3", "policy", TimedMultiStreamDPOTrainer, batched(3)),
        ("levo/full/packed", "policy", TimedMultiStreamDPOTrainer, base),
        ("levo/full/packed/compiled/batch2", "policy", TimedMultiStreamDPOTrainer, batched(2)),
        ("levo/full/packed/compiled/batch3", "policy", TimedMultiStreamDPOTrainer, batched(3)),
        ("levo/full/liger/packed/batch4", "policy", TimedMultiStreamDPOTrainer, batched(4)),
    ]  # fmt: skip
    report = {"benchmark": "dpo_gpu", "preset": args.preset, "policy_config": PRESETS[args.preset] | {"delay": 2},
              "data": data, "settings": vars(args) | {"out": str(args.out)},
              "machine": {"device": args.device, "card": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
                          "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                          "measured_bf16_matmul_flops": peak, "datasheet_bf16_dense_flops": H100_BF16_DENSE,
                          "load_average_start": [round(x, 2) for x in load_before]},
              "versions": {k: __import__(k).__version__ for k in ("trl", "transformers", "peft", "datasets")},
              "results": []}  # fmt: skip
    print(f"data: {data}; measured bf16 matmul {peak / 1e12 if peak else 0:.0f} TFLOP/s", flush=True)
    from transformers.models.llama import modeling_llama

    unpatched = {n: getattr(modeling_llama, n) for n in ("apply_rotary_pos_emb", "LlamaRMSNorm", "LlamaMLP")}
    for name, kind, trainer_class, options in plans:
        if args.only and name not in args.only:
            continue
        for attr, value in unpatched.items():  # Liger replaces these module-wide: each configuration starts from transformers'
            setattr(modeling_llama, attr, value)
        if args.max_total_s and time.perf_counter() - started > args.max_total_s:
            report["results"].append({"name": name, "error": f"skipped: past --max-total-s {args.max_total_s}"})
            print(f"  {name}: skipped (time)", flush=True)
            continue
        model = (build_policy(config, args.device, dtype) if kind == "policy"
                 else build_llama(config, tokenizer.vocab_size, args.device, dtype))  # fmt: skip
        if kind == "policy":
            report["policy_attention"] = model.lm.config._attn_implementation
        if "/packed" in name:
            model.pack_rows = True
        if "/packed/compiled" in name:  # block by block: one graph serves all 40 blocks, the length dynamic
            for limit in ("cache_size_limit", "recompile_limit"):
                if hasattr(torch._dynamo.config, limit):
                    setattr(torch._dynamo.config, limit, max(getattr(torch._dynamo.config, limit), 64))
            for layer in [*model.lm.layers, *model.decoder.layers]:
                layer.compile(dynamic=True)
        elif name.endswith("/compiled"):  # both block stacks through Inductor; song lengths vary, so dynamic shapes
            model.lm.compile(dynamic=True)
            model.decoder.compile(dynamic=True)
        if "/liger" in name:
            from liger_kernel.transformers import apply_liger_kernel_to_llama

            for stack in (model.lm, model.decoder):
                apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, fused_linear_cross_entropy=False, model=stack)
            report["versions"]["liger_kernel"] = importlib.metadata.version("liger-kernel")
        try:
            check = packed_check(model, tokenizer, dataset) if "/packed" in name and not compiled_before(name) else None
            result = run_config(name, kind, trainer_class, model, tokenizer, dataset, options, args, peak)
            report["results"].append(result | ({"packed_check": check} if check else {}))
        except torch.OutOfMemoryError as error:  # a larger micro-batch may not fit: say so and go on
            report["results"].append({"name": name, "error": f"out of memory: {str(error)[:200]}"})
            print(f"  {name}: out of memory", flush=True)
        except Exception as error:  # one configuration's failure (a compiler's, say) is reported, not fatal
            import traceback

            report["results"].append({"name": name, "error": f"{type(error).__name__}: {str(error)[:400]}",
                                      "traceback": traceback.format_exc()[-3000:]})  # fmt: skip
            print(f"  {name}: failed: {type(error).__name__}: {str(error)[:300]}", flush=True)
        del model
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()
        report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        report["total_seconds"] = round(time.perf_counter() - started, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1, default=str) + "\n")  # after every configuration
        tmp.replace(args.out)
    print(f"{'configuration':<12} {'params':>8} {'s/step':>7} {'tokens/s':>9} {'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>8}")
    for r in report["results"]:
        if "error" in r:
            print(f"{r['name']:<12} {r['error'][:60]}")
            continue
        mfu = f"{r['mfu_vs_datasheet']:.1%}" if r["mfu_vs_datasheet"] else "-"
        print(f"{r['name']:<12} {r['parameters'] / 1e9:>7.2f}B {r['seconds_per_step']:>7.3f} {r['tokens_per_s']:>9,.0f} "
              f"{r['model_flops_per_s'] / 1e12:>8.1f} {mfu:>6} {r['peak_memory_gib'] or 0:>8.1f}")  # fmt: skip
    print(f"wrote {args.out}; total {report['total_seconds']} s")


if __name__ == "__main__":
    main()
