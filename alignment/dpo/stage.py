"""The dpo stage: one DPO run per preference dataset (every registered preference, and joint).

Each strategy is its own part (`dpo/<strategy>`, its own manifest record) with one shard keyed
by its pairs files, the policy checkpoint and the resolved run options. A run writes:
- `dpo/<strategy>/run-<key>/checkpoint-N`: TRL's checkpoints; a killed run resumes from the newest;
- `dpo/<strategy>/model/`: the trained policy (or LoRA adapter) with its tokenizer, renamed into
  place when complete;
- `dpo/<strategy>/metrics.json`: training log, held-out reward accuracy and margins, a sampled
  KL estimate against the reference;
- with `replicates` > 1, `dpo/<strategy>/replicates/<i>/`: each run's own model; `model/` is then
  the average of their weights (`alignment.dpo.replicates`);
- the shard's rows: the training log (step, loss, reward accuracy, margins, ...).
A strategy whose pairs are empty is skipped and says so; options come from the config's `dpo`
section (`alignment.dpo.options.DpoStageOptions`). With `dpo.processes` > 1 the run trains on
that many processes, one per GPU (`alignment.dpo.distributed`), and resumes on any count.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa

from alignment.dpo.distributed import load_trained, train_on_processes
from alignment.dpo.options import DpoOptions, DpoStageOptions
from alignment.dpo.replicates import average_runs, combined_metrics, replicate_spec
from alignment.policy import kl_estimate, load_policy, policy_folder
from pipeline.conditions import round_conditions
from pipeline.digest import derive_seed, model_dir_digest
from pipeline.manifest import read_manifest
from pipeline.models.registry import trainable_policy
from pipeline.pairs.dataset import dataset_files
from pipeline.preferences import JOINT, preferences
from pipeline.stages.base import ShardSpec, Stage

LOG_SCHEMA = pa.schema([("step", pa.int64()), ("epoch", pa.float64()), ("replicate", pa.int64()), ("loss", pa.float64()),
                        ("reward_accuracy", pa.float64()), ("reward_margin", pa.float64()),
                        ("logps_chosen", pa.float64()), ("logps_rejected", pa.float64())])  # fmt: skip
LOG_FIELDS = {"loss": "loss", "reward_accuracy": "rewards/accuracies", "reward_margin": "rewards/margins",
              "logps_chosen": "logps/chosen", "logps_rejected": "logps/rejected"}  # fmt: skip


def held_out_logp_changes(eval_rewards: dict, beta: float) -> dict:
    """log p(song) under the trained policy minus under the reference, averaged over the held-out pairs'
    chosen and rejected songs (TRL's eval rewards are beta times these). On one lyrics dataset a
    falling held-out chosen likelihood flagged the DPO variants that sang worse, which the held-out
    pair accuracy did not (README, alignment science)."""
    return {f"held_out_{side}_logp_change": eval_rewards[f"eval_rewards/{side}"] / beta
            for side in ("chosen", "rejected") if eval_rewards.get(f"eval_rewards/{side}") is not None}  # fmt: skip


class DpoStage(Stage):
    """The part `dpo/<strategy>`: one DPO run on that strategy's pairs."""

    def __init__(self, config, store, strategy: str):
        super().__init__(config, store)
        self.strategy = strategy
        self.name = f"dpo/{strategy}"

    @property
    def gpus_per_shard(self) -> int:
        return self.config.dpo.processes

    @property
    def folder(self) -> str:
        return f"dpo/{self.strategy}"

    def plan(self) -> list[ShardSpec]:
        options: DpoStageOptions = self.config.dpo
        pairs = read_manifest(self.store)["stages"].get("pairs", {})
        if pairs.get("status") not in ("done", "failed"):
            raise RuntimeError(f"stage 'pairs' must be done first (status: {pairs.get('status', 'not run')})")
        info = pairs.get("metrics", {}).get("strategies", {}).get(self.strategy)
        files = {s: p for s, p in dataset_files(self.strategy).items() if self.store.exists(p)}
        inputs = {"pairs": {s: self.store.file_digest(p) for s, p in files.items()},
                  "pairs_status": (info or {}).get("status", "missing")}  # fmt: skip
        folder = policy_folder(self.config.model.backend, self.config.model.options, options.policy)
        inputs["policy"] = (model_dir_digest(folder) if options.policy
                            else trainable_policy(self.config.model.backend, self.config.model.options).digest())  # fmt: skip
        run = options.for_strategy(self.strategy).model_dump(mode="json")
        params = {"run": run, "enabled": options.trains(self.strategy), "kl_samples": options.kl_samples,
                  "seed": derive_seed(self.config.seed, "dpo", self.strategy) % 2**32}  # fmt: skip
        return [ShardSpec(self.name, 0, inputs, params)]

    def run_shard(self, spec: ShardSpec):
        """As any stage, except that a shard is built again when `model/` is another run's: options changed
        and then changed back would otherwise find their old shard and keep the newer run's model."""
        metrics = f"{self.folder}/metrics.json"
        if self.store.exists(spec.filename):
            written = self.store.read_json(metrics).get("shard") if self.store.exists(metrics) else None
            if written != spec.key:
                self.store.remove(spec.filename)  # the run's checkpoints stay: it resumes at its last step
        return super().run_shard(spec)

    def build_shard(self, spec: ShardSpec) -> tuple[pa.Table, dict]:
        status = spec.inputs["pairs_status"]
        if not spec.params["enabled"] or status != "written" or "train" not in spec.inputs["pairs"]:
            reason = "not in dpo.strategies" if not spec.params["enabled"] else f"pairs/{self.strategy} is {status}"
            for folder in ("model", "replicates"):
                shutil.rmtree(self.store.path(self.folder, folder), ignore_errors=True)
            self.store.write_json(f"{self.folder}/metrics.json", {"strategy": self.strategy, "status": "skipped",
                                                                  "reason": reason, "shard": spec.key})  # fmt: skip
            return pa.Table.from_pylist([], schema=LOG_SCHEMA), {"status": "skipped", "reason": reason}
        options: DpoStageOptions = self.config.dpo
        trained, tokenizer, metrics = self._train_replicates(spec)
        data = self.pairs(spec)
        metrics["kl"] = self._kl(trained, options, data, spec.params["seed"])
        folder = policy_folder(self.config.model.backend, self.config.model.options, options.policy)
        metrics |= {"strategy": self.strategy, "status": "trained", "policy": str(folder), "shard": spec.key,
                    "pairs": {s: len(d) for s, d in data.items()}, "processes": options.processes,
                    "sharding": options.sharding if options.processes > 1 else None}  # fmt: skip
        self.store.write_json(f"{self.folder}/metrics.json", metrics)
        rows = [{"step": r["step"], "epoch": r.get("epoch"), "replicate": r.get("replicate", 0),
                 **{k: r.get(v) for k, v in LOG_FIELDS.items()}} for r in metrics["log"] if "loss" in r]  # fmt: skip
        summary = {k: v for k, v in metrics.get("eval", {}).items() if k.startswith("eval_rewards/")}
        summary |= held_out_logp_changes(summary, spec.params["run"]["beta"])
        summary["pairs"] = metrics["pairs"]
        return pa.Table.from_pylist(rows, schema=LOG_SCHEMA), {"status": "trained", **summary, **metrics["kl"]}

    def _train_replicates(self, spec: ShardSpec):
        """(trained model, tokenizer, metrics), the model saved in `model/`: the run, or with `replicates` > 1
        the average of that many runs, each run's own model kept in `replicates/<i>/` (alignment.dpo.replicates)."""
        count = spec.params["run"]["replicates"]
        final, kept = Path(self.store.path(self.folder, "model")), Path(self.store.path(self.folder, "replicates"))
        shutil.rmtree(kept, ignore_errors=True)
        if count == 1:
            trained, tokenizer, metrics = self._train_one(spec)
            self._save(trained, tokenizer, final)
            return trained, tokenizer, metrics
        runs = []
        for index in range(count):
            one = replicate_spec(spec, index)
            trained, tokenizer, metrics = self._train_one(one)
            self._save(trained, tokenizer, kept / str(index))
            runs.append(metrics | {"seed": one.params["seed"]})
        average_runs([kept / str(i) for i in range(count)], final)
        trained, tokenizer = load_trained(self, spec, final)
        return trained, tokenizer, combined_metrics(runs)

    def _train_one(self, spec: ShardSpec):
        processes = self.config.dpo.processes
        if processes > 1:
            return train_on_processes(self, spec, processes)
        return self.train(spec)

    def run_dir(self, spec: ShardSpec) -> Path:
        return Path(self.store.path(self.folder, f"run-{spec.key[:16]}"))

    def pairs(self, spec: ShardSpec):
        """The shard's pairs: a DatasetDict with `train` and, where written, `test`."""
        from datasets import load_dataset

        files = {s: self.store.path(p) for s, p in dataset_files(self.strategy).items() if s in spec.inputs["pairs"]}
        return load_dataset("parquet", data_files=files, cache_dir=str(self.run_dir(spec) / "datasets-cache"))

    def policy(self):
        """(the policy to train, its tokenizer), in float32."""
        model, tokenizer, _ = load_policy(self.config.model.backend, self.config.model.options, self.config.dpo.policy)
        return model, tokenizer

    def train(self, spec: ShardSpec, processes: int = 1, save_to: Path | None = None):
        """One DPO run on the shard's pairs: (trained model, tokenizer, metrics). With processes > 1,
        each process of a torch.distributed launch calls this alike (alignment.dpo.distributed)."""
        from alignment.dpo.trainer import train_dpo  # TRL and transformers: only where a run trains

        data = self.pairs(spec)
        model, tokenizer = self.policy()
        run = DpoOptions.model_validate(spec.params["run"])
        if run.streams != "all":
            self._score_streams(model, run.streams)
        if run.vocal_factor != "note":
            self._score_vocal_words(model, run.vocal_factor)
        trained, metrics = train_dpo(model, tokenizer, data["train"], run, self.run_dir(spec), spec.params["seed"],
                                     eval_dataset=data.get("test"), processes=processes,
                                     sharding=self.config.dpo.sharding, save_to=save_to)  # fmt: skip
        return trained, tokenizer, metrics

    def _score_streams(self, model, streams) -> None:
        """DPO compares songs on the given streams, or on those the preference declares (joint: every stream)."""
        if not hasattr(model, "scored_streams"):
            raise ValueError(f"dpo/{self.strategy}: streams {streams!r} needs a multi-stream policy (the tiny model); "
                             f"{type(model).__name__} scores one token stream")  # fmt: skip
        if streams != "preference":
            model.scored_streams = tuple(streams)
        elif self.strategy != JOINT:
            model.scored_streams = tuple(preferences()[self.strategy].streams)

    def _score_vocal_words(self, model, factor: str) -> None:
        if not hasattr(model, "vocal_factor"):
            raise ValueError(f"dpo/{self.strategy}: vocal_factor {factor!r} needs a multi-stream policy with a vocals "
                             f"stream (the tiny model); {type(model).__name__} has none")  # fmt: skip
        model.vocal_factor = factor

    def summarize(self, results, seconds: float) -> dict:
        return {key: value for result in results for key, value in result.metrics.items()}

    def _kl(self, trained, options: DpoStageOptions, data, seed: int) -> dict:
        if options.policy is not None or options.kl_samples == 0:
            return {"kl": None, "kl_stderr": None, "samples": 0}
        own = trainable_policy(self.config.model.backend, self.config.model.options)
        model, _ = own.load()
        held_out = data.get("test") or data["train"]
        conditions = round_conditions(self.store)
        prompts = sorted(set(held_out["prompt_id"]))
        picks = [prompts[i % len(prompts)] for i in range(options.kl_samples)]
        policy = trained.get_base_model() if hasattr(trained, "get_base_model") else trained
        policy.eval()
        return kl_estimate(policy, model.eval(), [conditions[p] for p in picks],
                           [derive_seed(seed, "kl", i) for i in range(len(picks))],
                           temperature=self.config.sampling.temperature, trainable=own)  # fmt: skip

    def _save(self, trained, tokenizer, final: Path) -> None:
        """Into a scratch folder, then renamed over the old model: never half a model on disk."""
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch = final.with_name(f".partial-{final.name}")
        shutil.rmtree(scratch, ignore_errors=True)
        if self.config.dpo.policy is None:
            trainable_policy(self.config.model.backend, self.config.model.options).save(trained, tokenizer, scratch)
        else:
            trained.save_pretrained(scratch)
            tokenizer.save_pretrained(scratch)
        shutil.rmtree(final, ignore_errors=True)
        scratch.rename(final)
