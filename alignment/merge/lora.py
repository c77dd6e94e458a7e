"""Exact merging of PEFT LoRA adapters: ΔW = Σ αᵢ sᵢ BᵢAᵢ, never an average of the factors.

Averaging A and B separately (PEFT's "linear" combination) gives (Σ αB)(Σ αA), which is not
Σ αᵢ BᵢAᵢ. Two exact outputs instead:

- a stacked adapter of rank Σ rᵢ: B = [α₁s₁B₁ … αₙsₙBₙ], A = [A₁; …; Aₙ], scaling 1, so that
  BA = Σ αᵢ sᵢ BᵢAᵢ term by term (small on disk, loads with PeftModel.from_pretrained);
- with a dense base: the full model θ₀ + Σ αᵢ ΔWᵢ, streamed like any other merge.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file

from alignment.merge.dense import (MANIFEST_NAME, MergeMismatchError, MergeResult, Progress, write_json, copy_side_files,
                             library_versions, stream_merge)
from alignment.merge.config import MergeOptions, validate_weights
from alignment.merge.io import CheckpointReader, file_sha256
from alignment.merge.writer import atomic_output_dir

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
_FACTOR_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")


def is_lora_adapter(path: Path) -> bool:
    path = Path(path)
    return (path / ADAPTER_CONFIG).is_file() and (path / ADAPTER_WEIGHTS).is_file()


@dataclass
class LoraAdapter:
    path: Path
    config: dict
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    """module name (PEFT prefix stripped) -> (A [r, in], B [out, r])"""
    scaling: dict[str, float]
    """module name -> lora_alpha / r (or / √r with rsLoRA)"""


def load_adapter(path: Path) -> LoraAdapter:
    """Read a PEFT LoRA adapter dir, refusing variants whose delta is not B·A·scaling."""
    path = Path(path)
    config = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    problems = []
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type is {config.get('peft_type')!r}, not 'LORA'")
    if config.get("use_dora"):
        problems.append("DoRA adapters (use_dora) rescale weight norms; their merge is not a sum of deltas")
    if config.get("alpha_pattern"):
        problems.append("alpha_pattern is not supported; give every module the same lora_alpha")
    if config.get("bias", "none") != "none":
        problems.append(f"bias={config['bias']!r}: trained biases are not merged")
    tensors = load_file(path / ADAPTER_WEIGHTS)
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _FACTOR_KEY.match(key)
        if not match:
            problems.append(f"tensor {key!r} is not a lora_A/lora_B weight (modules_to_save, embeddings and biases are not merged)")
            continue
        module = match["module"].removeprefix(PEFT_PREFIX)
        parts.setdefault(module, {})[match["part"]] = tensor
    factors, scaling = {}, {}
    for module, pair in sorted(parts.items()):
        if set(pair) != {"A", "B"}:
            problems.append(f"module {module!r} has lora_{''.join(pair)} but not both factors")
            continue
        rank = pair["A"].shape[0]
        if pair["B"].shape[1] != rank:
            problems.append(f"module {module!r}: lora_A rank {rank} but lora_B rank {pair['B'].shape[1]}")
            continue
        factors[module] = (pair["A"], pair["B"])
        alpha = float(config.get("lora_alpha", 8))
        scaling[module] = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
    if problems:
        raise MergeMismatchError(f"{path}: cannot merge this adapter:\n  " + "\n  ".join(problems))
    return LoraAdapter(path, config, factors, scaling)


def check_adapters(adapters: list[LoraAdapter]) -> None:
    """Same modules, same layer shapes, same dtypes and layout everywhere; all differences in one error."""
    reference, problems = adapters[0], []
    for adapter in adapters[1:]:
        for module in sorted(reference.factors.keys() - adapter.factors.keys()):
            problems.append(f"{adapter.path}: missing module {module!r} (present in {reference.path})")
        for module in sorted(adapter.factors.keys() - reference.factors.keys()):
            problems.append(f"{adapter.path}: extra module {module!r} (absent from {reference.path})")
        for module in sorted(reference.factors.keys() & adapter.factors.keys()):
            (a0, b0), (a, b) = reference.factors[module], adapter.factors[module]
            if (b.shape[0], a.shape[1]) != (b0.shape[0], a0.shape[1]):
                problems.append(f"{adapter.path}: module {module!r} maps {a.shape[1]}->{b.shape[0]}, "
                                f"{reference.path} maps {a0.shape[1]}->{b0.shape[0]}")
            if (a.dtype, b.dtype) != (a0.dtype, b0.dtype):
                problems.append(f"{adapter.path}: module {module!r} has dtype {a.dtype}, {reference.path} has {a0.dtype}")
        if bool(adapter.config.get("fan_in_fan_out")) != bool(reference.config.get("fan_in_fan_out")):
            problems.append(f"{adapter.path}: fan_in_fan_out differs from {reference.path}")
    if problems:
        raise MergeMismatchError(f"{len(problems)} mismatches between the adapters; nothing was written:\n  " + "\n  ".join(problems))


def stacked_factors(adapters: list[LoraAdapter], weights: Sequence[float], module: str,
                    compute: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [Σr, in], B [out, Σr]) in `compute` precision with αᵢsᵢ folded into B, so B @ A = Σ αᵢ sᵢ BᵢAᵢ."""
    a = torch.cat([adapter.factors[module][0].to(compute) for adapter in adapters], dim=0)
    b = torch.cat([adapter.factors[module][1].to(compute) * (w * adapter.scaling[module])
                   for adapter, w in zip(adapters, weights)], dim=1)
    return a, b


