"""The `alignment_round` flow: one subflow per stage, one task per shard.

Thin on purpose: planning, building and bookkeeping live in pipeline.stages; this module only
maps shards onto Prefect tasks (retries, concurrency), reports progress and publishes each
stage's summary as an artifact. Without PREFECT_API_URL, Prefect starts a temporary local
server; with it, runs are recorded on that server.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_image_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import flow_run as current_flow_run
from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

import data_cards
from flows.limits import ensure_limit, holding_slot, set_torch_threads, stage_limit
from flows.progress import ShardProgress
from flows.rest_record import rerun_markdown
from flows.run_record import record_flow_run
from flows.runners import ray_remote_options, ray_session, task_runner
from flows.stages import make_stage, record_stop, run_if_cached, runnable_parts, stages_until
from pipeline.allocator import keep_freed_memory
from pipeline.config import RoundConfig
from pipeline.manifest import open_round
from pipeline.stages.base import ShardResult, ShardSpec
from pipeline.stages.runner import finish_stage, start_stage
from pipeline.store import RoundStore

# Progress callbacks cannot be flow parameters (Prefect records parameters), so the CLI
# registers them here for the duration of one run.
Reporter = Callable[[str, str, object], None]  # (event, stage, payload)
_reporters: list[Reporter] = []


def _report(event: str, stage: str, payload: object) -> None:
    for reporter in _reporters:
        reporter(event, stage, payload)


# The round store is the cache: a shard whose file exists is skipped inside the task, keyed
# by the digest of its inputs. Prefect's own result cache would be a second, weaker copy.
# Retries and parallelism come from the config's `orchestration` section (`with_options` per stage).
@task(cache_policy=NO_CACHE, task_run_name="{stage_name}-shard-{spec.index}")
def build_shard(round_url: str, config: dict, stage_name: str, spec: ShardSpec, gpu_limit: str | None = None,
                torch_threads: int | None = None) -> ShardResult:  # fmt: skip
    round_config = RoundConfig.model_validate(config)
    stage = make_stage(stage_name, round_config, RoundStore(round_url))
    stage.item_progress = ShardProgress(stage_name, _report)
    if stage.store.exists(spec.filename):  # finished work holds no GPU slot
        return stage.run_shard(spec)
    if torch_threads:
        set_torch_threads(torch_threads)
    keep_freed_memory()  # this process may be a Ray worker or a deployment's, not the CLI's
    # a shard on several GPUs (dpo.processes) holds as many slots, at most all of them; a process
    # without a GPU (asked where the shard runs: a Ray worker, not the driver) holds none
    gpu = round_config.orchestration.gpu
    limit = stage_limit(round_config.orchestration, stage_name) if gpu_limit else None
    with holding_slot(limit, min(stage.gpus_per_shard, gpu.slots), gpu.lease_seconds):
        return stage.run_shard(spec)


@flow(name="stage", flow_run_name="{stage_name}")
def stage_flow(round_url: str, config: dict, stage_name: str) -> dict:
    """One stage: plan, build the missing shards, record the stage in the manifest."""
    round_config = RoundConfig.model_validate(config)
    stage = make_stage(stage_name, round_config, RoundStore(round_url))
    options, gpu_limit = round_config.orchestration.for_stage(stage_name), round_config.orchestration.gpu_limit(stage_name)
    specs, started = start_stage(stage)
    threads = options.threads_for(len(specs))
    _report("start", stage_name, len(specs))
    if gpu_limit:
        ensure_limit(gpu_limit, round_config.orchestration.gpu.slots)
    shard_task = build_shard.with_options(retries=options.retries, retry_delay_seconds=options.retry_delay_seconds)
    with ray_remote_options(options):  # Ray's num_cpus/num_gpus per shard; nothing for threads
        futures = shard_task.map(unmapped(round_url), unmapped(config), unmapped(stage_name), specs, unmapped(gpu_limit),
                                 unmapped(threads))  # fmt: skip
    results, errors = [], []
    for future in as_completed(futures):
        try:
            result = future.result()
        except Exception as exc:  # recorded in the manifest; the other shards still finish
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        results.append(result)
        _report("shard", stage_name, result)
    results.sort(key=lambda r: r.filename)
    record = finish_stage(stage, specs, results, errors, started)
    if not errors:  # cards are cheap and deterministic: a card that cannot be written fails the stage
        data_cards.write_stage_card(stage.store, stage_name)
    create_markdown_artifact(
        key=re.sub(r"[^a-z0-9-]", "-", f"{stage_name}-summary"), markdown=_summary_markdown(stage_name, record), description=f"{stage_name} stage"
    )
    if stage_name == "sweep" and not errors:
        _publish_sweep(stage.store)
    _report("finish", stage_name, record)
    if errors:
        raise RuntimeError(f"stage {stage_name} failed on {len(errors)} shard(s): {errors[0]}")
    return record


def _publish_sweep(store: RoundStore) -> None:
    """The sweep's report and plots as artifacts: the table as markdown, the plots as image links."""
    create_markdown_artifact(key="sweep-report", markdown=store.read_bytes("sweep/report.md").decode("utf-8"),
                             description="Interpolation sweep: ablation, every point, chosen weights")  # fmt: skip
    for name in ("pareto", "simplex"):
        if store.exists(f"sweep/{name}.png"):
            create_image_artifact(image_url=store.fs.unstrip_protocol(store.path(f"sweep/{name}.png")), key=f"sweep-{name}",
                                  description=f"sweep/{name}.png")  # fmt: skip


