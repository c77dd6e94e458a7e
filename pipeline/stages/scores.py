"""The scores stages: one per scorer, each writing scores/<scorer>/ shards.

`scores/per` transcribes each candidate (the vocals stem when the model gave stems, else the
mix) and computes the phoneme and word error rates against its lyric; `scores/similarity`
scores the mix against the text description. One shard per candidates shard, keyed by that
shard's digest (which fixes its audio files) plus the scorer's own config only, so changing
one scorer rescores that scorer's rows alone. Each row records the sha256 of the audio it
scored. A candidate without audio, or whose audio cannot be scored, is a row with `error`,
counted in the manifest; the stage goes on.
"""

from __future__ import annotations

import hashlib
import json
import time
from functools import cached_property
from pathlib import Path

import pyarrow as pa

from pipeline.manifest import finished_outputs
from pipeline.scoring.base import ScoringItem, Transcript
from pipeline.scoring.registry import build_scorer
from pipeline.stages.base import ShardResult, ShardSpec, Stage

SILENCE_DBFS = -60.0  # a vocals stem whose peak is below this sings nothing
MAX_LISTED_FAILURES = 50  # the manifest lists this many failures per stage; counts are complete


class ScoreStage(Stage):
    """Shared plan, inputs and bookkeeping; subclasses say which scorer and how rows look."""

    scorer_kind: str
    schema: pa.Schema

    def scorer_options(self):
        return getattr(self.config.scoring, self.scorer_kind)

    def scorer(self):
        return build_scorer(self.scorer_kind, self.scorer_options())

    def plan(self) -> list[ShardSpec]:
        params = {"scorer": self.scorer_options().model_dump(mode="json"), "stem": self.stem_order()}
        candidates = finished_outputs(self.store, "candidates")
        conditions = finished_outputs(self.store, "conditions")
        digests = {"conditions_digest": self._digest_of(conditions)}
        return [
            ShardSpec(self.name, i, {"candidates": path, "candidates_digest": self.store.file_digest(path), **digests}, params)
            for i, path in enumerate(candidates)
        ]

    def _digest_of(self, paths: list[str]) -> str:
        return hashlib.sha256("".join(self.store.file_digest(p) for p in paths).encode()).hexdigest()

    def stem_order(self) -> list[str]:
        """Which stem to score, first present wins."""
        return ["mix"]

    @cached_property
    def conditions(self) -> dict[str, dict]:
        """Every condition of the round, read once per stage instance (items and the ASR's LM need them)."""
        return round_conditions(self.store)

    def items(self, spec: ShardSpec) -> tuple[list[ScoringItem], list[dict]]:
        return scoring_items(self.store, spec.inputs["candidates"], self.conditions, self.stem_order())

    def score(self, items: list[ScoringItem]) -> list[dict]:
        """One row per item (schema columns besides candidate_id/audio_sha256/error may be set)."""
        raise NotImplementedError

    def build_shard(self, spec: ShardSpec) -> tuple[pa.Table, dict]:
        items, failed = self.items(spec)
        started = time.perf_counter()
        rows = self.score(items) if items else []
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
        return pa.Table.from_pylist(rows, schema=self.schema), metrics

    def summarize(self, results: list[ShardResult], seconds: float) -> dict:
        metrics = super().summarize(results, seconds)
        built = [r for r in results if not r.skipped]
        audio = sum(r.metrics.get("audio_seconds", 0) for r in built)
        busy = sum(r.metrics.get("scoring_seconds", 0) for r in built)
        metrics["audio_seconds_per_second"] = round(audio / seconds, 3) if seconds and built else 0.0
        metrics["audio_seconds_per_busy_second"] = round(audio / busy, 3) if busy else 0.0
        metrics["failures"] = [f for r in results for f in r.metrics.get("failures", [])][:MAX_LISTED_FAILURES]
        metrics["scorer"] = self.scorer().describe()
        return metrics


class PerStage(ScoreStage):
    name = "scores/per"
    scorer_kind = "transcriber"
    schema = pa.schema(
        [
            ("candidate_id", pa.string()),
            ("audio_sha256", pa.string()),
            ("transcript", pa.string()),
            ("language", pa.string()),
            ("per", pa.float64()),  # phoneme error rate x 100, the paper's units
            ("wer", pa.float64()),  # word error rate x 100
            ("error", pa.string()),
        ]
    )

    def stem_order(self) -> list[str]:
        return ["vocals", "mix"]  # LeVo's dual-track output lets ASR hear the voice alone

    def score(self, items: list[ScoringItem]) -> list[dict]:
        return score_per(self.scorer(), items, sorted({c["lyric"] for c in self.conditions.values()}))