def merge_lora(adapters: Sequence[str | Path], weights: Sequence[float], out: str | Path, *,
               base: str | Path | None = None, options: MergeOptions | None = None,
               progress: Progress | None = None) -> MergeResult:
    """Stacked rank-Σrᵢ adapter at `out`, or with `base` the dense model θ₀ + Σ αᵢ sᵢ BᵢAᵢ."""
    options = options or MergeOptions()
    started = time.perf_counter()
    weights = validate_weights(weights, len(adapters), options.allow_extrapolation)
    loaded = [load_adapter(Path(p)) for p in adapters]
    check_adapters(loaded)
    compute = torch.float64 if options.compute_dtype == "float64" else torch.float32
    extra = {"lora": {"adapters": [_describe_adapter(a) for a in loaded], "ranks": {m: sum(a.factors[m][0].shape[0] for a in loaded)
                                                                                  for m in sorted(loaded[0].factors)}}}
    if base is None:
        return _write_stacked(loaded, weights, Path(out), options, compute, started, extra)
    reader = CheckpointReader(Path(base))
    try:
        targets = _base_keys(loaded[0], reader)
        transpose = bool(loaded[0].config.get("fan_in_fan_out"))

        def delta(key: str) -> torch.Tensor | None:
            module = targets.get(key)
            if module is None:
                return None
            a, b = stacked_factors(loaded, weights, module, compute)
            dense = b @ a
            return (dense.T if transpose else dense).contiguous().reshape(-1)

        return stream_merge([reader], [1.0], out, base=None, options=options, method="lora_dense", started=started,
                            progress=progress, delta=delta, manifest_extra=extra)
    finally:
        reader.close()


def _base_keys(adapter: LoraAdapter, base: CheckpointReader) -> dict[str, str]:
    """base tensor key -> module, checking that every adapted module has a weight of the right shape."""
    targets, problems = {}, []
    transpose = bool(adapter.config.get("fan_in_fan_out"))
    for module, (a, b) in adapter.factors.items():
        key = f"{module}.weight"
        entry = base.entries.get(key)
        expected = (a.shape[1], b.shape[0]) if transpose else (b.shape[0], a.shape[1])
        if entry is None:
            problems.append(f"{base.path}: no tensor {key!r} for adapted module {module!r}")
        elif entry.shape != expected:
            problems.append(f"{base.path}: tensor {key!r} has shape {list(entry.shape)}, the adapter needs {list(expected)}")
        else:
            targets[key] = module
    if problems:
        raise MergeMismatchError(f"{len(problems)} mismatches between the adapters and the base; nothing was written:\n  "
                                 + "\n  ".join(problems))
    return targets


def _write_stacked(adapters: list[LoraAdapter], weights: Sequence[float], out: Path, options: MergeOptions,
                   compute: torch.dtype, started: float, extra: dict) -> MergeResult:
    tensors, ranks = {}, {}
    for module in sorted(adapters[0].factors):
        a, b = stacked_factors(adapters, weights, module, compute)
        dtype = adapters[0].factors[module][0].dtype
        tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = a.to(dtype).contiguous()
        tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = b.to(dtype).contiguous()
        ranks[module] = a.shape[0]
    rank = Counter(ranks.values()).most_common(1)[0][0]
    config = dict(adapters[0].config)
    # scaling = lora_alpha / r = 1 everywhere: the αᵢsᵢ already sit in B
    pattern = {module: r for module, r in ranks.items() if r != rank}
    config.update(r=rank, lora_alpha=rank, use_rslora=False, rank_pattern=pattern, alpha_pattern=dict(pattern))
    with atomic_output_dir(out, overwrite=options.overwrite) as tmp:
        save_file(tensors, tmp / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        outputs = {ADAPTER_WEIGHTS: file_sha256(tmp / ADAPTER_WEIGHTS),
                   ADAPTER_CONFIG: write_json(tmp / ADAPTER_CONFIG, config)}
        if options.copy_files:
            copy_side_files(adapters[0].path, tmp, skip=(ADAPTER_CONFIG, MANIFEST_NAME))
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        read = sum(t.numel() * t.element_size() for a in adapters for pair in a.factors.values() for t in pair)
        seconds = time.perf_counter() - started
        inputs = [dict(described, weight=w) for described, w in zip(extra["lora"]["adapters"], weights)]
        manifest = {"method": "lora_stacked", "inputs": inputs, "weights": list(weights), "base": None, "outputs": outputs,
                    "tensors": len(tensors), "bytes_read": read, "bytes_written": nbytes, "seconds": round(seconds, 3),
                    "compute_dtype": options.compute_dtype, "versions": library_versions(), **extra}
        write_json(tmp / MANIFEST_NAME, manifest)
    return MergeResult(out, len(tensors), read, nbytes, seconds, manifest)


def _describe_adapter(adapter: LoraAdapter) -> dict:
    return {"path": str(adapter.path.resolve()), "sha256": file_sha256(adapter.path / ADAPTER_WEIGHTS),
            "r": adapter.config.get("r"), "lora_alpha": adapter.config.get("lora_alpha"),
            "use_rslora": bool(adapter.config.get("use_rslora"))}