def _summary_markdown(stage_name: str, record: dict) -> str:
    lines = [f"# {stage_name}: {record['status']}", "", "| metric | value |", "|---|---|"]
    lines += [f"| rows | {record['rows']} |", f"| seconds | {record['seconds']} |"]
    lines += [f"| {k} | {v} |" for k, v in record["metrics"].items() if isinstance(v, (int, float))]
    return "\n".join(lines)


@flow(name="alignment-round")
def alignment_round(round_url: str, config: dict, stages: list[str] | None = None) -> dict:
    """Run `stages` in order (default: every stage); returns each stage's manifest record.
    A round whose every stage is done with every shard on disk is recorded in this one run
    (no stage subflows, no shard tasks) with one summary artifact. A model without a
    trainable-policy plugin stops before pairs: the reason goes to the manifest (`stopped`)."""
    store, round_config = RoundStore(round_url), RoundConfig.model_validate(config)
    stages, stop = runnable_parts(stages or stages_until(None), round_config)
    cached = run_if_cached(stages, round_config, store, _report)
    if cached is None:
        open_round(store, round_config)
    crashed = record_flow_run(store, str(current_flow_run.id))
    if crashed:
        get_run_logger().warning("the round's earlier flow run %s had lost its process: marked Crashed", crashed)
    if cached is not None:
        create_markdown_artifact(key="round-rerun", markdown=rerun_markdown(cached), description="a rerun that found every shard built")
        records = cached
    else:
        orchestration = round_config.orchestration
        records = {}
        with ray_session(orchestration):
            for name in stages:
                records[name] = stage_flow.with_options(task_runner=task_runner(orchestration, name))(round_url, config, name)
    if stop:
        record_stop(store, stop)
        _report("stopped", stop["before"], stop)
    return records


def without_heartbeats():
    """Prefect's flow-run heartbeats off for the (sub)flows run inside, unless
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY is set: each heartbeat thread costs up to 1 s at every
    (sub)flow's end, and nothing here acts on missing ones (a run lost with its process is marked
    Crashed by `flows.run_record`: by the round's next run, or for a deployment run, by the next
    worker started on its pool)."""
    heartbeats = {} if "PREFECT_FLOWS_HEARTBEAT_FREQUENCY" in os.environ else {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    return temporary_settings(updates=heartbeats)


def run_round(
    round_url: str, config: RoundConfig, stages: list[str] | None = None, reporter: Reporter | None = None
) -> dict:
    """Entry point for the CLI and notebooks."""
    stages = stages or stages_until(None)
    if reporter:
        _reporters.append(reporter)
    try:
        if not PREFECT_API_URL.value():  # a finished round needs no temporary server to be told so
            names, stop = runnable_parts(stages, config)
            records = run_if_cached(names, config, RoundStore(round_url), _report)
            if records is not None:
                if stop:
                    record_stop(RoundStore(round_url), stop)
                    _report("stopped", stop["before"], stop)
                return records
        with without_heartbeats():
            return alignment_round(round_url, config.resolved(), stages)
    finally:
        if reporter:
            _reporters.remove(reporter)
