"""Deep Network Interpolation: θ = Σ αᵢθᵢ (or θ₀ + Σ αᵢ(θᵢ − θ₀) given a base) over N ≥ 2 checkpoints.

The one entry point: dense checkpoints stream through `alignment.merge.dense`, PEFT LoRA
adapter directories go to `alignment.merge.lora`, which is exact.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from alignment.merge.config import MergeOptions, validate_weights
from alignment.merge.dense import MergeMismatchError, MergeResult, Progress, check_same_tensors, stream_merge
from alignment.merge.io import CheckpointReader
from alignment.merge.lora import is_lora_adapter, merge_lora


def merge(checkpoints: Sequence[str | Path], weights: Sequence[float], out: str | Path, *,
          base: str | Path | None = None, options: MergeOptions | None = None,
          progress: Progress | None = None) -> MergeResult:
    """Merge N ≥ 2 checkpoints of one architecture into `out` with weights αᵢ.

    Without `base`: θ = Σ αᵢθᵢ. With `base`: θ = θ₀ + Σ αᵢ(θᵢ − θ₀) (task vectors). PEFT adapter
    directories are merged exactly by `merge_lora`.
    """
    options = options or MergeOptions()
    paths = [Path(c) for c in checkpoints]
    weights = validate_weights(weights, len(paths), options.allow_extrapolation)
    adapters = [is_lora_adapter(p) for p in paths]
    if all(adapters):
        return merge_lora(paths, weights, out, base=base, options=options, progress=progress)
    if any(adapters):
        raise MergeMismatchError("cannot mix LoRA adapter dirs and full checkpoints: "
                                 + ", ".join(f"{p} ({'adapter' if a else 'checkpoint'})" for p, a in zip(paths, adapters)))
    started = time.perf_counter()
    readers = [CheckpointReader(p) for p in paths]
    base_reader = CheckpointReader(Path(base)) if base is not None else None
    try:
        check_same_tensors(readers + ([base_reader] if base_reader else []))
        result = stream_merge(readers, weights, out, base=base_reader, options=options, progress=progress,
                              method="task_arithmetic" if base_reader else "linear", started=started)
    finally:
        for reader in readers + ([base_reader] if base_reader else []):
            reader.close()
    return result
