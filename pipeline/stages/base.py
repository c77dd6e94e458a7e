"""A stage is a plan of shards plus a function that builds one shard.

Executors (the Prefect flows, or `run_stage_locally` in a notebook) decide how shards run;
the stage only says what each shard reads and how to build its rows. A shard's file name
carries the digest of everything it depends on, so a file that exists is finished work.
"""

from __future__ import annotations

import json
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import RoundConfig
from pipeline.digest import canonical_json, digest_json
from pipeline.store import RoundStore

METRICS_KEY = b"songpref.metrics"


@dataclass(frozen=True)
class ShardSpec:
    stage: str
    index: int
    inputs: dict  # JSON-able: what the shard reads, with digests
    params: dict  # JSON-able: the settings that shape its rows

    @property
    def key(self) -> str:
        return digest_json({"stage": self.stage, "index": self.index, "inputs": self.inputs, "params": self.params})

    @property
    def filename(self) -> str:
        return f"{self.stage}/shard-{self.index:05d}-{self.key[:16]}.parquet"


@dataclass
class ShardResult:
    filename: str
    rows: int
    seconds: float
    skipped: bool  # already finished by an earlier run
    metrics: dict = field(default_factory=dict)
    # The GPUs the building process was given (CUDA_VISIBLE_DEVICES, set per shard by Ray's
    # num_gpus); None when unset or skipped. Where a shard ran never changes its bytes.
    gpus: str | None = None


class Stage(ABC):
    name: str
    # Per-shard metrics that time the run rather than describe the data: reported for a shard just
    # built, never stored in its file, so identical inputs give byte-identical shards.
    wall_clock_metrics: tuple[str, ...] = ()
    # GPUs one shard uses at once (the slots it holds of the GPU limit, `orchestration.gpu`).
    gpus_per_shard: int = 1

    def __init__(self, config: RoundConfig, store: RoundStore):
        self.config = config
        self.store = store

    @abstractmethod
    def plan(self) -> list[ShardSpec]:
        """Every shard of this stage for the current config and inputs, in order."""

    @abstractmethod
    def build_shard(self, spec: ShardSpec) -> tuple[pa.Table, dict]:
        """The shard's rows and per-shard metrics (counts of skipped or failed items, ...)."""

    def summarize(self, results: list[ShardResult], seconds: float) -> dict:
        """Stage metrics for the manifest (`seconds`: the stage's wall time); by default the
        per-shard counts summed."""
        totals: dict[str, float] = {}
        for result in results:
            for name, value in result.metrics.items():
                if isinstance(value, (int, float)):
                    totals[name] = totals.get(name, 0) + value
        return totals

    def run_shard(self, spec: ShardSpec) -> ShardResult:
        """Build and write one shard unless it already exists; the write is atomic."""
        if self.store.exists(spec.filename):
            with self.store.fs.open(self.store.path(spec.filename), "rb") as handle:
                metadata = pq.read_metadata(handle)
            metrics = _decode_metrics(metadata.metadata)
            return ShardResult(spec.filename, metadata.num_rows, 0.0, True, metrics)
        started = time.perf_counter()
        table, metrics = self.build_shard(spec)
        # Per-shard metrics travel inside the Parquet footer, so a skipped shard still reports them.
        stored = {k: v for k, v in metrics.items() if k not in self.wall_clock_metrics}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), METRICS_KEY: canonical_json(stored).encode("utf-8")})
        self.store.write_table(spec.filename, table)
        return ShardResult(spec.filename, table.num_rows, time.perf_counter() - started, False, metrics,
                           os.environ.get("CUDA_VISIBLE_DEVICES"))  # fmt: skip


def _decode_metrics(metadata: dict | None) -> dict:
    raw = (metadata or {}).get(METRICS_KEY)
    return json.loads(raw) if raw else {}
