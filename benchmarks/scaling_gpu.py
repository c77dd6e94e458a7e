"""Benchmark: the scaling curve over GPUs (1, 2, 4, 8: those present) of DPO, PER scoring and sampling.

For each process count N the script launches `torch.distributed.run --standalone
--nproc_per_node N` (benchmarks/scaling_parts.py: one process per GPU, each on its own shard;
the parts run one after another in that launch) and records:
  dpo         tokens/s of DPO on the LeVo-shaped policy (`--size levo`: about 2 B parameters, as
              benchmarks/dpo_gpu.py; `small` or `test` for speed), DDP or FSDP (`--sharding`),
              `--batch` pairs per GPU and micro-batch (weak scaling: the pairs per step grow with N);
  per         audio seconds transcribed per second by the whisper transcriber (large-v3 shape,
              random weights, benchmarks/whisper_gpu.py), `--songs-per-gpu` songs per GPU;
  candidates  songs sampled per second by the policy (tokens only), `--batches-per-gpu` batches of
              `--candidate-batch` candidates per GPU.
Scaling efficiency = rate on N GPUs / (N x rate on 1 GPU). Each item (song, candidate) is fixed
by its global index, and the JSON says whether every N gave the one-GPU run's outputs (digests).
Needs torch and the project's pure-Python dependencies only (no Debian packages).

    python benchmarks/scaling_gpu.py [--size levo|small|test] [--processes 1,2,4,8] [--parts dpo,per,candidates]
    python benchmarks/scaling_gpu.py --tiny --processes 1,2   # CPU, gloo: a check of the whole script
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results" / "scaling_gpu.json"
TINY_RESULTS = ROOT / "benchmarks" / "results" / "scaling_cpu_tiny.json"  # --tiny's check
RATES = {"dpo": "tokens_per_s", "per": "audio_seconds_per_second", "candidates": "candidates_per_second"}
SMALL = dict(hidden_size=768, lm_layers=12, decoder_layers=6, num_heads=12, intermediate_size=3072,
             mixed_vocab=16384, vocals_vocab=16384, accompaniment_vocab=16384)  # fmt: skip  # about 0.2 B


def policy_config(size: str, seconds: float) -> dict:
    from benchmarks.dpo_gpu import FRAME_RATE, PRESETS
    from pipeline.models.tiny.codec import HEADER_SIZE

    preset = SMALL if size == "small" else PRESETS[size]
    return {**preset, "header_vocab": HEADER_SIZE, "delay": 2, "max_frames": round(seconds * FRAME_RATE) + 1}


def write_pairs(folder: Path, config: dict, pairs: int, seconds: float, seed: int) -> tuple[str, dict]:
    """The DPO pairs as Parquet: every process reads the same file (and TRL shares its reference cache)."""
    from benchmarks.dpo_gpu import random_dataset
    from pipeline.models.tiny.model import TinyLeLMConfig

    dataset, data = random_dataset(TinyLeLMConfig(**config), pairs, seconds, seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pairs.parquet"
    dataset.to_parquet(str(path))
    return str(path), data


def launch(parts: list[str], processes: int, job: dict, folder: Path, record) -> None:
    """Every part on `processes` processes in one launch (each launch imports torch, TRL and
    transformers anew); `record(part, row)` hears each part as it ends. A failed part ends its
    launch, and the parts after it get a new one."""
    remaining, attempt = list(parts), 0
    while remaining:
        attempt += 1
        here = folder / f"launch-{attempt}"
        here.mkdir(parents=True, exist_ok=True)
        (here / "job.json").write_text(json.dumps({**job, "folder": str(here)}))
        script = here / "run_parts.py"
        script.write_text("import sys; sys.path.insert(0, %r); from benchmarks.scaling_parts import main; main(%r, %r)\n"
                          % (str(ROOT), ",".join(remaining), str(here / "job.json")))  # fmt: skip
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", str(script)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
               "TQDM_DISABLE": "1"}  # fmt: skip
        started = time.perf_counter()
        with open(here / "log.txt", "wb") as log:
            running = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            while True:  # record each part as its file appears: a run cut short keeps the parts so far
                returncode = running.poll()
                while remaining and (here / f"{remaining[0]}.json").exists():
                    row = json.loads((here / f"{remaining[0]}.json").read_text())
                    record(remaining.pop(0), row | {"seconds_from_launch": round(time.perf_counter() - started, 1)})
                if returncode is not None:
                    break
                time.sleep(1.0)
        if returncode != 0 and remaining:
            errors = sorted(here.glob(f"{remaining[0]}-rank*.error"))  # a process's traceback, else the launcher's log
            tail = (errors[0] if errors else here / "log.txt").read_text(errors="replace").splitlines()[-25:]
            record(remaining.pop(0), {"error": f"exit {returncode}: {tail[-1] if tail else ''}", "log_tail": tail})
        elif remaining:  # ended well without every file: say so rather than loop
            record(remaining.pop(0), {"error": "the launch ended without this part's result"})


def summarize(report: dict) -> None:
    """Efficiency against one process, and whether the outputs match the one-process run's."""
    for part, rate in RATES.items():
        rows = report["parts"].get(part, {})
        one = rows.get("1", {})
        for n, row in rows.items():
            if rate in row and rate in one:
                row["scaling_efficiency"] = row[rate] / (int(n) * one[rate])
            if "digests" in row and "digests" in one:
                shared = set(row["digests"]) & set(one["digests"])
                row["same_outputs_as_one_process"] = bool(shared) and all(row["digests"][k] == one["digests"][k] for k in shared)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU, gloo, tiny shapes: a check of the script")
    parser.add_argument("--processes", default=None, help="comma-separated counts (default: 1, 2, 4, 8 up to the GPUs present)")
    parser.add_argument("--parts", default="dpo,per,candidates")
    parser.add_argument("--size", choices=["levo", "small", "test"], default="levo")
    parser.add_argument("--sharding", choices=["ddp", "fsdp"], default="ddp")
    parser.add_argument("--seconds", type=float, default=150.0, help="longest DPO song (LeVo base: 2 min 30 s)")
    parser.add_argument("--batch", type=int, default=1, help="DPO pairs per GPU and micro-batch")
    parser.add_argument("--accumulate", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--songs-per-gpu", type=int, default=16)
    parser.add_argument("--song-seconds", type=float, default=150.0)
    parser.add_argument("--tokens", type=int, default=100, help="tokens decoded per 30 s window")
    parser.add_argument("--candidate-batch", type=int, default=8)
    parser.add_argument("--batches-per-gpu", type=int, default=1)
    parser.add_argument("--sample-frames", type=int, default=250, help="frames per sampled song (25 per second)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help=f"default {RESULTS.name} ({TINY_RESULTS.name} with --tiny)")
    args = parser.parse_args()
    import torch

    from benchmarks.whisper_gpu import LARGE_V3, TINY

    cuda = torch.cuda.is_available() and not args.tiny
    args.out = args.out or (TINY_RESULTS if args.tiny else RESULTS)
    if args.tiny:
        args.size, args.seconds, args.song_seconds, args.tokens = "test", 4.0, 6.0, 4
        args.songs_per_gpu, args.candidate_batch, args.batches_per_gpu, args.sample_frames = 2, 2, 1, 16
        args.warmup, args.steps = 2, 2
    gpus = torch.cuda.device_count() if cuda else 0
    counts = [int(n) for n in args.processes.split(",")] if args.processes else [n for n in (1, 2, 4, 8) if n <= max(gpus, 1)]
    if args.sharding == "fsdp" and not cuda:
        parser.error("--sharding fsdp: accelerate shards over GPUs only (on CPU it would run DDP)")
    if cuda and max(counts) > gpus:
        parser.error(f"--processes {args.processes}: only {gpus} GPU(s) present")
    parts = args.parts.split(",")
    unknown = sorted(set(parts) - set(RATES))
    if unknown:
        parser.error(f"--parts: unknown part {unknown[0]!r}; parts are: {', '.join(RATES)}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    config = policy_config(args.size, args.seconds)
    load_before = os.getloadavg()
    report = {"benchmark": "scaling_gpu", "settings": vars(args) | {"out": str(args.out)}, "policy_config": config,
              "machine": {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "gpus_present": gpus,
                          "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                          "load_average_start": [round(x, 2) for x in load_before]},
              "process_counts": counts, "parts": {}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="scaling_gpu_") as scratch:
        for n in counts:
            pairs = (args.warmup + args.steps) * args.batch * args.accumulate * n  # every step a full one
            pairs_file, data = (write_pairs(Path(scratch) / f"pairs-{n}", config, pairs, args.seconds, args.seed)
                                if "dpo" in parts else (None, None))  # fmt: skip
            job = {"cuda": cuda, "size": args.size, "policy_config": config, "pairs_file": pairs_file, "sharding": args.sharding,
                   "cache_dir": str(Path(scratch) / f"cache-{n}"), "warmup": args.warmup, "steps": args.steps,
                   "batch": args.batch, "accumulate": args.accumulate, "seed": args.seed,
                   "whisper_dims": TINY if args.tiny else LARGE_V3, "tokens": args.tokens, "songs_per_gpu": args.songs_per_gpu,
                   "song_seconds": args.song_seconds, "candidate_batch": args.candidate_batch,
                   "batches_per_gpu": args.batches_per_gpu, "sample_frames": args.sample_frames}  # fmt: skip

            def record(part: str, row: dict, n: int = n, data: dict | None = data) -> None:
                if part == "dpo" and data:
                    row["data"] = data
                report["parts"].setdefault(part, {})[str(n)] = row
                rate = row.get(RATES[part])
                print(f"{part} on {n} process(es): " + (f"{rate:,.1f} {RATES[part]}" if rate else f"failed: {row['error']}"), flush=True)
                summarize(report)
                report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.with_suffix(".tmp").write_text(json.dumps(report, indent=1) + "\n")
                args.out.with_suffix(".tmp").replace(args.out)  # after every part: a run cut short keeps the rows so far

            launch(parts, n, job, Path(scratch) / f"run-{n}", record)
    print(f"{'part':<11} {'N':>2} {'rate':>14} {'efficiency':>10} {'same outputs':>12}")
    for part, rows in report["parts"].items():
        for n, row in rows.items():
            rate = row.get(RATES[part])
            print(f"{part:<11} {n:>2} {rate if rate is not None else float('nan'):>14,.1f} "
                  f"{row.get('scaling_efficiency', float('nan')):>10.1%} {str(row.get('same_outputs_as_one_process', '-')):>12}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
