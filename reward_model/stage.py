"""The reward_model stage: rankings -> Bradley–Terry reward model -> scores/reward for every candidate.

Two parts, each its own manifest record:
- `reward_model`: one shard. It takes the round's rankings (`reward_model.rankings`: the
  annotation service's export file or campaign URL, for any model; see rankings_source.py), or
  (the embedded world's default, tiny model only) a SIMULATED
  crowd ranking the candidates by a hidden musicality utility read from their token streams;
  labelled simulated in the rows, the manifest and eval.json), runs quality control on them
  (`quality`: Krippendorff's alpha, and annotators excluded for failing gold tasks, disagreeing
  with the others or clicking through; reasons in reward_model/quality.md and the manifest),
  breaks the kept rankings into pairs, embeds every candidate's audio and trains the reward head.
  The embeddings are kept (reward_model/embeddings.parquet) for scores/reward, which scores the
  same songs with the same embedder.
  The shard's rows are the rankings used (the snapshot, `excluded` marking the dropped
  annotators); the model goes to reward_model/model/.
- `scores/reward`: the `reward` score kind (reward_model/score_kind.py), one shard per candidates
  shard, scored by that model through the same machinery as the other scores (a change of model
  rescores every row).
Options come from the config's `reward_model` section (`reward_model.options.RewardStageOptions`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipeline.conditions import round_conditions
from pipeline.digest import digest_json
from pipeline.manifest import finished_outputs
from pipeline.scoring.items import scoring_items
from pipeline.stages.base import ShardSpec, Stage
from reward_model.embedding_cache import write_embeddings
from reward_model.embeddings import FEATURES_VERSION, embedding_matrix, load_embedder
from reward_model.options import RewardStageOptions
from reward_model.quality import assess, drop_flagged
from reward_model.quality_report import render_quality_report
from reward_model.rankings import RANKINGS_SCHEMA, rankings_to_pairs
from reward_model.rankings_source import fetch_export, parse_source, rankings_from_parquet, read_rankings, source_problem
from reward_model.score_kind import MODEL_DIR

QUALITY_DIR = "reward_model"
CAMPAIGN_SNAPSHOT = "rankings/campaign-export.parquet"  # a campaign URL's export, as the shard read it


class RewardModelStage(Stage):
    name = "reward_model"

    def plan(self) -> list[ShardSpec]:
        options = self.config.reward_model
        problem = source_problem(options.rankings, self.config.model.backend)
        if problem:
            raise ValueError(problem)
        candidates = finished_outputs(self.store, "candidates")
        inputs = {"candidates": {p: self.store.file_digest(p) for p in candidates}}
        source = parse_source(options.rankings)
        if source.kind == "file":
            inputs["rankings_file_digest"] = _file_digest(Path(options.rankings))
        elif source.kind == "campaign":  # fetched once: the shard trains on exactly the snapshot its key names
            inputs["rankings_snapshot"] = CAMPAIGN_SNAPSHOT
            inputs["rankings_snapshot_digest"] = self.store.write_bytes(CAMPAIGN_SNAPSHOT, fetch_export(source))
        params = {"options": options.model_dump(mode="json")}
        if options.embedding.backend == "features":  # changed descriptors must retrain, though the options did not change
            params["features_version"] = FEATURES_VERSION
        return [ShardSpec(self.name, 0, inputs, params)]

    def build_shard(self, spec: ShardSpec) -> tuple[pa.Table, dict]:
        options = self.config.reward_model
        items, rows = _round_candidates(self.store)
        rankings = self._rankings(options, rows, spec)
        quality = assess(rankings, options.quality)
        for name, data in render_quality_report(quality, options.quality).items():
            self.store.write_bytes(f"{QUALITY_DIR}/{name}", data)  # atomic: temporary sibling + rename
        kept = drop_flagged(rankings, quality)
        embedder = load_embedder(options.embedding)
        embeddings = embedder.embed(items)
        write_embeddings(self.store, embedder, items, embeddings)  # scores/reward reads them back
        ids, matrix, embed_errors = embedding_matrix(embeddings)
        # A ranking that shows a song we could not embed is left out whole: its other pairs would be biased.
        pairs = rankings_to_pairs(kept[kept["candidate_ids"].map(lambda c: not set(c) & set(embed_errors))], set(ids))
        simulated = parse_source(options.rankings).kind == "simulated"
        from reward_model.bradley_terry import RewardTrainer  # torch loads when a model trains, not when a rerun plans

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

    def _rankings(self, options: RewardStageOptions, rows: list[dict], spec: ShardSpec) -> pd.DataFrame:
        source = parse_source(options.rankings)
        if source.kind != "simulated":
            if source.kind == "campaign":
                rankings = rankings_from_parquet(self.store.read_bytes(spec.inputs["rankings_snapshot"]), source.value)
            else:
                rankings = read_rankings(source)
            defaults = {"tied": False, "is_gold": False, "gold_answer": None, "duration_s": float("nan"), "simulated": False}
            return rankings.assign(**{k: v for k, v in defaults.items() if k not in rankings.columns})
        from reward_model.crowd import SimulatedCrowd, decode_candidate

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
