"""The `orchestration` and `rounds` sections: how the flows run a round's shards, and where a
deployment's scheduled rounds go. Neither changes what a shard contains, so both are left out of
the config hash (a round rerun with more threads is the same round)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.stages.names import STAGES

StageName = Literal[tuple(STAGES)]  # type: ignore[valid-type]
GPU_STAGES = ["candidates", "scores", "dpo", "sweep", "ablation"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShardRunOptions(_Strict):
    """One stage's overrides; its unset keys take `orchestration.shards`."""

    parallelism: int | None = Field(None, ge=1, description="Shards of the stage built at once (threads, or Ray tasks).")
    retries: int | None = Field(None, ge=0, description="Retries of a failed shard before the stage records it failed.")
    retry_delay_seconds: float | None = Field(None, ge=0, description="Seconds between a shard's retries.")
    num_cpus: float | None = Field(None, gt=0, description="With the ray task runner: CPUs a shard reserves (Ray remote option).")
    num_gpus: float | None = Field(None, ge=0, description="With the ray task runner: GPUs a shard reserves (Ray remote option).")
    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads while a shard of the stage builds.")


class ShardDefaults(_Strict):
    """How every stage's shards run unless `orchestration.stages.<stage>` says otherwise."""

    parallelism: int = Field(2, ge=1, description="Shards of a stage built at once (threads, or Ray tasks).")
    retries: int = Field(2, ge=0, description="Retries of a failed shard before the stage records it failed.")
    retry_delay_seconds: float = Field(2.0, ge=0, description="Seconds between a shard's retries.")
    num_cpus: float | None = Field(None, gt=0, description="With the ray task runner: CPUs a shard reserves (Ray's default: 1).")
    num_gpus: float | None = Field(None, ge=0, description="With the ray task runner: GPUs a shard reserves (Ray's default: 0).")
    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads while a shard builds; null: "
                                      "$OMP_NUM_THREADS if set, else the CPU cores shared by the shards built at once "
                                      "(at least 1). More threads than free cores slow small models down many times.")  # fmt: skip

    def threads_for(self, shards: int) -> int | None:
        """torch threads per shard when a stage builds `shards` shards: the set value, None where
        $OMP_NUM_THREADS pins them, else the cores divided among the shards that run at once."""
        if self.torch_threads:
            return self.torch_threads
        if os.environ.get("OMP_NUM_THREADS"):
            return None
        return max(1, (os.cpu_count() or 1) // max(1, min(self.parallelism, shards)))


class GpuLimitOptions(_Strict):
    """A Prefect global concurrency limit shared by every round recorded on the same server."""

    name: str | None = Field("songpref-gpu", min_length=1, description="The limit's name; null = no limit. Each shard of a GPU-bound "
                             "stage holds one slot while it builds (a finished shard takes none); a busy limit makes it wait, never fail.")  # fmt: skip
    slots: int = Field(1, ge=1, description="Slots of the limit: the GPUs the rounds share (set on the server when a stage starts).")
    stages: list[StageName] = Field(default_factory=lambda: list(GPU_STAGES), description="The GPU-bound stages (all their parts).")
    lease_seconds: float = Field(300.0, ge=60, le=86_400, description="A held slot's lease, renewed while its shard builds: after a "
                                 "crash, a running server frees the slot when it runs out (a temporary server's slots are freed "
                                 "when the next stage starts).")  # fmt: skip
    only_with_gpu: bool = Field(True, description="Hold a slot only in a process that sees a CUDA device. Without one the "
                                "limit guards no GPU, and holding it would build a CPU round's shards one at a time.")  # fmt: skip


class RayOptions(_Strict):
    """Where shards run with `task_runner: ray`."""

    address: str | None = Field(None, description="An existing Ray cluster (`ray://HOST:10001` or `HOST:6379`, or `auto`); "
                                "null starts a local one for the run.")  # fmt: skip


class OrchestrationConfig(_Strict):
    """Shard parallelism, retries and the GPU limit, per stage (used by the flows; no effect on outputs)."""

    task_runner: Literal["thread", "ray"] = Field("thread", description="Threads in this process (`parallelism` at once per "
                                                   "stage), or Ray tasks through prefect-ray's RayTaskRunner.")  # fmt: skip
    ray: RayOptions = Field(default_factory=RayOptions, description="The Ray cluster for `task_runner: ray`.")
    shards: ShardDefaults = Field(default_factory=ShardDefaults, description="Defaults for every stage.")
    stages: dict[StageName, ShardRunOptions] = Field(default_factory=dict, description="Per-stage overrides, e.g. candidates: {parallelism: 1}.")
    gpu: GpuLimitOptions = Field(default_factory=GpuLimitOptions, description="The GPU concurrency limit of the GPU-bound stages.")

    def for_stage(self, part: str) -> ShardDefaults:
        """The resolved options of a stage or stage part ("scores/per" takes those of "scores")."""
        own = self.stages.get(part.split("/")[0])
        merged = self.shards.model_dump()
        merged.update({k: v for k, v in (own.model_dump() if own else {}).items() if v is not None})
        return ShardDefaults(**merged)

    def gpu_limit(self, part: str) -> str | None:
        """The concurrency limit a shard of this stage part holds while it builds, if any."""
        return self.gpu.name if part.split("/")[0] in self.gpu.stages else None


class RoundsConfig(_Strict):
    """Rounds run by a deployment (`songpref deploy`): where they go and whether they chain."""

    directory: str = Field("rounds", min_length=1, description="Local folder of the deployment's rounds: each run makes "
                           "<directory>/<deployment>-<iteration>, never reusing one.")  # fmt: skip
    chain: bool = Field(False, description="Semi-online: each run's parent is the deployment's latest finished round "
                        "(it samples from and starts DPO at that round's chosen policy).")  # fmt: skip
