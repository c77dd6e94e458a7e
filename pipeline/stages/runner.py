"""Stage bookkeeping shared by every executor: start, finish, stale-shard clean-up, manifest.

Which stages a round has, and the classes that build them, are assembled above every layer
(`flows.stages`); this module only runs a stage it is given.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable

from pipeline.manifest import update_stage
from pipeline.stages.base import ShardResult, ShardSpec, Stage


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


def run_stage_in_process(stage: Stage, on_shard: Callable[[ShardResult], None] | None = None) -> dict:
    """Run one stage in this process, shard after shard: for notebooks and quick checks."""
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

