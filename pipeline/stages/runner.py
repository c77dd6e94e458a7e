"""Stage bookkeeping shared by every executor: start, finish, stale-shard clean-up, manifest.

Which stages a round has, and the classes that build them, are assembled above every layer
(`flows.stages`); this module only runs a stage it is given.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable

from pipeline.manifest import now, read_manifest, update_stage
from pipeline.report import write_round_report
from pipeline.stages.base import ShardResult, ShardSpec, Stage


def start_stage(stage: Stage, specs: list[ShardSpec] | None = None) -> tuple[list[ShardSpec], float]:
    """Plan (unless the plan is given), clear temporaries a crash left, and mark the stage running."""
    started = time.perf_counter()
    try:
        specs = stage.plan() if specs is None else specs
    except Exception as exc:  # e.g. an unreachable LLM endpoint: say so in the manifest, write nothing else
        update_stage(stage.store, stage.name, status="failed", errors=[f"{type(exc).__name__}: {exc}"])
        raise
    stage.store.remove_temporaries(stage.name)
    # finish_stage trusts an earlier record only if that run finished
    last_status = read_manifest(stage.store)["stages"].get(stage.name, {}).get("status")
    update_stage(stage.store, stage.name, status="running", shards=len(specs), last_status=last_status)
    return specs, started


def finish_stage(stage: Stage, specs: list[ShardSpec], results: list[ShardResult], errors: list[str], started: float) -> dict:
    """Record the stage in the manifest (and rewrite report.md); on success drop shards no longer in the plan.

    A rerun that builds nothing and finds the same outputs keeps the record of the run that built
    them (its `seconds`, its metrics) and notes itself apart under `rerun`."""
    store = stage.store
    seconds = round(time.perf_counter() - started, 3)
    planned = {spec.filename for spec in specs}
    built = sum(not r.skipped for r in results)
    inputs = {posixpath.basename(s.filename): {"inputs": s.inputs, "key": s.key} for s in specs}
    if errors:
        record = update_stage(store, stage.name, status="failed", errors=errors, drop=("rerun", "last_status"),
                              **_build_fields(stage, results, inputs, seconds, built))  # fmt: skip
        write_round_report(store)
        return record
    shards = {f for f in store.list_files(stage.name, ".parquet") if posixpath.basename(f).startswith("shard-")}
    for stale in shards - planned:  # other Parquet files beside the shards (sweep/results.parquet) are outputs
        store.remove(stale)
    outputs = {posixpath.basename(f): store.file_digest(f) for f in sorted(planned)}
    previous = read_manifest(store)["stages"].get(stage.name, {})
    fields = {"status": "done", "errors": [], "outputs": outputs}
    if built == 0 and previous.get("outputs") == outputs and previous.get("inputs") == inputs and "seconds" in previous:
        # nothing built: the record keeps the build's time and notes this run apart; under the
        # same config the build's metrics stand too (only the shard counts describe this run)
        fields["rerun"] = {"seconds": seconds, "shards_skipped": len(results), "at": now()}
        if previous.get("last_status") == "done":
            fields["metrics"] = {**previous["metrics"], "shards_built": 0, "shards_skipped": len(results)}
        else:
            fields["metrics"] = _build_fields(stage, results, inputs, previous["seconds"], built)["metrics"]
        record = update_stage(store, stage.name, drop=("last_status",), **fields)
    else:
        record = update_stage(store, stage.name, drop=("rerun", "last_status"), **fields,
                              **_build_fields(stage, results, inputs, seconds, built))  # fmt: skip
    write_round_report(store)
    return record


def _build_fields(stage: Stage, results: list[ShardResult], inputs: dict, seconds: float, built: int) -> dict:
    metrics = {**stage.summarize(results, seconds), "shards_built": built, "shards_skipped": len(results) - built}
    gpus = sorted({r.gpus for r in results if r.gpus is not None})
    if gpus:  # shards spread over GPUs (Ray's num_gpus): which ones the built shards were given
        metrics["gpus"] = gpus
    return {"rows": sum(r.rows for r in results), "seconds": seconds, "inputs": inputs, "metrics": metrics}


def run_stage_in_process(stage: Stage, on_shard: Callable[[ShardResult], None] | None = None,
                         specs: list[ShardSpec] | None = None) -> dict:  # fmt: skip
    """Run one stage in this process, shard after shard: for notebooks, quick checks and cached reruns."""
    specs, started = start_stage(stage, specs)
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

