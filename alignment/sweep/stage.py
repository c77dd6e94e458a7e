"""The merge and sweep stages: DNI merges of the per-strategy DPO models, and the weight sweep.

merge: one shard per named point of `sweep.named` (default `dni`: equal weights), merged by
  `alignment.merge.merge` into `merge/<name>/` with its merge manifest.
sweep: one shard per point — the simplex grid over the trained strategies, the named points,
  `base` (the policy without DPO) and `joint` (the joint-training baseline). A point is merged
  when its shard is built (grid points into a scratch folder, dropped after scoring), sampled on
  the held-out prompts with the same seeds as every other point, and scored with the round's
  three scorers; the shard's rows are its songs' scores. When all shards are in, the stage writes
  `sweep/results.parquet`, the Pareto front and its hypervolume, the chosen point, plots and
  `sweep/report.md` (see sweep_report.py).
Options come from the config's `sweep` mapping (`SweepOptions`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alignment.sweep.evaluate import PolicyEvaluator, summarize
from alignment.policy import policy_folder
from alignment.sweep.grid import point_name, simplex_grid
from pipeline.manifest import read_manifest
from pipeline.stages.base import ShardSpec, Stage
from pipeline.stages.pairs import dataset_files
from pipeline.stages.scores import round_conditions

AXES = ("lyrics", "prompt", "musicality")
SONG_SCHEMA = pa.schema([("candidate_id", pa.string()), ("prompt_id", pa.string()), ("seed", pa.int64()),
                         ("per", pa.float64()), ("similarity", pa.float64()), ("reward", pa.float64()),
                         ("error", pa.string())])  # fmt: skip


class SweepOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: float = Field(0.5, gt=0, le=1, description="Grid step on the weight simplex (0.5: vertices and midpoints).")
    named: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {"dni": {s: 1 / 3 for s in AXES}},
        description="Named weight points, merged by the merge stage and evaluated by the sweep.",
    )
    form: Literal["linear", "task_vector"] = Field(
        "linear", description="linear: θ = Σ αᵢθᵢ; task_vector: θ₀ + Σ αᵢ(θᵢ − θ₀) with θ₀ the policy before DPO."
    )
    prompts: int = Field(8, ge=1, description="Held-out prompts to sample (the pairs' test split first, then train).")
    seeds: int = Field(2, ge=1, description="Songs per prompt and point; the same seeds for every point.")
    utility: dict[str, float] = Field(
        default_factory=lambda: {"per": 1.0, "similarity": 1.0, "reward": 1.0},
        description="Weights of the declared utility (metrics scaled to [0, 1] over the sweep) that picks the chosen point.",
    )


def sweep_options(config) -> SweepOptions:
    try:
        return SweepOptions.model_validate(config.sweep)
    except ValidationError as exc:
        raise ValueError("; ".join(f"sweep.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None


def trained_models(store) -> dict[str, str]:
    """Strategy -> its DPO model folder (round-relative), for every strategy whose run trained."""
    stages = read_manifest(store)["stages"]
    out = {}
    for strategy in (*AXES, "joint"):
        record = stages.get(f"dpo/{strategy}", {})
        if record.get("status") == "done" and record.get("metrics", {}).get("status") == "trained":
            out[strategy] = f"dpo/{strategy}/model"
    return out


def model_identities(store, models: dict[str, str]) -> dict[str, dict]:
    """What identifies each trained model: its DPO record's output digests (a retrained model has
    a new shard key, hence new outputs; file sizes alone would not tell two runs apart)."""
    stages = read_manifest(store)["stages"]
    return {s: stages[f"dpo/{s}"]["outputs"] for s in models}


def merge_point(store, models: dict[str, str], weights: dict[str, float], form: str, base: Path, out: Path):
    """Merge the DPO models of the strategies in `weights` (zero weights left out) into `out`."""
    from alignment.merge.dni import merge

    used = {s: w for s, w in weights.items() if w != 0}
    missing = sorted(set(used) - set(models))
    if missing:
        raise ValueError(f"no trained DPO model for {', '.join(missing)} (see the dpo stage's records)")
    paths = [store.path(models[s]) for s in used]
    if len(paths) == 1:  # a vertex of the simplex is that model itself
        return Path(paths[0])
    task_vectors = form == "task_vector" or (Path(paths[0]) / "adapter_config.json").exists()
    merge(paths, list(used.values()), out, base=base if task_vectors else None)
    return out


class MergeStage(Stage):
    name = "merge"

    def plan(self) -> list[ShardSpec]:
        options = sweep_options(self.config)
        models = trained_models(self.store)
        base = policy_folder(self.config.model.backend, self.config.model.options, self.config.dpo.get("policy"))
        inputs = {"models": model_identities(self.store, models)}
        return [ShardSpec(self.name, i, inputs, {"point": name, "weights": weights, "form": options.form, "base": str(base)})
                for i, (name, weights) in enumerate(sorted(options.named.items()))]  # fmt: skip

    def build_shard(self, spec: ShardSpec) -> tuple[pa.Table, dict]:
        name, weights = spec.params["point"], spec.params["weights"]
        out = Path(self.store.path("merge", name))
        shutil.rmtree(out, ignore_errors=True)
        merged = merge_point(self.store, trained_models(self.store), weights, spec.params["form"], Path(spec.params["base"]), out)
        if merged != out:
            shutil.copytree(merged, out)
        rows = [{"point": name, "strategy": s, "weight": float(w)} for s, w in weights.items()]
        schema = pa.schema([("point", pa.string()), ("strategy", pa.string()), ("weight", pa.float64())])
        return pa.Table.from_pylist(rows, schema=schema), {"point": name, "folder": f"merge/{name}"}

    def summarize(self, results, seconds: float) -> dict:
        return {"points": {r.metrics["point"]: r.metrics["folder"] for r in results}}


class SweepStage(Stage):
    name = "sweep"

    def points(self) -> dict[str, dict]:
        options = sweep_options(self.config)
        models = trained_models(self.store)
        axes = [s for s in AXES if s in models]
        if len(axes) < 2:
            raise ValueError(f"sweep: needs DPO models of at least two strategies, trained: {sorted(models) or 'none'}")
        points = {"base": {"kind": "base"}}
        for weights in simplex_grid(axes, options.step):
            points[point_name(weights)] = {"kind": "grid", "weights": weights}
        for name, weights in sorted(options.named.items()):
            points[name] = {"kind": "named", "weights": {s: float(weights.get(s, 0.0)) for s in axes}}
        if "joint" in models:
            points["joint"] = {"kind": "joint"}
        return points

    def plan(self) -> list[ShardSpec]:
        options = sweep_options(self.config)
        models = trained_models(self.store)
        record = read_manifest(self.store)["stages"].get("reward_model", {})
        inputs = {"models": model_identities(self.store, models),
                  "reward_model": record.get("outputs"), "prompts": self.prompt_ids(options)}  # fmt: skip
        params = {"form": options.form, "seeds": options.seeds, "seed": self.config.seed,
                  "policy": {"model": self.config.model.model_dump(mode="json"), "dpo_policy": self.config.dpo.get("policy")},
                  "sampling": self.config.sampling.model_dump(mode="json"),
                  "scoring": self.config.scoring.model_dump(mode="json")}  # fmt: skip
        return [ShardSpec(self.name, i, inputs, {**params, "point": name, **spec})
                for i, (name, spec) in enumerate(self.points().items())]  # fmt: skip

    def prompt_ids(self, options: SweepOptions) -> list[str]:
        """Held-out prompts first (the lyrics pairs' test split, else any strategy's), then others, sorted."""
        held_out = set()
        for strategy in (*AXES, "joint"):
            path = dataset_files(strategy)["test"]
            if self.store.exists(path):
                held_out |= set(self.store.read_table(path, ["prompt_id"]).column("prompt_id").to_pylist())
        rest = sorted(set(round_conditions(self.store)) - held_out)
        return (sorted(held_out) + rest)[: options.prompts]

    def build_shard(self, spec: ShardSpec) -> tuple[pa.Table, dict]:
        p = spec.params
        conditions = round_conditions(self.store)
        evaluator = PolicyEvaluator(self.config, Path(self.store.path("reward_model/model")),
                                    [conditions[c] for c in spec.inputs["prompts"]], p["seeds"], p["seed"])  # fmt: skip
        scratch = Path(self.store.path("sweep", f".work-{p['point']}"))
        shutil.rmtree(scratch, ignore_errors=True)
        checkpoint = self.checkpoint(p, scratch / "model")
        songs = evaluator.evaluate(checkpoint, scratch / "songs")
        shutil.rmtree(scratch, ignore_errors=True)
        return pa.Table.from_pandas(songs, schema=SONG_SCHEMA, preserve_index=False), {"point": p["point"], **summarize(songs)}

    def checkpoint(self, params: dict, scratch: Path) -> Path:
        models = trained_models(self.store)
        base = policy_folder(self.config.model.backend, self.config.model.options, self.config.dpo.get("policy"))
        if params["kind"] == "base":
            return base
        if params["kind"] == "joint":
            return Path(self.store.path(models["joint"]))
        if params["kind"] == "named" and self.store.exists(f"merge/{params['point']}/config.json"):
            return Path(self.store.path("merge", params["point"]))
        return merge_point(self.store, models, params["weights"], params["form"], base, scratch)

    def summarize(self, results, seconds: float) -> dict:
        from alignment.sweep.report import write_sweep_report

        points = self.points()
        songs = {r.metrics["point"]: self.store.read_table(r.filename).to_pandas() for r in results}
        return write_sweep_report(self.store, points, songs, sweep_options(self.config))
