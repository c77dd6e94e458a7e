"""Scorer backends by name: one registry line per backend, imported only when chosen."""

from __future__ import annotations

import importlib
from functools import lru_cache

from pipeline.digest import canonical_json

TRANSCRIBERS = {
    "pocketsphinx": "pipeline.scoring.pocketsphinx_asr:PocketsphinxTranscriber",
    "whisper": "pipeline.scoring.whisper_asr:WhisperTranscriber",
}
SIMILARITY = {
    "attributes": "pipeline.scoring.attributes:AttributesScorer",
    "muq-mulan": "pipeline.scoring.mulan:MulanScorer",
    "clap": "pipeline.scoring.clap:ClapScorer",
}


def _load(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@lru_cache(maxsize=4)
def _build(kind: str, backend: str, options_json: str, options_type):
    table = TRANSCRIBERS if kind == "transcriber" else SIMILARITY
    return _load(table[backend])(options_type.model_validate_json(options_json))


def build_scorer(kind: str, options):
    """The scorer for a config section (`scoring.transcriber` or `scoring.similarity`); one
    instance per process and options, so models load once however many shards run."""
    return _build(kind, options.backend, canonical_json(options.model_dump(mode="json")), type(options))
