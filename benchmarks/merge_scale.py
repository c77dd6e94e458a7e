"""Benchmark: DNI merge of three ~2 GB Llama-shaped checkpoints — throughput and peak memory.

Writes three random bf16 checkpoints (hidden 2048, intermediate 5632, vocab 32000, as many layers
as fit the size; 500 MB input shards), then merges them with weights 0.5/0.3/0.2, each run in a
fresh child process that reports its own peak RSS (VmHWM) and the merge call's seconds
(imports excluded; `process_seconds` includes them). Every tool runs "cold" (the
inputs dropped from the page cache with posix_fadvise, our files only) and "warm", the tools
taking turns, `--repeat` rounds (medians reported: the machine is shared). If a Python
with mergekit is given, mergekit's linear method runs on the same inputs and its output is
compared with ours tensor by tensor. Beside them, in the same turns, the disk's floor: a child that
reads every input byte and writes one checkpoint's worth, fsynced, with no arithmetic (`floor`).
Acceptance: our peak RSS < 1.5 GB.

    .venv/bin/python benchmarks/merge_scale.py [--size-gb 2] [--mergekit-python /tmp/mkvenv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = (0.5, 0.3, 0.2)
HIDDEN, INTERMEDIATE, VOCAB = 2048, 5632, 32000
LAYER_PARTS = {"input_layernorm": (HIDDEN,), "post_attention_layernorm": (HIDDEN,),
               **{f"self_attn.{p}_proj": (HIDDEN, HIDDEN) for p in "qkvo"},
               "mlp.gate_proj": (INTERMEDIATE, HIDDEN), "mlp.up_proj": (INTERMEDIATE, HIDDEN), "mlp.down_proj": (HIDDEN, INTERMEDIATE)}


def llama_shapes(size_bytes: int) -> dict[str, tuple[int, ...]]:
    per_layer = sum(_numel(s) for s in LAYER_PARTS.values()) * 2
    layers = max(1, round((size_bytes - 2 * VOCAB * HIDDEN * 2) / per_layer))
    shapes = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN)}
    for i in range(layers):
        shapes.update({f"model.layers.{i}.{part}.weight": shape for part, shape in LAYER_PARTS.items()})
    return shapes


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def make_checkpoint(folder: Path, shapes: dict, seed: int, shard_bytes: int = 500_000_000) -> None:
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True)
    groups, size = [[]], 0
    for key in shapes:  # layer order, as transformers writes shards
        nbytes = _numel(shapes[key]) * 2
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += nbytes
    weight_map = {}
    for i, keys in enumerate(groups, start=1):
        name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        tensors = {k: (torch.randn(shapes[k], generator=gen) * 0.02).to(torch.bfloat16) for k in keys}
        save_file(tensors, folder / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in keys})
        del tensors
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    layers = sum(1 for k in shapes if k.endswith("mlp.up_proj.weight"))
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": layers, "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": VOCAB,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}))


def evict(folder: Path) -> None:
    """Drop these files (only these) from the page cache, so the next read comes from disk."""
    for file in folder.rglob("*"):
        if file.is_file():
            fd = os.open(file, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(tool: str, inputs: list[str], out: str) -> None:
    """Runs in a fresh process: one merge, then a JSON line with seconds and this process's peak RSS."""
    process_started = time.perf_counter()
    if tool == "songpref":
        sys.path.insert(0, str(ROOT))
        from alignment.merge.dni import merge
        from alignment.merge.config import MergeOptions

        started = time.perf_counter()
        merge(inputs, WEIGHTS, out, options=MergeOptions(max_shard_size="2GB", digest_inputs=False))
    elif tool == "floor":
        started = time.perf_counter()
        disk_floor(inputs, Path(out))
    else:
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions

        started = time.perf_counter()
        config = MergeConfiguration.model_validate({"merge_method": "linear", "dtype": "bfloat16",
                                                    "models": [{"model": p, "parameters": {"weight": w}} for p, w in zip(inputs, WEIGHTS)]})
        run_merge(config, out, options=MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True,
                                                    out_shard_size=2_000_000_000))
    done = time.perf_counter()
    print(json.dumps({"seconds": done - started, "process_seconds": done - process_started, "peak_rss_bytes": peak_rss_bytes()}))


def disk_floor(inputs: list[str], out: Path, chunk: int = 64 << 20) -> None:
    """What any merge must do at least, with no arithmetic: read every input byte once and write one
    input's worth of bytes (the merged checkpoint's size), fsynced, in 64 MB chunks."""
    out.mkdir(parents=True)
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    with open(out / "floor.bin", "wb", buffering=0) as sink:
        for index, folder in enumerate(inputs):
            for file in sorted(Path(folder).glob("*.safetensors")):
                with open(file, "rb", buffering=0) as source:
                    while n := source.readinto(buffer):
                        if index == 0:  # the output is as large as one input
                            sink.write(view[:n])
        os.fsync(sink.fileno())


