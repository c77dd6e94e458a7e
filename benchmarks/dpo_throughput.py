"""Benchmark: DPO training throughput (steps/s, pairs/s, tokens/s) with TRL, on CPU (or a GPU).

Configurations, all on one preference set built once from 16 songs sampled by the tiny policy
(4 conditions x 4 fixed seeds, max_frames 300; song i of a condition is paired with song i+1):

  tiny/full/precompute    TinyPolicy through MultiStreamDPOTrainer, the project's settings
                          (full fine-tuning, reference log-probs precomputed once);
  tiny/full/ref-forward   the same with precompute_ref_log_probs=False: a reference forward every
                          step (the reference is a second TinyPolicy loaded from the checkpoint);
  tiny/lora/precompute    the same policy with DpoOptions(lora=LoraOptions()) (the reference is
                          the base with the adapter disabled);
  llama/full/ref-forward  a LlamaForCausalLM sized like the tiny policy's LM part (tied
  llama/full/precompute   embeddings, vocabulary = the tiny tokenizer's, the same token ids and
                          so the same sequence lengths) through TRL's stock DPOTrainer and its
                          fused LM head, precompute off and on (off: the reference is a copy of
                          the initial model, as TRL cannot reload a model built in memory).

Each configuration runs `--warmup` steps, then up to `--steps` timed steps with batch `--batch`
(pairs per step), stopping early once `--budget-s` seconds of timed steps have run (at least
two are always timed). A TrainerCallback records step-begin and step-end times around
trainer.train(); the reported rate is over step-end to step-end intervals after the warm-up
(data loading, collation and per-step logging included), `busy_seconds` only the begin-to-end
parts. Trainer construction (tokenization, model hashing, precompute) is excluded and reported
as `setup_seconds`, with the precompute's share as `precompute_seconds`. Tokens are TRL's
`num_tokens`: the attention-mask sum of the chosen+rejected rows, prompts included, padding not.

The load average before and after goes into the JSON, as other jobs share the CPU. Songs are
sampled with one torch thread (setup only); training uses `--threads` (default 2).

    .venv/bin/python benchmarks/dpo_throughput.py [--steps 10] [--budget-s 30] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback
from trl import DPOTrainer

from alignment.dpo.options import DpoOptions, LoraOptions
from alignment.dpo.trainer import MultiStreamDPOTrainer
from alignment.tiny_policy import TinyPolicy
from pipeline.models.tiny.preference_text import TinySongTokenizer, TokenLayout, completion_text, prompt_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "dpo_cpu.json"
SEEDS = [11, 12, 13, 14]

_VERSE = "the light is low and we walk the long road home tonight. the river runs beside us and the city sleeps. "
_CHORUS = "sing it out loud. hold on hold on. we are the fire in the rain. "
CONDITIONS = [
    {"lyric": f"[verse] {_VERSE} [chorus] {_CHORUS} [verse] {_VERSE}", "genre": "pop", "gender": "female",
     "emotion": "happy", "instruments": ["piano"], "bpm": 100, "auto_prompt_audio_type": "Pop"},
    {"lyric": f"[verse] {_VERSE} [chorus] {_CHORUS} [bridge] {_CHORUS}", "genre": "rock", "gender": "male",
     "emotion": "sad", "instruments": ["guitar"], "bpm": 80, "auto_prompt_audio_type": "Rock"},
    {"lyric": f"[verse] {_VERSE} {_VERSE} [chorus] {_CHORUS}", "genre": "folk", "gender": "female",
     "emotion": "calm", "instruments": ["guitar", "violin"], "bpm": 90, "auto_prompt_audio_type": "Folk"},
    {"lyric": f"[verse] {_VERSE} [chorus] {_CHORUS} [outro] {_CHORUS}", "genre": "electronic", "gender": "male",
     "emotion": "energetic", "instruments": ["synthesizer"], "bpm": 128, "auto_prompt_audio_type": "Electronic"},
]  # fmt: skip


class StepClock(TrainerCallback):
    """Step-begin / step-end perf_counter times and TRL's running token count at each step end;
    stops training once `budget_s` of timed steps (after `warmup`) have run."""

    def __init__(self, warmup: int, budget_s: float, min_timed: int = 2, sync=None):
        self.warmup, self.budget_s, self.min_timed, self.sync = warmup, budget_s, min_timed, sync
        self.begins, self.ends, self.tokens = [], [], []
        self.trainer = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.sync:
            self.sync()
        self.begins.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        if self.sync:
            self.sync()
        self.ends.append(time.perf_counter())
        self.tokens.append(int(self.trainer._total_train_tokens))
        timed = len(self.ends) - self.warmup
        if timed >= self.min_timed and self.ends[-1] - self.ends[self.warmup - 1] >= self.budget_s:
            control.should_training_stop = True


class _TimedPrecompute:
    """Records the seconds DPOTrainer spends precomputing reference log-probs."""

    def _precompute_ref_logps(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return super()._precompute_ref_logps(*args, **kwargs)
        finally:
            self.precompute_seconds = getattr(self, "precompute_seconds", 0.0) + time.perf_counter() - start


class TimedMultiStreamDPOTrainer(_TimedPrecompute, MultiStreamDPOTrainer):
    pass


class TimedDPOTrainer(_TimedPrecompute, DPOTrainer):
    pass


def build_dataset(policy: TinyPolicy, tokenizer, max_frames: int) -> tuple[Dataset, dict]:
    layout = TokenLayout.from_config(policy.config)
    rows, frames, start = [], [], time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # sampling is many tiny ops: one thread is far faster on a shared CPU
    try:
        for condition in CONDITIONS:
            songs = policy.sample_batch(condition, SEEDS, max_frames=max_frames)
            frames += [len(s["mixed"]) for s in songs]
            prompt = prompt_text(condition, layout, policy.config.max_prefix)
            rows += [{"prompt": prompt, "chosen": completion_text(songs[i]), "rejected": completion_text(songs[i + 1])}
                     for i in range(0, len(songs), 2)]  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    sampling_seconds = time.perf_counter() - start
    prompt_lens = [len(tokenizer(r["prompt"])["input_ids"]) for r in rows]
    seq_lens = [p + len(tokenizer(r[k])["input_ids"]) for p, r in zip(prompt_lens, rows) for k in ("chosen", "rejected")]
    stats = {"songs": len(frames), "pairs": len(rows), "max_frames": max_frames, "seeds": SEEDS,
             "conditions": len(CONDITIONS), "sampling_seconds": round(sampling_seconds, 2),
             "frames_mean": statistics.mean(frames), "frames_min": min(frames), "frames_max": max(frames),
             "prompt_tokens_mean": statistics.mean(prompt_lens),
             "sequence_tokens_mean": statistics.mean(seq_lens), "sequence_tokens_min": min(seq_lens),
             "sequence_tokens_max": max(seq_lens)}  # fmt: skip
    return Dataset.from_list(rows), stats


def lm_part_parameters(policy: TinyPolicy) -> int:
    return sum(p.numel() for n, p in policy.named_parameters() if policy.is_lm_param(n))


def llama_like(target_params: int, vocab_size: int, layers: int, heads: int = 4) -> LlamaForCausalLM:
    """A causal LM with `layers` Llama blocks, tied embeddings and the width (a multiple of
    4 * heads, intermediate 2x) whose parameter count comes closest to `target_params`."""

    def count(h: int) -> int:
        return vocab_size * h + layers * (4 * h * h + 3 * h * 2 * h + 2 * h) + h

    step = 4 * heads
    hidden = min(range(step, 1025, step), key=lambda h: abs(count(h) - target_params))
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=4096, tie_word_embeddings=True, pad_token_id=0, eos_token_id=1,
                         bos_token_id=None)  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def run_one(name: str, trainer_class, model, tokenizer, dataset, options: DpoOptions, args, ref_model=None) -> dict:
    sync = torch.cuda.synchronize if args.device == "cuda" else None
    clock = StepClock(args.warmup, args.budget_s, sync=sync)
    with tempfile.TemporaryDirectory(prefix="dpo_bench_") as out:
        start = time.perf_counter()
        trainer = trainer_class(model=model, ref_model=ref_model, args=options.dpo_config(Path(out), seed=0),
                                train_dataset=dataset, processing_class=tokenizer, peft_config=options.peft_config(),
                                callbacks=[clock])  # fmt: skip
        setup = time.perf_counter() - start
        clock.trainer = trainer
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in trainer.model.parameters())
        losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    w = args.warmup
    timed = len(clock.ends) - w
    wall = clock.ends[-1] - clock.ends[w - 1]
    busy = sum(e - b for b, e in zip(clock.begins[w:], clock.ends[w:]))
    tokens = clock.tokens[-1] - clock.tokens[w - 1]
    steps_per_s = timed / wall
    result = {
        "name": name, "trainer": trainer_class.__mro__[2].__name__, "lora": options.lora is not None,
        "precompute_ref_log_probs": options.precompute_ref_log_probs,
        "parameters": total, "trainable_parameters": trainable,
        "warmup_steps": w, "timed_steps": timed, "timed_seconds": wall, "busy_seconds": busy,
        "steps_per_s": steps_per_s, "seconds_per_step": wall / timed, "pairs_per_s": steps_per_s * options.batch_size,
        "tokens": tokens, "tokens_per_s": tokens / wall,
        "warmup_step_seconds": [e - b for b, e in zip(clock.begins[:w], clock.ends[:w])],
        "step_seconds": [b - a for a, b in zip(clock.ends[w - 1 : -1], clock.ends[w:])],
        "setup_seconds": setup, "precompute_seconds": getattr(trainer, "precompute_seconds", 0.0),
        "train_call_seconds": train_seconds, "losses": losses,
    }  # fmt: skip
    print(f"  {name}: {timed} steps in {wall:.1f}s -> {steps_per_s:.3f} steps/s, {result['tokens_per_s']:.0f} tokens/s "
          f"(setup {setup:.1f}s, precompute {result['precompute_seconds']:.1f}s)", flush=True)  # fmt: skip
    del trainer
    return result


def print_table(results: list[dict], title: str) -> None:
    headers = ["configuration", "steps", "s/step", "steps/s", "pairs/s", "tokens/s", "precompute s", "setup s", "trainable"]
    rows = [[r["name"], str(r["timed_steps"]), f"{r['seconds_per_step']:.2f}", f"{r['steps_per_s']:.3f}",
             f"{r['pairs_per_s']:.2f}", f"{r['tokens_per_s']:.0f}", f"{r['precompute_seconds']:.1f}",
             f"{r['setup_seconds']:.1f}", f"{r['trainable_parameters']:,}"] for r in results]  # fmt: skip
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
        print(title)
        for row in [headers, *rows]:
            print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))))
        return
    table = Table(title=title)
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=140).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads while training")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration (at most)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (1 or more)")
    parser.add_argument("--batch", type=int, default=4, help="pairs per step")
    parser.add_argument("--budget-s", type=float, default=30.0, help="stop a configuration's timed steps after this")
    parser.add_argument("--max-frames", type=int, default=300)
    parser.add_argument("--only", nargs="*", help="run only these configuration names")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON path (default {RESULTS.relative_to(ROOT)}, "
                        "or dpo_cuda.json with --device cuda)")  # fmt: skip
    args = parser.parse_args()
    if args.warmup < 1:
        parser.error("--warmup must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    out_path = args.out or (RESULTS if args.device == "cpu" else RESULTS.with_name("dpo_cuda.json"))
    os.environ.setdefault("TQDM_DISABLE", "1")
    from pipeline.models.tiny.song_model import CHECKPOINT_DIR  # here: dpo_gpu.py imports this module without the renderer

    load_before = os.getloadavg()
    started = time.perf_counter()
    torch.set_num_threads(args.threads)

    policy = TinyPolicy.from_pretrained(CHECKPOINT_DIR, torch_dtype=torch.float32).eval()
    tokenizer = TinySongTokenizer.for_model(policy)
    dataset, data = build_dataset(policy, tokenizer, args.max_frames)
    print(f"data: {data['pairs']} pairs from {data['songs']} songs, mean sequence {data['sequence_tokens_mean']:.0f} "
          f"tokens (prompt {data['prompt_tokens_mean']:.0f}), sampled in {data['sampling_seconds']:.1f}s", flush=True)  # fmt: skip
    lm_params = lm_part_parameters(policy)
    del policy

    options = DpoOptions(max_steps=args.warmup + args.steps, batch_size=args.batch, save_steps=10**9,
                         threads=args.threads, device="cpu" if args.device == "cpu" else "auto")  # fmt: skip
    no_ref = options.model_copy(update={"precompute_ref_log_probs": False})

    def tiny():
        torch.manual_seed(0)
        return TinyPolicy.from_pretrained(CHECKPOINT_DIR, torch_dtype=torch.float32)

    def llama():
        return llama_like(lm_params, tokenizer.vocab_size, layers=3)

    def llama_with_ref():
        model = llama()
        return model, copy.deepcopy(model).eval()

    plans = [
        ("tiny/full/precompute", TimedMultiStreamDPOTrainer, lambda: (tiny(), None), options),
        ("tiny/full/ref-forward", TimedMultiStreamDPOTrainer, lambda: (tiny(), tiny().eval()), no_ref),
        ("tiny/lora/precompute", TimedMultiStreamDPOTrainer, lambda: (tiny(), None),
         options.model_copy(update={"lora": LoraOptions()})),
        ("llama/full/ref-forward", TimedDPOTrainer, llama_with_ref, no_ref),
        ("llama/full/precompute", TimedDPOTrainer, lambda: (llama(), None), options),
    ]  # fmt: skip
    results = []
    for name, trainer_class, make, opts in plans:
        if args.only and name not in args.only:
            continue
        model, ref = make()
        results.append(run_one(name, trainer_class, model, tokenizer, dataset, opts, args, ref_model=ref))
        del model, ref

    tiny_params = sum(p.numel() for p in tiny().parameters())
    llama_model = llama()
    report = {
        "benchmark": "dpo_throughput",
        "machine": {"device": args.device, "cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "cuda_device": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
                    "load_average_start": [round(x, 2) for x in load_before],
                    "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "versions": {k: __import__(k).__version__ for k in ("trl", "transformers", "peft", "datasets")},
        "settings": {"batch_pairs": args.batch, "warmup_steps": args.warmup, "max_timed_steps": args.steps,
                     "budget_seconds_per_config": args.budget_s, "dpo_options": options.model_dump(mode="json"),
                     "lora": LoraOptions().model_dump(mode="json"),
                     "timing": "step-end to step-end after the warm-up (data loading and per-step logging included)",
                     "tokens": "TRL num_tokens: attention-mask sum over chosen+rejected rows, prompt included"},
        "data": data,
        "models": {"tiny_policy_parameters": tiny_params, "tiny_lm_part_parameters": lm_params,
                   "llama_parameters": sum(p.numel() for p in llama_model.parameters()),
                   "llama_config": {k: getattr(llama_model.config, k) for k in
                                    ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                     "num_attention_heads", "tie_word_embeddings")}},
        "results": results,
        "total_seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    print_table(results, f"DPO throughput, {args.device}, {torch.get_num_threads()} threads, batch {args.batch} pairs, "
                f"mean sequence {data['sequence_tokens_mean']:.0f} tokens")  # fmt: skip
    print(f"load average start {report['machine']['load_average_start']}, end {report['machine']['load_average_end']} "
          f"({os.cpu_count()} cpus); total {report['total_seconds']}s; wrote {out_path}")  # fmt: skip


if __name__ == "__main__":
    main()
