"""The `reward` score kind: the round's own reward model, trained by the reward_model stage.

Table `scores/reward`: the reward and whether the model was trained on simulated rankings. Its
options are the round's `reward_model` section; a shard also reads the trained model's digests.
"""

from __future__ import annotations

import pyarrow as pa

from pipeline.manifest import read_manifest
from pipeline.scoring.base import ScoringItem
from pipeline.scoring.kind import ERROR_COLUMN, ID_COLUMNS, ScoreKind

MODEL_DIR = "reward_model/model"


class RewardKind(ScoreKind):
    name = "reward"
    schema = pa.schema([*ID_COLUMNS, ("reward", pa.float64()), ("simulated", pa.bool_()), ERROR_COLUMN])
    trained_in_round = True
    order = 30
    column, meaning, title = "reward", "reward-model score (higher is better)", "reward-model scores"

    def options(self, config):
        return config.reward_model

    def load(self, config, store):
        from reward_model.embedding_cache import CachedEmbedder, read_embeddings
        from reward_model.scorer import RewardScorer

        scorer = RewardScorer(store.path(MODEL_DIR))
        # the candidates' embeddings from the reward_model stage, not computed a second time
        scorer.embedder = CachedEmbedder(scorer.embedder, read_embeddings(store, scorer.embedder))
        return scorer

    def score(self, scorer, items: list[ScoringItem], lyrics: list[str]) -> list[dict]:
        simulated = bool((scorer.model.report or {}).get("simulated_rankings"))  # trained on the simulated crowd
        return [{"reward": r["reward"], "simulated": simulated, "error": r["error"]} for r in scorer.score(items)]

    def extra_inputs(self, store) -> dict:
        model = read_manifest(store)["stages"].get("reward_model", {})
        if model.get("status") != "done":
            raise RuntimeError(f"stage 'reward_model' must be done first (status: {model.get('status', 'not run')})")
        return {"reward_model": model["outputs"]}


REWARD = RewardKind()