def run_child(python: str, tool: str, inputs: list[Path], out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [python, str(Path(__file__).resolve()), "--child", tool, "--out", str(out), *map(str, inputs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"{tool} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(ours: Path, theirs: Path) -> dict:
    """Tensor-by-tensor equality of two merged checkpoints (streamed, one tensor at a time)."""
    import torch
    from safetensors import safe_open

    def files(folder):
        return {k: f for f in sorted(folder.glob("*.safetensors")) for k in safe_open(f, "pt").keys()}

    mine, other = files(ours), files(theirs)
    identical, max_diff = 0, 0.0
    for key in sorted(mine):
        with safe_open(mine[key], "pt") as a, safe_open(other[key], "pt") as b:
            x, y = a.get_tensor(key), b.get_tensor(key)
        identical += torch.equal(x, y)
        max_diff = max(max_diff, (x.float() - y.float()).abs().max().item())
    return {"tensors": len(mine), "keys_equal": mine.keys() == other.keys(), "bit_identical_tensors": identical, "max_abs_diff": max_diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=2.0, help="size of each input checkpoint")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/merge_scale"))
    parser.add_argument("--mergekit-python", default=None, help="a Python with mergekit installed, for the side-by-side run")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "merge_cpu.json")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every tool and cache state; the table shows medians")
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoints and outputs")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("inputs", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.inputs, args.out)

    shapes = llama_shapes(int(args.size_gb * 1e9))
    inputs = [args.workdir / f"model_{i}" for i in range(3)]
    started = time.perf_counter()
    for i, folder in enumerate(inputs):
        if not (folder / "config.json").exists():
            shutil.rmtree(folder, ignore_errors=True)
            make_checkpoint(folder, shapes, seed=i)
    input_bytes = sum(f.stat().st_size for f in inputs[0].glob("*.safetensors"))
    print(f"inputs: 3 x {input_bytes / 1e9:.2f} GB, {len(shapes)} tensors, "
          f"{len(list(inputs[0].glob('*.safetensors')))} shards each (made in {time.perf_counter() - started:.0f} s)")
    tools = [("songpref", sys.executable)] + ([("mergekit", args.mergekit_python)] if args.mergekit_python else [])
    tools.append(("floor", sys.executable))  # read + write + fsync, no arithmetic: how close to the disk a merge runs
    runs = []
    load_before = os.getloadavg()
    # tools take turns, so that a burst of load on a shared machine does not land on one tool only
    for repeat in range(args.repeat):
        for cache in ("cold", "warm"):
            for tool, python in tools:
                if cache == "cold":
                    for folder in inputs:
                        evict(folder)
                result = run_child(python, tool, inputs, args.workdir / f"out_{tool}")
                result.update(tool=tool, cache=cache, repeat=repeat, load_average=os.getloadavg()[0],
                              read_gb_s=3 * input_bytes / 1e9 / result["seconds"])
                runs.append(result)
                print(f"{tool:<9} {cache:<5} {result['seconds']:7.1f} s  {result['read_gb_s']:5.2f} GB/s read  "
                      f"peak RSS {result['peak_rss_bytes'] / 1e9:5.2f} GB  (load {result['load_average']:.1f})", flush=True)
    summary = {}
    for tool, _ in tools:
        for cache in ("cold", "warm"):
            mine = [r for r in runs if r["tool"] == tool and r["cache"] == cache]
            seconds = statistics.median(r["seconds"] for r in mine)
            summary[f"{tool}/{cache}"] = {"median_seconds": seconds, "median_read_gb_s": 3 * input_bytes / 1e9 / seconds,
                                          "max_peak_rss_bytes": max(r["peak_rss_bytes"] for r in mine)}
    record = {
        "inputs": {"count": 3, "bytes_each": input_bytes, "tensors": len(shapes), "dtype": "bfloat16", "weights": list(WEIGHTS)},
        "machine": {"cpus": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "summary": summary,
        "runs": runs,
        "acceptance": {"peak_rss_limit_bytes": 1_500_000_000,
                       "passed": all(r["peak_rss_bytes"] < 1.5e9 for r in runs if r["tool"] == "songpref")},
    }
    if args.mergekit_python:
        record["songpref_vs_mergekit"] = compare(args.workdir / "out_songpref", args.workdir / "out_mergekit")
        print(f"songpref vs mergekit: {record['songpref_vs_mergekit']}")
    print(f"{'tool/cache':<15} {'median s':>9} {'GB/s':>6} {'peak RSS GB':>12}")
    for name, row in summary.items():
        print(f"{name:<15} {row['median_seconds']:>9.1f} {row['median_read_gb_s']:>6.2f} {row['max_peak_rss_bytes'] / 1e9:>12.2f}")
    print(f"load average before {load_before}, after {os.getloadavg()} ({os.cpu_count()} cpus)")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(record, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(args.workdir)


if __name__ == "__main__":
    main()
