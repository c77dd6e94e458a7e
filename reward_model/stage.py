"""The reward_model stage: rankings -> Bradley–Terry reward model -> scores/reward for every candidate.

Two parts, each its own manifest record:
- `reward_model`: one shard. It takes the round's rankings (in the embedded world a SIMULATED
  crowd ranking the candidates by a hidden musicality utility read from their token streams;
  labelled simulated in the rows, the manifest and eval.json), drops annotators who fail gold
  tasks, breaks rankings into pairs, embeds every candidate's audio and trains the reward head.
  The shard's rows are the rankings used (the snapshot); the model goes to reward_model/model/.
- `scores/reward`: one shard per candidates shard, scored by that model through the same
  machinery as the other scores (a change of model rescores every row).
Options come from the config's `reward_model` mapping (`RewardStageOptions`), checked here, as
the pipeline layer does not import this package.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.manifest import finished_outputs, read_manifest
from pipeline.stages.base import ShardSpec, Stage
from pipeline.stages.scores import ScoreStage, round_conditions, scoring_items
from reward_model.bradley_terry import RewardModelConfig, RewardTrainer
from reward_model.crowd import CrowdConfig, SimulatedCrowd, decode_candidate
from reward_model.embeddings import EmbeddingConfig, embedding_matrix, load_embedder
from reward_model.rankings import drop_failed_gold, rankings_to_pairs

MODEL_DIR = "reward_model/model"
RANKINGS_SCHEMA = pa.schema(
    [
        ("annotator_id", pa.string()),
        ("task_id", pa.string()),
        ("prompt_id", pa.string()),
        ("candidate_ids", pa.list_(pa.string())),
        ("ranks", pa.list_(pa.int32())),
        ("tied", pa.bool_()),
        ("is_gold", pa.bool_()),
        ("gold_answer", pa.string()),
        ("duration_s", pa.float64()),
        ("simulated", pa.bool_()),
        ("excluded", pa.bool_()),  # the annotator failed gold tasks; not used for training
    ]
)


class RewardStageOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rankings: Literal["simulated"] | Path = Field(
        "simulated", description="'simulated' (the embedded crowd) or a Parquet file of rankings in RANKINGS_SCHEMA."
    )
    crowd: CrowdConfig = Field(default_factory=CrowdConfig, description="The simulated crowd (rankings: simulated).")
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig, description="Audio embeddings the head reads.")
    training: RewardModelConfig = Field(default_factory=RewardModelConfig, description="The Bradley–Terry head.")
    min_gold_accuracy: float = Field(0.5, ge=0, le=1, description="Annotators below this gold accuracy are excluded.")


def stage_options(config) -> RewardStageOptions:
    try:
        return RewardStageOptions.model_validate(config.reward_model)
    except ValidationError as exc:
        problems = "; ".join(f"reward_model.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(problems) from None


class RewardModelStage(Stage):
    name = "reward_model"

    def plan(self) -> list[ShardSpec]:
        options = stage_options(self.config)
        candidates = finished_outputs(self.store, "candidates")
        inputs = {"candidates": {p: self.store.file_digest(p) for p in candidates}}
        if options.rankings != "simulated":
            inputs["rankings_file_digest"] = _file_digest(Path(options.rankings))
        return [ShardSpec(self.name, 0, inputs, {"options": options.model_dump(mode="json")})]

    def build_shard(self, spec: ShardSpec) -> tuple[pa.Table, dict]:
        options = stage_options(self.config)
        items, rows = _round_candidates(self.store)
        rankings = self._rankings(options, rows)
        kept, excluded = drop_failed_gold(rankings, options.min_gold_accuracy)
        embedder = load_embedder(options.embedding)
        ids, matrix, embed_errors = embedding_matrix(embedder.embed(items))
        # A ranking that shows a song we could not embed is left out whole: its other pairs would be biased.
        pairs = rankings_to_pairs(kept[kept["candidate_ids"].map(lambda c: not set(c) & set(embed_errors))], set(ids))
        simulated = options.rankings == "simulated"
        model = RewardTrainer(options.training, ids, matrix, pairs, embedding=embedder.describe(), simulated=simulated).train()
        self._save(model)
        report = model.report
        rankings = rankings.assign(excluded=rankings["annotator_id"].isin(excluded))
        metrics = {
            "simulated": simulated,
            "rankings": len(rankings),
            "annotators_excluded": len(excluded),
            "pairs_train": report["pairs"]["train"],
            "pairs_test": report["pairs"]["test"],
            "heldout_accuracy": report["accuracy"],
            "annotator_ceiling": (report["ceiling"] or {}).get("agreement"),
            "calibration_ece": report["calibration"].get("ece"),
            "embedding_failures": len(embed_errors),
        }
        table = pa.Table.from_pandas(rankings[[f.name for f in RANKINGS_SCHEMA]], schema=RANKINGS_SCHEMA, preserve_index=False)
        return table, metrics

    def summarize(self, results, seconds: float) -> dict:
        """The one shard's report as it is (a sum over shards would turn `simulated` into 1)."""
        return {key: value for result in results for key, value in result.metrics.items()}

    def _rankings(self, options: RewardStageOptions, rows: list[dict]) -> pd.DataFrame:
        if options.rankings != "simulated":
            rankings = pd.read_parquet(options.rankings)
            defaults = {"tied": False, "is_gold": False, "gold_answer": None, "duration_s": float("nan"), "simulated": False}
            return rankings.assign(**{k: v for k, v in defaults.items() if k not in rankings.columns})
        frame = pd.DataFrame(
            {"candidate_id": r["candidate_id"], "prompt_id": r["condition_id"], "score": decode_candidate(r["tokens"], r["condition"])}
            for r in rows
        )
        rankings, _ = SimulatedCrowd(options.crowd).rank(frame)
        return rankings

    def _save(self, model) -> None:
        """Into a scratch folder, then renamed over the old model: never half a model on disk."""
        final = Path(self.store.path(MODEL_DIR))
        scratch = final.with_name(f".partial-{final.name}")
        shutil.rmtree(scratch, ignore_errors=True)
        model.save(scratch)
        shutil.rmtree(final, ignore_errors=True)
        scratch.rename(final)


