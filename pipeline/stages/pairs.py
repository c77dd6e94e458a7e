"""The pairs stage: scored candidates -> one preference dataset per strategy, ready for TRL.

One shard per strategy (every registered preference, then joint), keyed by the score tables that
strategy reads, the candidates, the pair options, the seed and the song model. A shard does
two things:
- its Parquet shard (`pairs/shard-*.parquet`, the stage's bookkeeping) holds the selected
  pairs: ids, scores, gap, genre, language, split;
- the dataset itself goes to `pairs/<strategy>/data/{train,test}-00000-of-00001.parquet`
  (`pipeline.pairs.dataset`), with TRL DPOTrainer's columns `prompt`, `chosen`, `rejected`
  (the trainable policy's text of the condition and of each song, as its tokenizer reads
  them: `TrainablePolicy.prompt_text` / `completion_text`), plus both candidates' ids, audio URIs and every score, and `strategy`.
An empty pair set is reported (status "empty" in the manifest, with the counts that explain
it) and no dataset is written; a strategy whose score table is missing fails alone.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.conditions import round_conditions
from pipeline.manifest import read_manifest
from pipeline.models.registry import trainable_policy
from pipeline.pairs import STRATEGIES, get_strategy
from pipeline.pairs.dataset import INDEX_SCHEMA, dataset_files, dataset_schema, score_names
from pipeline.preferences import JOINT, Preference, preferences
from pipeline.stages.base import ShardSpec, Stage


def strategy_parts(strategy: str) -> list[Preference]:
    """The preferences a strategy is made of: itself, or every preference for joint."""
    return list(preferences().values()) if strategy == JOINT else [preferences()[strategy]]


class PairsStage(Stage):
    name = "pairs"

    def plan(self) -> list[ShardSpec]:
        stages = read_manifest(self.store)["stages"]
        candidates = stages.get("candidates", {})
        if candidates.get("status") != "done":
            raise RuntimeError(f"stage 'candidates' must be done first (status: {candidates.get('status', 'not run')})")
        trainable_policy(self.config.model.backend, self.config.model.options)  # NotTrainable names the backend
        options = self.config.pairs.model_dump(mode="json")
        params = {"seed": self.config.seed, "model": {"backend": self.config.model.backend, "options": self.config.model.options}}
        specs = []
        for index, strategy in enumerate(STRATEGIES):
            # keyed by the options this strategy reads only: a new PER gap leaves prompt pairs alone
            parts = strategy_parts(strategy)
            params["options"] = {k: options[k] for k in (*(p.name for p in parts), "selection")}
            tables = {p.stage: stages.get(p.stage, {}) for p in parts}
            inputs = {"candidates": candidates["outputs"]}
            inputs |= {name: rec.get("outputs") if rec.get("status") == "done" else None for name, rec in tables.items()}
            specs.append(ShardSpec(self.name, index, inputs, {**params, "strategy": strategy}))
        return specs

    def build_shard(self, spec: ShardSpec) -> tuple[pa.Table, dict]:
        strategy = spec.params["strategy"]
        missing = [name for name, outputs in spec.inputs.items() if outputs is None]
        if missing:
            raise ValueError(f"pairs/{strategy}: needs {', '.join(missing)}, which is not done; run its stage first")
        conditions = round_conditions(self.store)
        scored, lookup = self.scored_candidates([p.score for p in strategy_parts(strategy)], conditions)
        pairs, stats = get_strategy(strategy)(scored, self.config.pairs, self.config.seed)
        for split, path in dataset_files(strategy).items():  # a dataset of an earlier config must not linger
            if self.store.exists(path):
                self.store.remove(path)
        if len(pairs):
            dataset = self.trl_dataset(pairs, lookup, conditions)
            written = {}
            for split, path in dataset_files(strategy).items():
                part = dataset.filter(pc.equal(dataset["split"], split))
                if part.num_rows:
                    written[split] = self.store.write_table(path, part)
            if self.config.pairs.hub.repo_id:
                self.push_to_hub(strategy, written)
        metrics = {"strategy": strategy, "status": "written" if len(pairs) else "empty", "rule": rule_text(strategy, self.config.pairs),
                   **_counts(pairs, stats)}  # fmt: skip
        index = pa.Table.from_pandas(pairs[list(INDEX_SCHEMA.names)], schema=INDEX_SCHEMA, preserve_index=False)
        return index, metrics

    def summarize(self, results, seconds: float) -> dict:
        strategies = {r.metrics["strategy"]: {k: v for k, v in r.metrics.items() if k != "strategy"} for r in results}
        empty = sorted(name for name, m in strategies.items() if m["status"] == "empty")
        return {"strategies": strategies, "empty": empty, "options": self.config.pairs.model_dump(mode="json"),
                "pairs": sum(m["pairs"] for m in strategies.values())}  # fmt: skip

    def push_to_hub(self, strategy: str, files: dict[str, str]) -> None:
        """Only when `pairs.hub.repo_id` is set: the strategy's dataset as one config of that repository."""
        import os

        from datasets import load_dataset

        hub = self.config.pairs.hub
        token = os.environ.get(hub.token_env)
        if not token:
            raise ValueError(f"pairs.hub.repo_id is set to {hub.repo_id!r} but ${hub.token_env} is empty")
        data = load_dataset("parquet", data_files=files)
        data.push_to_hub(hub.repo_id, config_name=strategy, private=hub.private, token=token)

    def scored_candidates(self, needed: list[str], conditions: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(the strategy's input: candidate_id, prompt_id, genre, language and its score columns,
        a failed score as NaN; every candidate's row with tokens, audio and all scores)."""
        stages = read_manifest(self.store)["stages"]
        frames = [self.store.read_table(p).to_pandas() for p in _outputs(stages, "candidates")]
        cands = pd.concat(frames, ignore_index=True)
        cands = cands[cands["error"].isna()].rename(columns={"condition_id": "prompt_id"})
        cands["genre"] = cands["prompt_id"].map(lambda c: conditions[c].get("genre") or "")
        cands["language"] = cands["prompt_id"].map(lambda c: conditions[c].get("language") or "")
        for preference in preferences().values():
            stage = preference.stage
            if stages.get(stage, {}).get("status") != "done":
                cands[preference.score] = math.nan
                continue
            table = pd.concat([self.store.read_table(p, ["candidate_id", preference.column, "error"]).to_pandas()
                               for p in _outputs(stages, stage)], ignore_index=True)  # fmt: skip
            values = pd.Series(preference.values(table).to_numpy(), index=table["candidate_id"])
            cands[preference.score] = cands["candidate_id"].map(values).astype(float)
        columns = ["candidate_id", "prompt_id", "genre", "language", *needed]
        return cands[columns].reset_index(drop=True), cands.set_index("candidate_id")

    def trl_dataset(self, pairs: pd.DataFrame, lookup: pd.DataFrame, conditions: dict[str, dict]) -> pa.Table:
        """TRL's columns from the trainable policy's text forms, then ids, audio and every score."""
        policy = trainable_policy(self.config.model.backend, self.config.model.options)
        prompts = {p: policy.prompt_text(conditions[p]) for p in pairs["prompt_id"].unique()}
        songs = {}
        for cid in pd.unique(pairs[["chosen_id", "rejected_id"]].to_numpy().ravel()):
            uri = lookup.at[cid, "tokens_uri"]
            if not uri:
                raise ValueError(f"candidate {cid} has no tokens_uri: the model recorded no tokens to train on")
            songs[cid] = policy.completion_text(json.loads(self.store.read_bytes(uri)))
        out = {"prompt": pairs["prompt_id"].map(prompts), "chosen": pairs["chosen_id"].map(songs),
               "rejected": pairs["rejected_id"].map(songs)}  # fmt: skip
        for side in ("chosen", "rejected"):
            ids = pairs[f"{side}_id"]
            out[f"{side}_audio_uri"] = ids.map(lookup["mix_uri"])
            for score in score_names():
                out[f"{side}_{score}"] = ids.map(lookup[score]) if score in lookup else math.nan
        frame = pairs.assign(**out)
        schema = dataset_schema()
        return pa.Table.from_pandas(frame[list(schema.names)], schema=schema, preserve_index=False)


def _outputs(stages: dict, stage: str) -> list[str]:
    return [f"{stage}/{name}" for name in sorted(stages[stage]["outputs"])]


def _counts(pairs: pd.DataFrame, stats: dict) -> dict:
    """The manifest's counts for one strategy: what came in, what each rule dropped, what is left."""
    parts = stats.get("strategies", {stats.get("strategy"): stats})
    return {
        "pairs": len(pairs),
        "train": int((pairs["split"] == "train").sum()),
        "test": int((pairs["split"] == "test").sum()),
        "prompts": int(pairs["prompt_id"].nunique()),
        "candidates_in": stats["candidates_in"],
        "dropped": {
            "nan_scores": max(p["nan_excluded"] for p in parts.values()),
            "single_candidate_prompts": max(p["single_candidate_prompts"] for p in parts.values()),
            "tied_pairs": sum(p["tied_pairs"] for p in parts.values()),
            "below_threshold": sum(p["candidate_pairs"] - p["tied_pairs"] - p["pairs_before_selection"] for p in parts.values()),
            "selection_cap": sum(p["pairs_before_selection"] - p["pairs_out"] for p in parts.values()),
            "joint_duplicates": stats.get("duplicates_removed", 0),
        },
        "after_each_rule": {name: p["pairs_after_each_rule"] for name, p in parts.items()},
    }


def rule_text(strategy: str, options) -> str:
    """One line saying which pairs the strategy keeps, with the thresholds in force."""
    rules = [p.describe_rule(options.rule_options(p.name)) for p in strategy_parts(strategy)]
    rule = "union of: " + "; ".join(rules) if strategy == JOINT else rules[0]
    sel = options.selection
    return (f"{rule}; at most {sel.max_pairs_per_prompt} pairs per prompt, "
            f"each candidate in at most {sel.max_uses_per_candidate}")  # fmt: skip
