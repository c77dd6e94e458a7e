"""The embeddings the reward_model stage computed, kept for `scores/reward`.

The stage embeds every candidate to train the head; `scores/reward` then scores the same
candidates with the same embedder. The stage writes its vectors to reward_model/embeddings.parquet,
keyed by the digest of the audio files the embedder reads, beside the embedder's description;
the scorer takes a vector from there when both the description and the audio digest match, and
embeds anything else (new songs, changed audio, another embedder). Vectors are stored as the
float32 values computed, so a cached song's reward is the same number as a recomputed one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.scoring.base import ScoringItem
from reward_model.embeddings import Embedding

CACHE_FILE = "reward_model/embeddings.parquet"
DESCRIPTION_KEY = b"songpref.embedder"


def audio_key(item: ScoringItem) -> str:
    """sha256 over the item's audio files (every stem, and the scored file), in a fixed order."""
    paths = {**{name: Path(p) for name, p in item.stems.items()}, "": Path(item.audio_path)}
    digest = hashlib.sha256()
    for name in sorted(paths):
        digest.update(f"{name}\0".encode())
        digest.update(hashlib.sha256(paths[name].read_bytes()).digest())
    return digest.hexdigest()


def _description(embedder) -> bytes:
    return json.dumps(embedder.describe(), sort_keys=True, default=str).encode("utf-8")


def write_embeddings(store, embedder, items: list[ScoringItem], embeddings: list[Embedding]) -> None:
    """The successful embeddings of `items`, keyed by their audio, with the embedder's description."""
    kept = [(item, e) for item, e in zip(items, embeddings) if e.error is None]
    table = pa.table({"candidate_id": [item.candidate_id for item, _ in kept],
                      "audio_key": [audio_key(item) for item, _ in kept],
                      "vector": [e.vector.astype(np.float32).tolist() for _, e in kept]},
                     schema=pa.schema([("candidate_id", pa.string()), ("audio_key", pa.string()),
                                       ("vector", pa.list_(pa.float32()))]))  # fmt: skip
    store.write_table(CACHE_FILE, table.replace_schema_metadata({DESCRIPTION_KEY: _description(embedder)}))


def read_embeddings(store, embedder) -> dict[str, np.ndarray]:
    """Audio key -> vector, from the stage's file if it was written by an embedder described alike."""
    if not store.exists(CACHE_FILE):
        return {}
    table = store.read_table(CACHE_FILE)
    if (table.schema.metadata or {}).get(DESCRIPTION_KEY) != _description(embedder):
        return {}
    return {key: np.asarray(vector, dtype=np.float32)
            for key, vector in zip(table.column("audio_key").to_pylist(), table.column("vector").to_pylist())}  # fmt: skip


class CachedEmbedder:
    """An embedder that takes known vectors by audio key and embeds the other items."""

    def __init__(self, embedder, known: dict[str, np.ndarray]):
        self.embedder, self.known = embedder, known
        self.name, self.version, self.dim = embedder.name, embedder.version, embedder.dim

    def embed(self, items: list[ScoringItem]) -> list[Embedding]:
        keys = [audio_key(item) for item in items] if self.known else [None] * len(items)
        todo = [i for i, key in enumerate(keys) if key not in self.known]
        computed = dict(zip(todo, self.embedder.embed([items[i] for i in todo]))) if todo else {}
        return [computed[i] if i in computed else Embedding(item.candidate_id, self.known[keys[i]].copy())
                for i, item in enumerate(items)]  # fmt: skip

    def describe(self) -> dict:
        return self.embedder.describe()
