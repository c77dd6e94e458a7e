"""The ablation stage: base, every DPO model and every named merge asked for the same fresh songs.

One shard. Fresh held-out prompts (never in the round) x the same seeds for every model, scored by
the embedded world's oracle metrics from the songs' tokens (alignment.sweep.oracle); optionally the
first `songs` of them rendered and scored by the round's own scorers, and the simplex edges
(controllability). Runs for a model whose songs the oracle can read (the tiny model); any other
backend skips it with the reason. Options: `sweep.ablation`. Writes ablation/oracle.md (the round's
report.md shows it too, pipeline/report.py), ablation/*.parquet and plots.
"""

from __future__ import annotations

import pyarrow as pa

from alignment.merge.stage import model_identities, trained_models
from alignment.policy import policy_folder
from alignment.sweep.stage import saved_chosen_point
from pipeline.models.tiny.song_model import checkpoint_digest
from pipeline.preferences import score_tables
from pipeline.scoring.registry import get_kind
from pipeline.stages.base import ShardSpec, Stage

SCHEMA = pa.schema([("model", pa.string()), ("metric", pa.string()), ("mean", pa.float64()), ("diff", pa.float64()),
                    ("low", pa.float64()), ("high", pa.float64()), ("songs", pa.int64())])  # fmt: skip


class AblationStage(Stage):
    name = "ablation"

    def plan(self) -> list[ShardSpec]:
        options = self.config.sweep
        models = trained_models(self.store)
        inputs = {"models": model_identities(self.store, models), "named": options.named, "form": options.form,
                  "chosen": saved_chosen_point(self.store)}
        if self.config.model.backend == "tiny" and self.config.dpo.policy is None:
            base = policy_folder(self.config.model.backend, self.config.model.options, None)
            inputs["base"] = checkpoint_digest(base)
        if options.ablation.songs:
            for table in score_tables():  # a scorer trained in the round (reward)
                inputs |= get_kind(table).extra_inputs(self.store)
        params = {"ablation": options.ablation.model_dump(mode="json"), "seed": self.config.seed,
                  "sampling": self.config.sampling.model_dump(mode="json"), "backend": self.config.model.backend}  # fmt: skip
        return [ShardSpec(self.name, 0, inputs, params)]

    def build_shard(self, spec: ShardSpec) -> tuple[pa.Table, dict]:
        from alignment.sweep.oracle import oracle_ablation

        ablation = self.config.sweep.ablation
        reason = self._skip_reason()
        if reason:
            return pa.Table.from_pylist([], schema=SCHEMA), {"status": "skipped", "reason": reason}
        table, markdown = oracle_ablation(self.config, self.store, ablation.prompts, ablation.seeds,
                                          edge_step=ablation.edges, audio_songs=ablation.songs, header_odds=ablation.header_odds)  # fmt: skip
        own = table[table["model"] != "base"]
        return pa.Table.from_pandas(table[SCHEMA.names], schema=SCHEMA, preserve_index=False), {
            "status": "done", "songs_per_model": ablation.prompts * ablation.seeds, "models": int(table["model"].nunique()),
            "report": markdown, "oracle_diffs": {f"{r.model}/{r.metric}": round(r.diff, 6) for r in own.itertuples()}}  # fmt: skip

    def _skip_reason(self) -> str | None:
        if self.config.sweep.ablation.prompts == 0:
            return "sweep.ablation.prompts is 0"
        if self.config.model.backend != "tiny":
            return f"the oracle reads the tiny model's tokens; model.backend is {self.config.model.backend!r}"
        if self.config.dpo.policy is not None:
            return "dpo.policy is a Hugging Face model: the oracle reads the tiny policy's songs only"
        if not trained_models(self.store):
            return "no DPO model trained"
        return None

    def summarize(self, results, seconds: float) -> dict:
        return {key: value for result in results for key, value in result.metrics.items()}
