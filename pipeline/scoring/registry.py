"""Scorer kinds by name (entry-point group `songpref.scorers`) and their backends by name.

A kind lists its own backends (`ScoreKind.backends`: name -> "module:Class"), imported only when
chosen; one instance per process and options, so models load once however many shards run.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from pipeline.digest import canonical_json
from pipeline.registry import registered
from pipeline.scoring.kind import ScoreKind

GROUP = "songpref.scorers"


def score_kinds() -> dict[str, ScoreKind]:
    """Every registered kind by name, in registry order."""
    return registered(GROUP, ScoreKind)  # type: ignore[return-value]


def get_kind(name: str) -> ScoreKind:
    try:
        return score_kinds()[name]
    except KeyError:
        raise ValueError(f"unknown score kind {name!r}; known: {', '.join(score_kinds())}") from None


def build_backend(backends: dict[str, str], options):
    """The backend `options.backend` of a kind, built from `options` (cached per process)."""
    if options.backend not in backends:
        raise ValueError(f"unknown backend {options.backend!r}; known: {', '.join(backends)}")
    return _build(backends[options.backend], canonical_json(options.model_dump(mode="json")), type(options))


@lru_cache(maxsize=4)
def _build(path: str, options_json: str, options_type):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)(options_type.model_validate_json(options_json))
