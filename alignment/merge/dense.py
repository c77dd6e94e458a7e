"""Dense checkpoints merged tensor by tensor: θ = Σ αᵢθᵢ, or θ₀ + Σ αᵢ(θᵢ − θ₀) given a base.

Memory stays at about one chunk per input whatever the model size: each tensor is read in
`chunk_elements` slices from every input (explicit file offsets, no memory map), combined in
float32 (or float64) and cast back, and appended to a pre-planned output shard. The output
directory appears only when complete (temp sibling + fsync + rename), with a `merge_manifest.json`
recording inputs and outputs by sha256. `alignment.merge.dni.merge` is the entry point.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from alignment.merge.config import MergeOptions
from alignment.merge.io import DTYPE_CODES, DTYPES, FLOAT_CODES, INDEX_NAME, CheckpointReader, file_sha256
from alignment.merge.writer import OutputTensor, ShardWriter, atomic_output_dir, plan_shards

MANIFEST_NAME = "merge_manifest.json"
_SKIP_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")
Progress = Callable[[int, int, str], None]
"""progress(bytes_written_so_far, total_bytes, tensor_key), called after each tensor."""
# Where an extra float delta is added to a tensor (LoRA into a dense base): key -> flat tensor or None.
DeltaFn = Callable[[str], Optional[torch.Tensor]]


class MergeMismatchError(ValueError):
    """Inputs that do not share one architecture; the message lists every mismatch found."""


@dataclass
class MergeResult:
    out: Path
    tensors: int
    bytes_read: int
    bytes_written: int
    seconds: float
    manifest: dict = field(repr=False)


def check_same_tensors(readers: list[CheckpointReader]) -> None:
    """Compare every input against the first: keys, shapes, dtypes. Raise once with all mismatches."""
    reference = readers[0]
    problems = []
    for reader in readers[1:]:
        for key in sorted(reference.entries.keys() - reader.entries.keys()):
            problems.append(f"{reader.path}: missing tensor {key!r} (present in {reference.path})")
        for key in sorted(reader.entries.keys() - reference.entries.keys()):
            problems.append(f"{reader.path}: extra tensor {key!r} (absent from {reference.path})")
        for key in sorted(reference.entries.keys() & reader.entries.keys()):
            mine, theirs = reader.entries[key], reference.entries[key]
            if mine.shape != theirs.shape:
                problems.append(f"{reader.path}: tensor {key!r} has shape {list(mine.shape)}, {reference.path} has {list(theirs.shape)}")
            if mine.dtype != theirs.dtype:
                problems.append(f"{reader.path}: tensor {key!r} has dtype {mine.dtype}, {reference.path} has {theirs.dtype}")
    if problems:
        raise MergeMismatchError(f"{len(problems)} mismatches between the inputs; nothing was written:\n  " + "\n  ".join(problems))


def stream_merge(readers: list[CheckpointReader], weights: Sequence[float], out: str | Path, *,
                 base: CheckpointReader | None, options: MergeOptions, method: str, started: float,
                 progress: Progress | None = None, delta: DeltaFn | None = None,
                 manifest_extra: dict | None = None) -> MergeResult:
    """Write the weighted combination of same-shaped inputs to `out` (the inputs are already checked)."""
    reference = base or readers[0]
    out_code = DTYPE_CODES[options.dtype] if options.dtype else None
    plan = [OutputTensor(key, out_code if out_code and e.dtype in FLOAT_CODES else e.dtype, e.shape)
            for key, e in sorted(reference.entries.items())]
    shards = plan_shards(plan, options.max_shard_bytes)
    total = sum(t.nbytes for t in plan)
    inputs = readers + ([base] if base else [])
    combiner = _Combiner(inputs, weights, base, options, delta)
    outputs: dict[str, str] = {}
    written = 0
    upcoming = iter([t.key for _, tensors in shards for t in tensors][1:] + [None])
    with atomic_output_dir(Path(out), overwrite=options.overwrite) as tmp, ThreadPoolExecutor(1) as pool:
        for name, tensors in shards:
            writer = ShardWriter(tmp / name, tensors, pool)
            try:
                for tensor in tensors:
                    combiner.prefetch(next(upcoming))
                    writer.begin(tensor.key)
                    combiner.write_tensor(tensor, writer.write)
                    written += tensor.nbytes
                    if progress:
                        progress(written, total, tensor.key)
            except BaseException:
                writer.abort()  # the temp dir is removed by atomic_output_dir
                raise
            outputs[name] = writer.close()
        if len(shards) > 1:
            index = {"metadata": {"total_size": total},
                     "weight_map": {t.key: name for name, tensors in shards for t in tensors}}
            outputs[INDEX_NAME] = write_json(tmp / INDEX_NAME, index)
        if options.copy_files:
            copy_side_files(readers[0].path, tmp)
        seconds = time.perf_counter() - started
        manifest = build_manifest(method, readers, weights, base, options, outputs, len(plan),
                                  combiner.bytes_read, written, seconds, manifest_extra)
        write_json(tmp / MANIFEST_NAME, manifest)
    return MergeResult(Path(out), len(plan), combiner.bytes_read, written, seconds, manifest)


class _Combiner:
    """Reused buffers and the per-chunk arithmetic; nothing here grows with the model."""

    def __init__(self, inputs: list[CheckpointReader], weights: Sequence[float], base: CheckpointReader | None,
                 options: MergeOptions, delta: DeltaFn | None):
        self.models = inputs[:len(weights)]
        self.weights = [float(w) for w in weights]
        self.base, self.delta = base, delta
        self.compute = torch.float64 if options.compute_dtype == "float64" else torch.float32
        entries = list(inputs[0].entries.values())
        largest = max((e.numel for e in entries), default=1)
        in_size = max((DTYPES[e.dtype][1] for e in entries), default=1)
        out_size = max(in_size, DTYPES[DTYPE_CODES[options.dtype]][1] if options.dtype else 1)
        self.chunk = max(1, min(options.chunk_elements, largest))
        self.raw = [torch.empty(self.chunk * in_size, dtype=torch.uint8) for _ in inputs]
        self.acc = torch.empty(self.chunk, dtype=self.compute)
        # scratch for widening bf16/fp16 chunks first: mixed-dtype in-place adds run ~8x slower on CPU;
        # task vectors also need θ₀ in compute precision once per chunk
        self.tmp = torch.empty(self.chunk, dtype=self.compute)
        self.base_f = torch.empty(self.chunk, dtype=self.compute) if base else None
        # two output buffers: one being written on the writer's thread while the other is filled
        self.out = [torch.empty(self.chunk * out_size, dtype=torch.uint8) for _ in range(2)]
        self._turn = 0
        self.bytes_read = 0

    def prefetch(self, key: str | None) -> None:
        if key is not None:
            for reader in self.models + ([self.base] if self.base else []):
                reader.prefetch(key)

    def _read(self, slot: int, reader: CheckpointReader, key: str, start: int, count: int) -> torch.Tensor:
        entry = reader.entries[key]
        dtype, size = DTYPES[entry.dtype]
        raw = self.raw[slot][:count * size]
        reader.read_into(key, start * size, memoryview(raw.numpy()))
        self.bytes_read += count * size
        return raw.view(dtype)

    def write_tensor(self, tensor: OutputTensor, write: Callable[[memoryview], None]) -> None:
        numel = tensor.nbytes // DTYPES[tensor.dtype][1]
        is_float = self.models[0].entries[tensor.key].dtype in FLOAT_CODES
        extra = self.delta(tensor.key) if self.delta else None
        for start in range(0, numel, self.chunk):
            count = min(self.chunk, numel - start)
            out_dtype, out_size = DTYPES[tensor.dtype]
            raw = self.out[self._turn][:count * out_size]
            self._turn ^= 1
            if is_float:
                raw.view(out_dtype).copy_(self._combine(tensor.key, start, count, extra))  # round to nearest even, like .to()
            else:
                raw.copy_(self._identical(tensor.key, start, count).view(torch.uint8))
            write(memoryview(raw.numpy()))

    def _combine(self, key: str, start: int, count: int, extra: torch.Tensor | None) -> torch.Tensor:
        acc = self.acc[:count]
        if self.base is None:
            for slot, (reader, weight) in enumerate(zip(self.models, self.weights)):
                value = self._widen(self._read(slot, reader, key, start, count), self.tmp[:count])
                if slot == 0:
                    torch.mul(value, weight, out=acc)  # = 0 + α₀θ₀, as an accumulator started at zero gives
                else:
                    acc.add_(value, alpha=weight)
        else:
            # θ₀ + Σ αᵢ(θᵢ − θ₀): the differences of nearby weights are exact, so small task vectors keep their bits.
            base_f, tmp = self.base_f[:count], self.tmp[:count]
            base_f.copy_(self._read(len(self.models), self.base, key, start, count))
            acc.copy_(base_f)
            for slot, (reader, weight) in enumerate(zip(self.models, self.weights)):
                tmp.copy_(self._read(slot, reader, key, start, count))
                tmp.sub_(base_f)
                acc.add_(tmp, alpha=weight)
        if extra is not None:
            acc.add_(extra[start:start + count])
        return acc

    @staticmethod
    def _widen(value: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
        if value.dtype == scratch.dtype:
            return value
        scratch.copy_(value)
        return scratch

    def _identical(self, key: str, start: int, count: int) -> torch.Tensor:
        """Integer/bool tensors (ids, masks) cannot be interpolated: they must agree, and are copied."""
        first = self._read(0, self.models[0], key, start, count)
        for slot, reader in enumerate(self.models[1:], start=1):
            if not torch.equal(first, self._read(slot, reader, key, start, count)):
                raise MergeMismatchError(f"non-float tensor {key!r} differs between {self.models[0].path} and {reader.path}")
        return first


def copy_side_files(source: Path, dest: Path, skip: tuple[str, ...] = ()) -> None:
    """config.json, tokenizer files, generation_config.json...: every top-level non-weight file."""
    if not source.is_dir():
        return
    for item in sorted(source.iterdir()):
        if (item.is_file() and not item.name.startswith(".") and not item.name.endswith(_SKIP_SUFFIXES)
                and item.name not in (INDEX_NAME, MANIFEST_NAME, *skip)):
            shutil.copyfile(item, dest / item.name)


def write_json(path: Path, value) -> str:
    from pipeline.digest import digest_bytes

    data = (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8")
    path.write_bytes(data)
    return digest_bytes(data)


def describe_input(reader: CheckpointReader, digest: bool) -> dict:
    files = {str(f.relative_to(reader.path) if reader.path.is_dir() else f.name): (file_sha256(f) if digest else None)
             for f in reader.files}
    return {"path": str(reader.path.resolve()), "files": files}


def library_versions() -> dict:
    import safetensors

    versions = {"python": platform.python_version(), "torch": torch.__version__, "safetensors": safetensors.__version__}
    try:
        from importlib.metadata import version

        versions["songpref"] = version("songpref")
    except Exception:  # not installed as a distribution: leave it out
        pass
    return versions


def build_manifest(method: str, readers: list[CheckpointReader], weights: Sequence[float], base: CheckpointReader | None,
                   options: MergeOptions, outputs: dict[str, str], tensors: int, bytes_read: int, bytes_written: int,
                   seconds: float, extra: dict | None = None) -> dict:
    inputs = [dict(describe_input(r, options.digest_inputs), weight=w) for r, w in zip(readers, weights)]
    dtypes = sorted({e.dtype for e in readers[0].entries.values()})
    manifest = {
        "method": method,
        "inputs": inputs,
        "weights": list(weights),
        "base": describe_input(base, options.digest_inputs) if base else None,
        "dtype": options.dtype or "/".join(dtypes),
        "compute_dtype": options.compute_dtype,
        "options": asdict(options),
        "outputs": outputs,
        "tensors": tensors,
        "bytes_read": bytes_read,
        "bytes_written": bytes_written,
        "seconds": round(seconds, 3),
        "versions": library_versions(),
    }
    manifest.update(extra or {})
    return manifest