class SimilarityStage(ScoreStage):
    name = "scores/similarity"
    scorer_kind = "similarity"
    schema = pa.schema(
        [
            ("candidate_id", pa.string()),
            ("audio_sha256", pa.string()),
            ("similarity", pa.float64()),
            ("backend", pa.string()),
            ("details", pa.string()),  # JSON: the backend's parts (e.g. per-attribute agreement)
            ("error", pa.string()),
        ]
    )

    def score(self, items: list[ScoringItem]) -> list[dict]:
        return score_similarity(self.scorer(), items)


def score_per(transcriber, items: list[ScoringItem], lyrics: list[str]) -> list[dict]:
    """PER rows (transcript, language, per, wer, error) for items, transcribed with `transcriber`
    prepared on `lyrics` (the in-domain language model of the embedded ASR)."""
    from pipeline.scoring.per import error_rates_batch

    transcriber.prepare(lyrics)
    # A silent vocals stem is a song that sings nothing: an empty transcript (PER 100), not a failure.
    silent = {i for i, item in enumerate(items) if "vocals" in item.stems and _is_silent(item.stems["vocals"])}
    heard = [item for i, item in enumerate(items) if i not in silent]
    transcripts = dict(zip((item.candidate_id for item in heard), transcriber.transcribe(heard)))
    transcripts.update({items[i].candidate_id: Transcript(items[i].candidate_id, "", items[i].language) for i in silent})
    transcripts = [transcripts[item.candidate_id] for item in items]
    rates = error_rates_batch([(i.lyric, t.text, i.language) for i, t in zip(items, transcripts)])
    rows = []
    for transcript, rate in zip(transcripts, rates):
        row = {"transcript": transcript.text, "language": transcript.language, "error": transcript.error}
        if row["error"] is None and isinstance(rate, Exception):
            row["error"] = f"error rate: {type(rate).__name__}: {rate}"
        elif row["error"] is None:
            row.update(per=rate.per, wer=rate.wer)
        rows.append(row)
    return rows


def score_similarity(scorer, items: list[ScoringItem]) -> list[dict]:
    """Similarity rows (similarity, backend, details, error) for items."""
    rows = []
    for result in scorer.score(items):
        value = result.similarity
        error = result.error or (None if value is not None and value == value else "similarity is missing or NaN")
        rows.append({"similarity": None if error else float(value), "backend": scorer.name,
                     "details": json.dumps(result.details, sort_keys=True, default=str), "error": error})  # fmt: skip
    return rows


def round_conditions(store) -> dict[str, dict]:
    """Every condition of the round by condition_id."""
    rows = []
    for path in finished_outputs(store, "conditions"):
        rows += store.read_table(path).to_pylist()
    return {row["condition_id"]: row for row in rows}


def scoring_items(store, candidates_path: str, conditions: dict, stem_order: list[str]) -> tuple[list[ScoringItem], list[dict]]:
    """A candidates shard as scoring items (the first stem of `stem_order` it has), and a failed
    row for each candidate without audio."""
    items, failed = [], []
    for row in store.read_table(candidates_path).to_pylist():
        stems = {s: Path(store.path(row[f"{s}_uri"])) for s in ("mix", "vocals", "accompaniment") if row[f"{s}_uri"]}
        chosen = next((stems[s] for s in stem_order if s in stems), None)
        if chosen is None:
            failed.append({"candidate_id": row["candidate_id"], "error": f"no audio: {row['error'] or 'no stem'}"})
            continue
        cond = conditions[row["condition_id"]]
        tags = {k: cond.get(k) for k in ("gender", "genre", "emotion", "instruments", "bpm", "tempo")}
        items.append(ScoringItem(row["candidate_id"], chosen, cond["lyric"], cond["language"], cond["description"], tags, stems))
    return items, failed


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _is_silent(path: Path) -> bool:
    import numpy as np
    import soundfile

    try:
        audio, _ = soundfile.read(str(path), dtype="float32")
    except RuntimeError:
        return False  # unreadable: the transcriber reports it
    peak = float(np.max(np.abs(audio), initial=0.0))
    return peak <= 10 ** (SILENCE_DBFS / 20)


def _duration(path: Path) -> float:
    import soundfile

    try:
        return soundfile.info(str(path)).duration
    except RuntimeError:
        return 0.0
