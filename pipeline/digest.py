"""Stable digests: the keys that make reruns skip finished work and outputs traceable."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest_json(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from the round seed plus names/indices, independent of Python's hash salt."""
    return int.from_bytes(hashlib.sha256(canonical_json(parts).encode()).digest()[:8], "big") >> 1


def derive_rng(*parts: Any) -> random.Random:
    return random.Random(derive_seed(*parts))


def model_dir_digest(model_dir: Path) -> str:
    """config.json plus weight file names and sizes: identifies a checkpoint without hashing gigabytes."""
    model_dir = Path(model_dir)
    config = model_dir / "config.json"
    weights = sorted(
        (p.relative_to(model_dir).as_posix(), p.stat().st_size)
        for p in model_dir.rglob("*")
        if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
    )
    return digest_json({"config": config.read_text(encoding="utf-8") if config.is_file() else None, "weights": weights})
