"""The sweep stage: the weight sweep over the per-preference DPO models.

One shard per point — the simplex grid over the trained preferences, the named points, `base`
(the policy without DPO) and `joint` (the joint-training baseline). A point is merged when its
shard is built (grid points into a scratch folder, dropped after scoring), sampled on the
held-out prompts with the same seeds as every other point, and scored for every preference's
metric; the shard's rows are its songs' scores. When all shards are in, the stage writes
`sweep/results.parquet`, the Pareto front and its hypervolume, the chosen point, plots and
`sweep/report.md` (alignment/sweep/report.py). Options: the config's `sweep` section
(`alignment.sweep.options.SweepOptions`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa

from alignment.merge.stage import merge_point, model_identities, trained_models
from alignment.policy import policy_folder
from alignment.sweep.evaluate import PolicyEvaluator, metric_directions, summarize
from alignment.sweep.grid import point_name, simplex_grid
from alignment.sweep.options import SweepOptions
from pipeline.conditions import round_conditions
from pipeline.models.checkpoint import checkpoint_option
from pipeline.pairs.dataset import dataset_files
from pipeline.preferences import JOINT, preferences, score_tables, strategy_names
from pipeline.scoring.registry import get_kind
from pipeline.stages.base import ShardSpec, Stage


CHOSEN_DIR = "sweep/chosen"


def saved_chosen_point(store) -> str | None:
    """The point the saved chosen model (sweep/chosen/) was made from, if one is saved."""
    path = f"{CHOSEN_DIR}/chosen.json"
    return json.loads(store.read_bytes(path))["point"] if store.exists(path) else None


def song_schema() -> pa.Schema:
    """A sweep shard's rows: one per song, one column per preference's metric."""
    return pa.schema([("candidate_id", pa.string()), ("prompt_id", pa.string()), ("seed", pa.int64()),
                      *[(metric, pa.float64()) for metric in metric_directions()], ("error", pa.string())])  # fmt: skip


class SweepStage(Stage):
    name = "sweep"

    def points(self) -> dict[str, dict]:
        options: SweepOptions = self.config.sweep
        models = trained_models(self.store)
        axes = [s for s in preferences() if s in models]
        if len(axes) < 2:
            raise ValueError(f"sweep: needs DPO models of at least two strategies, trained: {sorted(models) or 'none'}")
        points = {"base": {"kind": "base"}}
        for weights in simplex_grid(axes, options.step):
            points[point_name(weights)] = {"kind": "grid", "weights": weights}
        for name, weights in sorted(options.named.items()):
            points[name] = {"kind": "named", "weights": {s: float(weights.get(s, 0.0)) for s in axes}}
        if JOINT in models:
            points[JOINT] = {"kind": "joint"}
        return points

    def plan(self) -> list[ShardSpec]:
        checkpoint_option(self.config.model.backend)  # a model that cannot sample other weights is refused here, by name
        options: SweepOptions = self.config.sweep
        models = trained_models(self.store)
        inputs = {"models": model_identities(self.store, models), "prompts": self.prompt_ids(options)}
        for table in score_tables():  # a scorer trained in the round (reward)
            inputs |= get_kind(table).extra_inputs(self.store)
        params = {"form": options.form, "seeds": options.seeds, "seed": self.config.seed,
                  "policy": {"model": self.config.model.model_dump(mode="json"), "dpo_policy": self.config.dpo.policy},
                  "sampling": self.config.sampling.model_dump(mode="json"),
                  "scoring": self.config.scoring.model_dump(mode="json")}  # fmt: skip
        return [ShardSpec(self.name, i, inputs, {**params, "point": name, **spec})
                for i, (name, spec) in enumerate(self.points().items())]  # fmt: skip

    def prompt_ids(self, options: SweepOptions) -> list[str]:
        """Held-out prompts first (the lyrics pairs' test split, else any strategy's), then others, sorted."""
        held_out = set()
        for strategy in strategy_names():
            path = dataset_files(strategy)["test"]
            if self.store.exists(path):
                held_out |= set(self.store.read_table(path, ["prompt_id"]).column("prompt_id").to_pylist())
        rest = sorted(set(round_conditions(self.store)) - held_out)
        return (sorted(held_out) + rest)[: options.prompts]

    def build_shard(self, spec: ShardSpec) -> tuple[pa.Table, dict]:
        p = spec.params
        conditions = round_conditions(self.store)
        evaluator = PolicyEvaluator(self.config, self.store, [conditions[c] for c in spec.inputs["prompts"]],
                                    p["seeds"], p["seed"])  # fmt: skip
        scratch = Path(self.store.path("sweep", f".work-{p['point']}"))
        shutil.rmtree(scratch, ignore_errors=True)
        checkpoint = self.checkpoint(p, scratch / "model")
        songs = evaluator.evaluate(checkpoint, scratch / "songs")
        shutil.rmtree(scratch, ignore_errors=True)
        return pa.Table.from_pandas(songs, schema=song_schema(), preserve_index=False), {"point": p["point"], **summarize(songs)}

    def checkpoint(self, params: dict, scratch: Path) -> Path:
        models = trained_models(self.store)
        base = policy_folder(self.config.model.backend, self.config.model.options, self.config.dpo.policy)
        if params["kind"] == "base":
            return base
        if params["kind"] == "joint":
            return Path(self.store.path(models[JOINT]))
        if params["kind"] == "named" and self.store.exists(f"merge/{params['point']}/config.json"):
            return Path(self.store.path("merge", params["point"]))
        return merge_point(self.store, models, params["weights"], params["form"], base, scratch)

    def summarize(self, results, seconds: float) -> dict:
        from alignment.sweep.report import write_sweep_report

        points = self.points()
        songs = {r.metrics["point"]: self.store.read_table(r.filename).to_pandas() for r in results}
        metrics = write_sweep_report(self.store, points, songs, self.config.sweep)
        chosen = points[metrics["chosen"]] | {"point": metrics["chosen"], "form": self.config.sweep.form}
        if any(not r.skipped for r in results) or saved_chosen_point(self.store) != chosen["point"]:  # else it is on disk
            self.save_chosen(chosen)
        return metrics | {"chosen_model": CHOSEN_DIR}

    def save_chosen(self, params: dict) -> None:
        """The chosen point as a model folder (sweep/chosen/), loadable as `model.options.checkpoint`
        of the next round; built in a scratch folder and renamed into place."""
        final = Path(self.store.path(CHOSEN_DIR))
        scratch = final.with_name(".partial-chosen")
        shutil.rmtree(scratch, ignore_errors=True)
        source = self.checkpoint(params, scratch)
        if source != scratch:
            shutil.copytree(source, scratch)
        (scratch / "chosen.json").write_text(json.dumps({k: params.get(k) for k in ("point", "kind", "weights", "form")},
                                                        indent=2, sort_keys=True) + "\n")  # fmt: skip
        shutil.rmtree(final, ignore_errors=True)
        scratch.rename(final)
