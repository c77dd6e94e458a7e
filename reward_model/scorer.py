"""Scores candidates with a trained reward model: the `reward` column of the musicality strategy.

A checkpoint directory (`RewardModel.save`) records which embedding backend and version it was
trained on; the scorer rebuilds that embedder and refuses a different feature version, since a
head on the wrong features gives confident nonsense. For the `muq` backend the MuQ-MuLan
directory may live elsewhere on the scoring machine: pass `embedding=` to point at it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pipeline.scoring.base import ScoringItem
from reward_model.bradley_terry import CONFIG_FILE, WEIGHTS_FILE, RewardModel
from reward_model.embeddings import EmbeddingConfig, load_embedder


class RewardScorer:
    name = "reward"

    def __init__(self, model_dir: Path | str, embedding: EmbeddingConfig | None = None, _embedder=None):
        self.model_dir = Path(model_dir)
        self.model = RewardModel.load(self.model_dir)
        recorded = self.model.embedding or {}
        if _embedder is None:
            config = embedding or EmbeddingConfig(**recorded.get("config", {}))
            _embedder = load_embedder(config)
        self.embedder = _embedder
        if recorded.get("version") not in (None, self.embedder.version):
            raise ValueError(f"reward model in {self.model_dir} was trained on embeddings {recorded['version']!r}, "
                             f"the embedder gives {self.embedder.version!r}")  # fmt: skip
        if self.embedder.dim != len(self.model.mean):
            expected = len(self.model.mean)
            raise ValueError(f"embedder gives {self.embedder.dim} dims, the reward model expects {expected}")

    def score(self, items: list[ScoringItem]) -> list[dict]:
        """One row {candidate_id, reward, error} per item, in order; a bad item gets `error`, the others go on."""
        embeddings = self.embedder.embed(items)
        good = [i for i, e in enumerate(embeddings) if e.error is None]
        rewards = self.model.reward(np.stack([embeddings[i].vector for i in good])) if good else np.zeros(0)
        by_index = dict(zip(good, rewards))
        return [
            {"candidate_id": e.candidate_id, "reward": float(by_index[i]), "error": None}
            if i in by_index else {"candidate_id": e.candidate_id, "reward": None, "error": e.error}
            for i, e in enumerate(embeddings)
        ]  # fmt: skip

    def describe(self) -> dict:
        files = hashlib.sha256()
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            files.update((self.model_dir / name).read_bytes())
        report = self.model.report or {}
        return {
            "backend": self.name,
            "model_dir": str(self.model_dir),
            "model_digest": files.hexdigest(),
            "weights_digest": self.model.digest(),
            "embedding": self.embedder.describe(),
            "simulated_rankings": report.get("simulated_rankings"),
            "held_out_accuracy": report.get("accuracy"),
        }
