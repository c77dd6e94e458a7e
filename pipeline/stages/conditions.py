"""The conditions stage: one condition (description + audio prompt) per valid, distinct lyric.

One conditions shard per lyrics shard. Its key covers the lyrics shard's bytes, the
duplicates dropped from it, the vocabulary and the prompt library listing.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pyarrow as pa

from pipeline.conditions import PromptLibrary, make_condition, scan_prompt_library
from pipeline.digest import derive_rng, digest_json
from pipeline.manifest import finished_outputs
from pipeline.stages.base import ShardSpec, Stage
from pipeline.stages.lyrics import duplicate_lyric_ids
from pipeline.vocab import load_vocabulary, vocabulary_digest

SCHEMA = pa.schema(
    [
        ("condition_id", pa.string()),
        ("lyric_id", pa.string()),
        ("lyric", pa.string()),
        ("language", pa.string()),
        ("description", pa.string()),
        ("gender", pa.string()),
        ("genre", pa.string()),
        ("emotion", pa.string()),
        ("instruments", pa.list_(pa.string())),
        ("bpm", pa.int32()),
        ("tempo", pa.string()),
        ("prompt_audio_path", pa.string()),
        ("auto_prompt_audio_type", pa.string()),
    ]
)


@lru_cache(maxsize=2)
def _library(folder: str) -> PromptLibrary:
    return scan_prompt_library(Path(folder))


class ConditionsStage(Stage):
    name = "conditions"

    def library(self) -> PromptLibrary | None:
        folder = self.config.conditions.prompt_library
        return _library(str(Path(folder).resolve())) if folder else None

    def plan(self) -> list[ShardSpec]:
        lyric_files = finished_outputs(self.store, "lyrics")
        duplicates = duplicate_lyric_ids(self.store, lyric_files)
        library = self.library()
        params = {
            "seed": self.config.seed,
            "conditions": self.config.conditions.model_dump(mode="json", exclude={"prompt_library"}),
            "vocabulary_digest": vocabulary_digest(self.config.conditions.vocabulary),
            "library_digest": digest_json(library.clips) if library else None,
        }
        specs = []
        for index, relpath in enumerate(lyric_files):
            ids = self.store.read_table(relpath, columns=["lyric_id"]).column("lyric_id").to_pylist()
            dropped = sorted(duplicates.intersection(ids))
            inputs = {"lyrics": relpath, "lyrics_digest": self.store.file_digest(relpath), "duplicates": dropped}
            specs.append(ShardSpec(self.name, index, inputs, params))
        return specs

    def build_shard(self, spec: ShardSpec) -> tuple[pa.Table, dict]:
        cfg = self.config.conditions
        vocab = load_vocabulary(cfg.vocabulary)
        library = self.library()
        lyrics = self.store.read_table(spec.inputs["lyrics"]).to_pylist()
        duplicates = set(spec.inputs["duplicates"])
        rows = []
        for lyric in lyrics:
            if not lyric["valid"] or lyric["lyric_id"] in duplicates:
                continue
            rng = derive_rng(self.config.seed, "conditions", lyric["lyric_id"])
            rows.append(
                make_condition(
                    lyric,
                    rng,
                    vocab,
                    min_instruments=cfg.min_instruments,
                    max_instruments=cfg.max_instruments,
                    library=library,
                    library_share=cfg.library_share,
                    auto_prompt=cfg.auto_prompt,
                )
            )
        metrics = {
            "skipped_invalid": sum(not lyric["valid"] for lyric in lyrics),
            "skipped_duplicate": len(duplicates),
            "with_prompt_clip": sum(r["prompt_audio_path"] is not None for r in rows),
        }
        return pa.Table.from_pylist(rows, schema=SCHEMA), metrics

    def summarize(self, results, seconds: float) -> dict:
        metrics = super().summarize(results, seconds)
        library = self.library()
        if library:
            metrics["prompt_clips_usable"] = len(library.clips)
            metrics["prompt_clips_rejected"] = [{"path": p, "reason": r} for p, r in library.rejected]
        return metrics