class RewardScoreStage(ScoreStage):
    name = "scores/reward"
    schema = pa.schema(
        [
            ("candidate_id", pa.string()),
            ("audio_sha256", pa.string()),
            ("reward", pa.float64()),
            ("simulated", pa.bool_()),  # trained on simulated rankings
            ("error", pa.string()),
        ]
    )

    def scorer_options(self):
        return stage_options(self.config)

    def plan(self) -> list[ShardSpec]:
        specs = super().plan()
        model = read_manifest(self.store)["stages"].get("reward_model", {})
        if model.get("status") != "done":
            raise RuntimeError(f"stage 'reward_model' must be done first (status: {model.get('status', 'not run')})")
        return [ShardSpec(s.stage, s.index, {**s.inputs, "reward_model": model["outputs"]}, s.params) for s in specs]

    def scorer(self):
        from reward_model.scorer import RewardScorer

        return RewardScorer(self.store.path(MODEL_DIR))

    def score(self, items) -> list[dict]:
        simulated = stage_options(self.config).rankings == "simulated"
        return [{"reward": r["reward"], "simulated": simulated, "error": r["error"]} for r in self.scorer().score(items)]


def _round_candidates(store) -> tuple[list, list[dict]]:
    """Every candidate with audio as a scoring item (the mix first), and its row with tokens and condition."""
    conditions = round_conditions(store)
    items, rows = [], []
    for path in finished_outputs(store, "candidates"):
        items += scoring_items(store, path, conditions, ["mix"])[0]
        for row in store.read_table(path).to_pylist():
            if row["error"] is None and row["tokens_uri"]:
                tokens = json.loads(store.read_bytes(row["tokens_uri"]))
                rows.append({**row, "tokens": tokens, "condition": conditions[row["condition_id"]]})
    return items, rows


def _file_digest(path: Path) -> str:
    import hashlib

    if not path.is_file():
        raise ValueError(f"reward_model.rankings: {path} is not a file")
    return hashlib.sha256(path.read_bytes()).hexdigest()
