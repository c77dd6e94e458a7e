"""Stage bookkeeping shared by every executor: start, finish, stale-shard clean-up, manifest."""

from __future__ import annotations

import importlib
import posixpath
import time
from collections.abc import Callable

from pipeline.config import STAGES, RoundConfig
from pipeline.manifest import update_stage
from pipeline.stages.base import ShardResult, ShardSpec, Stage
from pipeline.store import RoundStore


# A stage with parts runs them in order, each its own manifest record and output folder.
PARTS = {
    "scores": ("scores/per", "scores/similarity"),
    "reward_model": ("reward_model", "scores/reward"),
    "dpo": ("dpo/lyrics", "dpo/prompt", "dpo/musicality", "dpo/joint"),
}
# Stages of higher layers, named by import path so that this layer never imports them.
UPPER_STAGES = {
    "reward_model": "reward_model.stage:RewardModelStage",
    "scores/reward": "reward_model.stage:RewardScoreStage",
    "dpo/lyrics": "alignment.dpo.stage:DpoLyricsStage",
    "dpo/prompt": "alignment.dpo.stage:DpoPromptStage",
    "dpo/musicality": "alignment.dpo.stage:DpoMusicalityStage",
    "dpo/joint": "alignment.dpo.stage:DpoJointStage",
    "merge": "alignment.sweep.stage:MergeStage",
    "sweep": "alignment.sweep.stage:SweepStage",
}


def stage_parts(name: str) -> list[str]:
    """What runs for a stage name: its parts (scores -> scores/per, scores/similarity) or itself."""
    return list(PARTS.get(name, (name,)))


def stage_class(name: str) -> type[Stage]:
    from pipeline.stages.candidates import CandidatesStage
    from pipeline.stages.conditions import ConditionsStage
    from pipeline.stages.lyrics import LyricsStage
    from pipeline.stages.pairs import PairsStage
    from pipeline.stages.scores import PerStage, SimilarityStage

    built = {"lyrics": LyricsStage, "conditions": ConditionsStage, "candidates": CandidatesStage,
             "scores/per": PerStage, "scores/similarity": SimilarityStage, "pairs": PairsStage}  # fmt: skip
    if name in UPPER_STAGES:
        module, _, cls = UPPER_STAGES[name].partition(":")
        return getattr(importlib.import_module(module), cls)
    known = set(STAGES) | {part for parts in PARTS.values() for part in parts}
    if name not in known:
        raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}")
    if name not in built:
        raise NotImplementedError(f"stage {name!r} is not built yet; built stages: {', '.join(built)}")
    return built[name]


def is_built(name: str) -> bool:
    try:
        return all(stage_class(part) for part in stage_parts(name))
    except NotImplementedError:
        return False


def stages_until(until: str | None) -> list[str]:
    """The stage parts to run, in order, up to `until` (inclusive) or as far as stages are built."""
    built = [name for name in STAGES if is_built(name)]
    if until is None:
        wanted = [name for name in STAGES[: len(built)] if name in built]
    elif until not in STAGES:
        raise ValueError(f"--until {until!r}: not a stage; stages are: {', '.join(STAGES)}")
    else:
        wanted = list(STAGES[: STAGES.index(until) + 1])
        missing = [s for s in wanted if s not in built]
        if missing:
            raise NotImplementedError(f"--until {until}: stage(s) {', '.join(missing)} not built yet; built: {', '.join(built)}")
    return [part for name in wanted for part in stage_parts(name)]


def start_stage(stage: Stage) -> tuple[list[ShardSpec], float]:
    """Plan, clear temporaries a crash left, and mark the stage running."""
    started = time.perf_counter()
    try:
        specs = stage.plan()
    except Exception as exc:  # e.g. an unreachable LLM endpoint: say so in the manifest, write nothing else
        update_stage(stage.store, stage.name, status="failed", errors=[f"{type(exc).__name__}: {exc}"])
        raise
    stage.store.remove_temporaries(stage.name)
    update_stage(stage.store, stage.name, status="running", shards=len(specs))
    return specs, started


def finish_stage(stage: Stage, specs: list[ShardSpec], results: list[ShardResult], errors: list[str], started: float) -> dict:
    """Record the stage in the manifest; on success drop shards no longer in the plan."""
    store = stage.store
    seconds = round(time.perf_counter() - started, 3)
    planned = {spec.filename for spec in specs}
    fields = {
        "rows": sum(r.rows for r in results),
        "seconds": seconds,
        "inputs": {posixpath.basename(s.filename): {"inputs": s.inputs, "key": s.key} for s in specs},
        "metrics": {
            **stage.summarize(results, seconds),
            "shards_built": sum(not r.skipped for r in results),
            "shards_skipped": sum(r.skipped for r in results),
        },
    }
    if errors:
        return update_stage(store, stage.name, status="failed", errors=errors, **fields)
    shards = {f for f in store.list_files(stage.name, ".parquet") if posixpath.basename(f).startswith("shard-")}
    for stale in shards - planned:  # other Parquet files beside the shards (sweep/results.parquet) are outputs
        store.remove(stale)
    outputs = {posixpath.basename(f): store.file_digest(f) for f in sorted(planned)}
    return update_stage(store, stage.name, status="done", errors=[], outputs=outputs, **fields)


def run_stage_locally(
    name: str, config: RoundConfig, store: RoundStore, on_shard: Callable[[ShardResult], None] | None = None
) -> dict:
    """Run one stage in this process, shard after shard: for notebooks and quick checks."""
    stage = stage_class(name)(config, store)
    specs, started = start_stage(stage)
    results, errors = [], []
    for spec in specs:
        try:
            result = stage.run_shard(spec)
        except Exception as exc:  # one bad shard must not hide the others' results
            errors.append(f"{spec.filename}: {type(exc).__name__}: {exc}")
            continue
        results.append(result)
        if on_shard:
            on_shard(result)
    return finish_stage(stage, specs, results, errors, started)

