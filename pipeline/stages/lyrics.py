"""The lyrics stage: the paper's LLM-written lyrics (20,000), one row per lyric.

Each lyric's language, emotion, theme and seed derive from the round seed and the lyric's
global index alone, so a lyric is the same whatever the shard size. Invalid answers are kept
with their errors (and excluded downstream); an answer with warnings only (a style LeVo
accepts) is kept repaired, its warnings listed; near-duplicates are counted here and dropped by
the conditions stage, first occurrence wins.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import pyarrow as pa

from pipeline.digest import derive_rng, derive_seed
from pipeline.lyrics import LyricRequest, build_generator
from pipeline.lyrics.format import detect_language, fix_style, normalize_for_dedup, validate_lyrics
from pipeline.lyrics.template import THEMES, mood_family
from pipeline.stages.base import ShardSpec, Stage
from pipeline.vocab import load_vocabulary, vocabulary_digest

SCHEMA = pa.schema(
    [
        ("lyric_id", pa.string()),
        ("seed", pa.int64()),
        ("language", pa.string()),
        ("detected_language", pa.string()),
        ("emotion", pa.string()),
        ("theme", pa.string()),
        ("text", pa.string()),
        ("valid", pa.bool_()),
        ("errors", pa.list_(pa.string())),
        ("warnings", pa.list_(pa.string())),  # style deviations repaired in `text`
        ("attempts", pa.int32()),
        ("generator", pa.string()),
        ("norm_digest", pa.string()),
    ]
)


class LyricsStage(Stage):
    name = "lyrics"

    def plan(self) -> list[ShardSpec]:
        cfg = self.config.lyrics
        generator = self.generator()
        if hasattr(generator, "check_endpoint"):
            generator.check_endpoint()  # an unreachable server fails the stage before any shard starts
        params = {
            "seed": self.config.seed,
            "languages": cfg.languages,
            "max_tokens": cfg.max_tokens,
            "generator": generator.describe(),
            "vocabulary_digest": vocabulary_digest(self.config.conditions.vocabulary),
        }
        size = cfg.effective_shard_size
        return [
            ShardSpec(self.name, i, {"start": start, "stop": min(start + size, cfg.count)}, params)
            for i, start in enumerate(range(0, cfg.count, size))
        ]

    def generator(self):
        return build_generator(self.config.lyrics.generator, self.config.lyrics.max_tokens)

    def requests(self, start: int, stop: int) -> list[LyricRequest]:
        emotions = load_vocabulary(self.config.conditions.vocabulary).emotions
        languages = sorted(self.config.lyrics.languages.items())
        out = []
        for index in range(start, stop):
            rng = derive_rng(self.config.seed, "lyrics", index)
            language = rng.choices([lang for lang, _ in languages], weights=[w for _, w in languages])[0]
            emotion = rng.choice(emotions)
            theme = rng.choice(THEMES[mood_family(emotion)])
            seed = derive_seed(self.config.seed, "lyrics-seed", index)
            out.append(LyricRequest(f"lyr-{index:07d}", seed, language, emotion, theme))
        return out

    def build_shard(self, spec: ShardSpec) -> tuple[pa.Table, dict]:
        requests = self.requests(spec.inputs["start"], spec.inputs["stop"])
        generator = self.generator()
        answers = generator.generate(requests)
        rows, error_codes, warning_codes = [], Counter(), Counter()
        for request, answer in zip(requests, answers, strict=True):
            text, errors, warnings = answer.text, [], []
            if answer.error:
                errors = [f"generator: {answer.error}"]
            else:
                for p in validate_lyrics(text, max_tokens=self.config.lyrics.max_tokens):
                    (warnings if p.severity == "warning" else errors).append(f"{p.code}: {p.message}")
                if warnings and not errors:
                    text = fix_style(text)
            error_codes.update(e.split(":", 1)[0] for e in errors)
            warning_codes.update(w.split(":", 1)[0] for w in warnings)
            rows.append(
                {
                    "lyric_id": request.lyric_id,
                    "seed": request.seed,
                    "language": request.language,
                    "detected_language": detect_language(text) if text else "",
                    "emotion": request.emotion,
                    "theme": request.theme,
                    "text": text,
                    "valid": not errors,
                    "errors": errors,
                    "warnings": warnings,
                    "attempts": answer.attempts,
                    "generator": generator.name,
                    "norm_digest": hashlib.sha1(normalize_for_dedup(text).encode()).hexdigest(),
                }
            )
        valid = sum(r["valid"] for r in rows)
        metrics = {"valid": valid, "invalid": len(rows) - valid, "repaired": sum(bool(r["warnings"]) for r in rows),
                   **{f"error.{k}": v for k, v in error_codes.items()}, **{f"warning.{k}": v for k, v in warning_codes.items()}}  # fmt: skip
        return pa.Table.from_pylist(rows, schema=SCHEMA), metrics

    def summarize(self, results, seconds: float) -> dict:
        metrics = super().summarize(results, seconds)
        metrics["duplicates"] = len(duplicate_lyric_ids(self.store, [r.filename for r in results]))
        return metrics


def duplicate_lyric_ids(store, lyric_files: list[str]) -> set[str]:
    """Valid lyrics whose normalised text appeared earlier (by shard, then row order)."""
    seen, duplicates = set(), set()
    for relpath in lyric_files:
        table = store.read_table(relpath, columns=["lyric_id", "valid", "norm_digest"]).to_pydict()
        for lyric_id, valid, norm in zip(table["lyric_id"], table["valid"], table["norm_digest"]):
            if not valid:
                continue
            if norm in seen:
                duplicates.add(lyric_id)
            seen.add(norm)
    return duplicates
