"""The score stages: one per score kind, each writing scores/<kind>/ shards.

`scores/per` transcribes each candidate (the vocals stem when the model gave stems, else the
mix) and computes the phoneme and word error rates against its lyric; `scores/similarity`
scores the mix against the text description; `scores/reward` (after the reward_model stage)
scores it with the round's reward model. One shard per candidates shard, keyed by that
shard's digest (which fixes its audio files) plus the kind's own options only, so changing
one scorer rescores that scorer's rows alone. Each row records the sha256 of the audio it
scored. A candidate without audio, or whose audio cannot be scored, is a row with `error`,
counted in the manifest; the stage goes on.
"""

from __future__ import annotations

import hashlib
import time
from functools import cached_property
from pathlib import Path

import pyarrow as pa

from pipeline.conditions import round_conditions
from pipeline.manifest import finished_outputs
from pipeline.scoring.items import scoring_items
from pipeline.scoring.kind import ScoreKind
from pipeline.stages.base import ShardResult, ShardSpec, Stage

MAX_LISTED_FAILURES = 50  # the manifest lists this many failures per stage; counts are complete


class ScoreStage(Stage):
    """The stage part `scores/<kind>` of one score kind."""

    wall_clock_metrics = ("scoring_seconds",)

    def __init__(self, config, store, kind: ScoreKind):
        super().__init__(config, store)
        self.kind = kind
        self.name = kind.stage

    def plan(self) -> list[ShardSpec]:
        params = {"scorer": self.kind.options(self.config).model_dump(mode="json"), "stem": list(self.kind.stems)}
        candidates = finished_outputs(self.store, "candidates")
        digests = {"conditions_digest": self._digest_of(finished_outputs(self.store, "conditions")),
                   **self.kind.extra_inputs(self.store)}  # fmt: skip
        return [
            ShardSpec(self.name, i, {"candidates": path, "candidates_digest": self.store.file_digest(path), **digests}, params)
            for i, path in enumerate(candidates)
        ]

    def _digest_of(self, paths: list[str]) -> str:
        return hashlib.sha256("".join(self.store.file_digest(p) for p in paths).encode()).hexdigest()

    @cached_property
    def conditions(self) -> dict[str, dict]:
        """Every condition of the round, read once per stage instance (items and the ASR's LM need them)."""
        return round_conditions(self.store)

    @cached_property
    def scorer(self):
        return self.kind.load(self.config, self.store)

    def build_shard(self, spec: ShardSpec) -> tuple[pa.Table, dict]:
        items, failed = scoring_items(self.store, spec.inputs["candidates"], self.conditions, self.kind.stems)
        started = time.perf_counter()
        lyrics = sorted({c["lyric"] for c in self.conditions.values()})
        rows = self.kind.score(self.scorer, items, lyrics) if items else []
        seconds = time.perf_counter() - started
        for item, row in zip(items, rows):
            row["candidate_id"] = item.candidate_id
            row["audio_sha256"] = _sha256(item.audio_path)
        rows += failed
        errors = [r for r in rows if r.get("error")]
        metrics = {
            "scored": len(rows) - len(errors),
            "failed": len(errors),
            "audio_seconds": round(sum(_duration(i.audio_path) for i in items), 3),
            "scoring_seconds": round(seconds, 3),
            "failures": [{"candidate_id": r["candidate_id"], "error": r["error"]} for r in errors][:MAX_LISTED_FAILURES],
        }
        rows.sort(key=lambda r: r["candidate_id"])
        return pa.Table.from_pylist(rows, schema=self.kind.schema), metrics

    def summarize(self, results: list[ShardResult], seconds: float) -> dict:
        metrics = super().summarize(results, seconds)
        built = [r for r in results if not r.skipped]
        audio = sum(r.metrics.get("audio_seconds", 0) for r in built)
        busy = sum(r.metrics.get("scoring_seconds", 0) for r in built)
        metrics["audio_seconds_per_second"] = round(audio / seconds, 3) if seconds and built else 0.0
        metrics["audio_seconds_per_busy_second"] = round(audio / busy, 3) if busy else 0.0
        metrics["failures"] = [f for r in results for f in r.metrics.get("failures", [])][:MAX_LISTED_FAILURES]
        metrics["scorer"] = self.scorer.describe()
        return metrics


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _duration(path: Path) -> float:
    import soundfile

    try:
        return soundfile.info(str(path)).duration
    except RuntimeError:
        return 0.0
