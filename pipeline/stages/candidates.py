"""The candidates stage: N sampled songs per condition, rendered into the round.

One candidates shard per conditions shard. Candidate j of a condition is
`<condition_id>-<j>` with the seed derive_seed(round seed, "candidates", condition_id, j), so
a candidate's song depends on nothing but its condition, its seed, the model and the sampling
settings. Audio goes to candidates/audio/<candidate_id>/{mix,vocals,accompaniment}.flac (and
the tiny model's tokens.json beside it); the Parquet rows carry paths relative to the round.
A failed candidate keeps its row, with its error and no audio.
"""

from __future__ import annotations

import posixpath
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from pipeline.digest import derive_seed
from pipeline.lyrics.format import fix_style, lyric_errors, validate_lyrics
from pipeline.manifest import finished_outputs
from pipeline.models.base import CandidateRequest, CandidateResult, SamplingParams, SongModel
from pipeline.models.registry import load_song_model
from pipeline.stages.base import ShardResult, ShardSpec, Stage

AUDIO_DIR = "candidates/audio"
STEMS = ("mix", "vocals", "accompaniment")
SCHEMA = pa.schema(
    [
        ("candidate_id", pa.string()),
        ("condition_id", pa.string()),
        ("lyric_id", pa.string()),
        ("candidate_index", pa.int32()),
        ("seed", pa.int64()),
        ("model", pa.string()),
        ("tokens_uri", pa.string()),  # relative to the round; null when the model has no tokens
        ("mix_uri", pa.string()),
        ("vocals_uri", pa.string()),
        ("accompaniment_uri", pa.string()),
        ("duration_seconds", pa.float64()),
        ("error", pa.string()),  # null for a rendered candidate
    ]
)


class CandidatesStage(Stage):
    name = "candidates"
    wall_clock_metrics = ("sampling_seconds",)

    def song_model(self) -> SongModel:
        return load_song_model(self.config.model.backend, self.config.model.options)

    def sampling(self) -> SamplingParams:
        s = self.config.sampling
        return SamplingParams(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, cfg_coef=s.cfg_coef)

    def plan(self) -> list[ShardSpec]:
        model = self.song_model()
        if hasattr(model, "check_sampling"):  # a backend that cannot take a sampling value refuses it, by name, here
            model.check_sampling(self.sampling())
        params = {
            "seed": self.config.seed,
            "model": model.describe(),  # before any sampling: stable for a model and its options
            "sampling": self.config.sampling.model_dump(mode="json"),
        }
        return [
            ShardSpec(self.name, index, {"conditions": path, "conditions_digest": self.store.file_digest(path)}, params)
            for index, path in enumerate(finished_outputs(self.store, "conditions"))
        ]

    def requests(self, spec: ShardSpec) -> tuple[list[CandidateRequest], int]:
        """The shard's candidates, and how many conditions were skipped for lyric errors and how
        many sampled with their lyric's warnings repaired (a style LeVo accepts: kept)."""
        requests, skipped, repaired = [], 0, 0
        for condition in self.store.read_table(spec.inputs["conditions"]).to_pylist():
            lyric = condition.get("lyric") or ""
            if lyric_errors(lyric):
                skipped += 1
                continue
            if validate_lyrics(lyric):
                condition, repaired = {**condition, "lyric": fix_style(lyric)}, repaired + 1
            cid = condition["condition_id"]
            for j in range(self.config.sampling.num_candidates):
                seed = derive_seed(self.config.seed, "candidates", cid, j)
                requests.append(CandidateRequest(f"{cid}-{j}", condition, seed))
        return requests, skipped, repaired

    def build_shard(self, spec: ShardSpec) -> tuple[pa.Table, dict]:
        model = self.song_model()
        requests, skipped, repaired = self.requests(spec)
        started = time.perf_counter()
        with self._audio_folder() as (out_dir, publish):
            results = model.sample(requests, self.sampling(), out_dir)
            for result in results:
                publish(result)
        seconds = time.perf_counter() - started
        rows = [self._row(req, res, model.name) for req, res in zip(requests, results)]
        failed = [r for r in rows if r["error"]]
        metrics = {
            "candidates": len(rows) - len(failed),
            "failed": len(failed),
            "skipped_invalid_lyrics": skipped,
            "repaired_lyrics": repaired,
            "audio_seconds": round(sum(r["duration_seconds"] for r in rows), 3),
            "sampling_seconds": round(seconds, 3),
            "failures": [{"candidate_id": r["candidate_id"], "error": r["error"]} for r in failed],
        }
        return pa.Table.from_pylist(rows, schema=SCHEMA), metrics

    def summarize(self, results: list[ShardResult], seconds: float) -> dict:
        metrics = super().summarize(results, seconds)
        built = [r for r in results if not r.skipped]
        busy = sum(r.metrics.get("sampling_seconds", 0) for r in built)
        made = sum(r.metrics.get("candidates", 0) for r in built)
        audio = sum(r.metrics.get("audio_seconds", 0) for r in built)
        # Throughput of this run's own work: wall clock over the stage, and per busy worker.
        metrics["candidates_per_second"] = round(made / seconds, 3) if seconds else 0.0
        metrics["audio_seconds_per_second"] = round(audio / seconds, 3) if seconds else 0.0
        metrics["audio_seconds_per_busy_second"] = round(audio / busy, 3) if busy else 0.0
        metrics["failures"] = [f for r in results for f in r.metrics.get("failures", [])]
        metrics["model"] = self.song_model().describe()
        return metrics

    def _row(self, request: CandidateRequest, result: CandidateResult, model: str) -> dict:
        cid = request.candidate_id
        uris = {f"{stem}_uri": (_relative(cid, stem) if stem in result.audio else None) for stem in STEMS}
        error = result.error or (None if "mix" in result.audio else "the model returned no mix")
        return {
            "candidate_id": cid,
            "condition_id": request.condition["condition_id"],
            "lyric_id": request.condition["lyric_id"],
            "candidate_index": int(cid.rsplit("-", 1)[1]),
            "seed": request.seed,
            "model": model,
            "tokens_uri": posixpath.join(AUDIO_DIR, cid, result.tokens.name) if result.tokens else None,
            **uris,
            "duration_seconds": 0.0 if error else float(result.duration_seconds),
            "error": error,
        }

    def _audio_folder(self):
        """Where the model writes, and how a finished candidate reaches the round: in place for
        a local round, else through a scratch folder whose files are uploaded atomically."""
        return _LocalAudio(self.store) if self.store.fs.protocol in ("file", ("file", "local")) else _RemoteAudio(self.store)


def _relative(candidate_id: str, stem: str) -> str:
    return posixpath.join(AUDIO_DIR, candidate_id, f"{stem}.flac")


class _LocalAudio:
    def __init__(self, store):
        self.folder = Path(store.path(AUDIO_DIR))

    def __enter__(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder, lambda result: None

    def __exit__(self, *exc):
        return False


class _RemoteAudio:
    def __init__(self, store):
        self.store = store
        self.scratch = Path(tempfile.mkdtemp(prefix="songpref-candidates-"))

    def publish(self, result: CandidateResult) -> None:
        files = list(result.audio.values()) + ([result.tokens] if result.tokens else [])
        for path in files:
            self.store.write_bytes(posixpath.join(AUDIO_DIR, result.candidate_id, Path(path).name), Path(path).read_bytes())

    def __enter__(self):
        return self.scratch, self.publish

    def __exit__(self, *exc):
        shutil.rmtree(self.scratch, ignore_errors=True)
        return False
