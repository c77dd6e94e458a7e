"""The task runner a stage's shards run on: threads in this process, or Ray tasks through
prefect-ray's RayTaskRunner (an existing cluster by address, or a local one), with each shard's
Ray resources (num_cpus, num_gpus) from the config."""

from __future__ import annotations

import contextlib

from prefect.task_runners import ThreadPoolTaskRunner

from flows import REPO_ROOT
from pipeline.orchestration import OrchestrationConfig, ShardDefaults


def task_runner(orchestration: OrchestrationConfig, part: str):
    if orchestration.task_runner == "thread":
        return ThreadPoolTaskRunner(max_workers=orchestration.for_stage(part).parallelism)
    from prefect_ray import RayTaskRunner

    return RayTaskRunner(address=orchestration.ray.address)  # joins the round's Ray session (ray_session)


@contextlib.contextmanager
def ray_session(orchestration: OrchestrationConfig):
    """One Ray connection for the whole round (with `task_runner: ray`), so its workers, and the
    modules they imported, serve every stage; each stage's RayTaskRunner joins it."""
    if orchestration.task_runner != "ray":
        yield
        return
    import ray

    # Ray workers import flows.* and the layers: this checkout must be on their path
    ray.init(address=orchestration.ray.address, runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}}, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def ray_remote_options(options: ShardDefaults):
    """Ray remote options for the shards mapped inside the block (ignored by the thread runner)."""
    resources = {k: v for k, v in {"num_cpus": options.num_cpus, "num_gpus": options.num_gpus}.items() if v is not None}
    if not resources:
        return contextlib.nullcontext()
    from prefect_ray.context import remote_options

    return remote_options(**resources)
