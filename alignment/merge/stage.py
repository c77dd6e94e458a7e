"""The merge stage: DNI merges of the per-preference DPO models at the named weight points.

One shard per named point of `sweep.named` (default `dni`: equal weights over every preference),
merged by `alignment.merge.dni.merge` into `merge/<name>/` with its merge manifest. The helpers
here (which DPO models trained, how to merge one point) serve the sweep stage too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa

from alignment.policy import policy_folder
from pipeline.manifest import read_manifest
from pipeline.preferences import strategy_names
from pipeline.stages.base import ShardSpec, Stage


def trained_models(store) -> dict[str, str]:
    """Strategy -> its DPO model folder (round-relative), for every strategy whose run trained."""
    stages = read_manifest(store)["stages"]
    out = {}
    for strategy in strategy_names():
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
        options = self.config.sweep
        models = trained_models(self.store)
        base = policy_folder(self.config.model.backend, self.config.model.options, self.config.dpo.policy)
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
