"""The reward_model stage: rankings -> Bradley–Terry reward model -> scores/reward for every candidate.

Two parts, each its own manifest record:
- `reward_model`: one shard. It takes the round's rankings (in the embedded world a SIMULATED
  crowd ranking the candidates by a hidden musicality utility read from their token streams;
  labelled simulated in the rows, the manifest and eval.json), runs quality control on them
  (`quality`: Krippendorff's alpha, and annotators excluded for failing gold tasks, disagreeing
  with the others or clicking through; reasons in reward_model/quality.md and the manifest),
  breaks the kept rankings into pairs, embeds every candidate's audio and trains the reward head.
  The shard's rows are the rankings used (the snapshot, `excluded` marking the dropped
  annotators); the model goes to reward_model/model/.
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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.digest import digest_json
from pipeline.manifest import finished_outputs, read_manifest
from pipeline.stages.base import ShardSpec, Stage
from pipeline.stages.scores import ScoreStage, round_conditions, scoring_items
from reward_model.bradley_terry import RewardModelConfig, RewardTrainer
from reward_model.crowd import CrowdConfig, SimulatedCrowd, decode_candidate
from reward_model.embeddings import FEATURES_VERSION, EmbeddingConfig, embedding_matrix, load_embedder
from reward_model.quality import QualityThresholds, assess, drop_flagged
from reward_model.quality_report import render_quality_report
from reward_model.rankings import RANKINGS_SCHEMA, rankings_to_pairs

MODEL_DIR = "reward_model/model"
QUALITY_DIR = "reward_model"


class RewardStageOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rankings: Literal["simulated"] | Path = Field(
        "simulated", description="'simulated' (the embedded crowd) or a Parquet file of rankings in RANKINGS_SCHEMA."
    )
    crowd: CrowdConfig = Field(default_factory=CrowdConfig, description="The simulated crowd (rankings: simulated).")
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig, description="Audio embeddings the head reads.")
    training: RewardModelConfig = Field(default_factory=RewardModelConfig, description="The Bradley–Terry head.")
    quality: QualityThresholds = Field(
        default_factory=QualityThresholds, description="Quality control: which annotators are excluded before training."
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_min_gold_accuracy(cls, data):
        """Configs written before `quality` set `min_gold_accuracy` at this level: it moves into `quality`."""
        if isinstance(data, dict) and "min_gold_accuracy" in data:
            data = dict(data)
            legacy = data.pop("min_gold_accuracy")
            quality = dict(data.get("quality") or {})
            if "min_gold_accuracy" in quality and quality["min_gold_accuracy"] != legacy:
                raise ValueError("min_gold_accuracy is set twice (top level and quality) with different values")
            data["quality"] = {**quality, "min_gold_accuracy": legacy}
        return data


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
        params = {"options": options.model_dump(mode="json")}
        if options.embedding.backend == "features":  # changed descriptors must retrain, though the options did not change
            params["features_version"] = FEATURES_VERSION
        return [ShardSpec(self.name, 0, inputs, params)]

    def build_shard(self, spec: ShardSpec) -> tuple[pa.Table, dict]:
        options = stage_options(self.config)
        items, rows = _round_candidates(self.store)
        rankings = self._rankings(options, rows)
        quality = assess(rankings, options.quality)
        for name, data in render_quality_report(quality, options.quality).items():
            self.store.write_bytes(f"{QUALITY_DIR}/{name}", data)  # atomic: temporary sibling + rename
        kept = drop_flagged(rankings, quality)
        embedder = load_embedder(options.embedding)
        ids, matrix, embed_errors = embedding_matrix(embedder.embed(items))
        # A ranking that shows a song we could not embed is left out whole: its other pairs would be biased.
        pairs = rankings_to_pairs(kept[kept["candidate_ids"].map(lambda c: not set(c) & set(embed_errors))], set(ids))
        simulated = options.rankings == "simulated"
        model = RewardTrainer(options.training, ids, matrix, pairs, embedding=embedder.describe(), simulated=simulated).train()
        self._save(model)
        report = model.report
        rankings = rankings.assign(excluded=rankings["annotator_id"].isin(quality.excluded))
        metrics = {
            "simulated": simulated,
            "rankings": len(rankings),
            **quality.metrics(),
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
        # The crowd submits like people do: an upload to a campaign of the round's annotation
        # database, read back from the service's export. One campaign per crowd config, as the
        # service refuses a second judgement of the same task by the same annotator.
        from reward_model.service.crowd_upload import submit_simulated_rankings

        campaign = f"simulated-crowd-{digest_json(options.crowd.model_dump(mode='json'))[:12]}"
        return submit_simulated_rankings(self.store.path(""), rankings, campaign_name=campaign)

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
