"""Every stage of a round, assembled here from every layer, and run in this process if wanted.

The pipeline layer defines its stages (lyrics .. scores, pairs), reward_model and alignment
theirs; parts come from the registries: one `scores/<kind>` per score kind (a kind trained in
the round is part of `reward_model`), one `dpo/<strategy>` per preference plus joint. No
Prefect here, so a notebook can `run_stage_locally("pairs", config, store)` as the flow would.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.config import RoundConfig
from pipeline.preferences import strategy_names
from pipeline.scoring.registry import score_kinds
from pipeline.stages.base import ShardResult, Stage
from pipeline.stages.names import STAGES
from pipeline.stages.runner import run_stage_in_process
from pipeline.store import RoundStore


def stage_parts(name: str) -> list[str]:
    """What runs for a stage name: its parts (scores -> scores/per, scores/similarity) or itself."""
    kinds = score_kinds().values()
    if name == "scores":
        return [k.stage for k in kinds if not k.trained_in_round]
    if name == "reward_model":
        return ["reward_model", *(k.stage for k in kinds if k.trained_in_round)]
    if name == "dpo":
        return [f"dpo/{strategy}" for strategy in strategy_names()]
    if name in STAGES:
        return [name]
    raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}")


def all_parts() -> list[str]:
    return [part for name in STAGES for part in stage_parts(name)]


def stages_until(until: str | None) -> list[str]:
    """The stage parts to run, in order, up to `until` (inclusive), or all of them."""
    if until is not None and until not in STAGES:
        raise ValueError(f"--until {until!r}: not a stage; stages are: {', '.join(STAGES)}")
    wanted = STAGES if until is None else STAGES[: STAGES.index(until) + 1]
    return [part for name in wanted for part in stage_parts(name)]


# Stages that train, merge or re-sample the policy: they need a trainable-policy plugin.
TRAINING_STAGES = ("pairs", "dpo", "merge", "sweep", "ablation")


def runnable_parts(parts: list[str], config: RoundConfig) -> tuple[list[str], dict | None]:
    """The parts that can run in order, and why the round stops before the others: a backend
    without a trainable-policy plugin runs through reward_model and stops before pairs.
    The stop is {"before": part, "backend": name, "reason": one line}, or None."""
    from pipeline.models.registry import is_trainable, not_trainable_reason

    backend = config.model.backend
    cut = next((i for i, part in enumerate(parts) if part.split("/")[0] in TRAINING_STAGES), None)
    if cut is None or is_trainable(backend):
        return list(parts), None
    return list(parts[:cut]), {"before": parts[cut], "backend": backend,
                               "reason": f"stopped before {parts[cut]}: {not_trainable_reason(backend)}"}  # fmt: skip


def record_stop(store: RoundStore, stop: dict) -> None:
    """The stop in the manifest (`stopped`), beside the stages that ran; the next run clears it."""
    from pipeline.manifest import annotate_round, now

    annotate_round(store, "stopped", {**stop, "at": now()})


def make_stage(part: str, config: RoundConfig, store: RoundStore) -> Stage:
    """The stage object for one part ("pairs", "scores/per", "dpo/joint"); ValueError for an unknown name."""
    if part not in all_parts():
        raise ValueError(f"unknown stage {part!r}; stages and parts are: {', '.join(all_parts())}")
    stage, _, sub = part.partition("/")
    if stage == "scores":
        from pipeline.scoring.registry import get_kind
        from pipeline.stages.scores import ScoreStage

        return ScoreStage(config, store, get_kind(sub))
    if stage == "dpo":
        from alignment.dpo.stage import DpoStage

        return DpoStage(config, store, sub)
    return _simple_stage(part)(config, store)


def _simple_stage(name: str) -> type[Stage]:
    """Imported on demand: alignment stages load torch, and a lyrics run need not pay for that."""
    if name == "lyrics":
        from pipeline.stages.lyrics import LyricsStage as found
    elif name == "conditions":
        from pipeline.stages.conditions import ConditionsStage as found
    elif name == "candidates":
        from pipeline.stages.candidates import CandidatesStage as found
    elif name == "reward_model":
        from reward_model.stage import RewardModelStage as found
    elif name == "pairs":
        from pipeline.stages.pairs import PairsStage as found
    elif name == "merge":
        from alignment.merge.stage import MergeStage as found
    elif name == "sweep":
        from alignment.sweep.stage import SweepStage as found
    else:
        from alignment.sweep.ablation_stage import AblationStage as found
    return found


def run_if_cached(names: list[str], config: RoundConfig, store: RoundStore,
                  report: Callable[[str, str, object], None] = lambda *event: None) -> dict | None:  # fmt: skip
    """Record a rerun of `names` in this process when every one is done under this config and
    every planned shard exists (nothing to orchestrate); None, having written nothing, otherwise.
    Planning runs in order, so a stage plans from the outputs of the stages before it.
    `report(event, stage, payload)` hears start (shard count), shard (result) and finish (record)."""
    from pipeline.manifest import open_round, read_manifest

    if not store.exists("manifest.json"):
        return None
    manifest = read_manifest(store)
    if manifest.get("config_hash") != config.digest():
        return None
    planned = []
    for name in names:
        if manifest["stages"].get(name, {}).get("status") != "done":
            return None
        stage = make_stage(name, config, store)
        specs = stage.plan()
        if not all(store.exists(spec.filename) for spec in specs):
            return None
        planned.append((stage, specs))
    open_round(store, config)
    records = {}
    for stage, specs in planned:
        report("start", stage.name, len(specs))
        records[stage.name] = run_stage_in_process(stage, lambda result, name=stage.name: report("shard", name, result), specs)
        report("finish", stage.name, records[stage.name])
    return records


def run_stage_locally(name: str, config: RoundConfig, store: RoundStore,
                      on_shard: Callable[[ShardResult], None] | None = None) -> dict:  # fmt: skip
    """Run one stage part in this process, shard after shard: for notebooks and quick checks."""
    return run_stage_in_process(make_stage(name, config, store), on_shard)
