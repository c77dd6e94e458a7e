"""Description vocabularies (gender, genre, emotion, instrument, tempo) for the conditions stage."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

DEFAULT_TAGS_FILE = Path(__file__).with_name("vocab") / "tags.yaml"
TEMPO_BUCKETS = (("slow", 0, 90), ("mid", 90, 120), ("fast", 120, 1000))


def tempo_bucket(bpm: float) -> str:
    """LeVo describes tempo by bpm; scorers compare buckets, which survive small estimation errors."""
    for name, low, high in TEMPO_BUCKETS:
        if low <= bpm < high:
            return name
    raise ValueError(f"bpm must be positive, got {bpm}")


@dataclass(frozen=True)
class Genre:
    name: str
    bpm_range: tuple[int, int]
    auto_prompt: str
    instruments: tuple[str, ...]


@dataclass(frozen=True)
class Vocabulary:
    genders: tuple[str, ...]
    emotions: tuple[str, ...]
    genres: tuple[Genre, ...]
    auto_prompt_types: tuple[str, ...]

    @property
    def instruments(self) -> tuple[str, ...]:
        return tuple(sorted({i for g in self.genres for i in g.instruments}))


def vocabulary_digest(path: Path | None = None) -> str:
    """Shards that read the vocabulary are keyed by its bytes, so an edit reruns them."""
    return hashlib.sha256(Path(path or DEFAULT_TAGS_FILE).read_bytes()).hexdigest()


def load_vocabulary(path: Path | None = None) -> Vocabulary:
    """Read a tags file; an empty or malformed list is an error naming the file and the key.
    Parsed once per process and file version (a vocabulary is immutable): every lyrics and
    conditions shard reads it, and parsing the YAML was most of a small shard's time."""
    path = Path(path or DEFAULT_TAGS_FILE)
    try:
        stat = path.stat()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read vocabulary: {exc}") from exc
    return _parsed_vocabulary(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _parsed_vocabulary(name: str, _mtime_ns: int, _size: int) -> Vocabulary:
    path = Path(name)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read vocabulary: {exc}") from exc

    def tag_list(key: str) -> tuple[str, ...]:
        values = raw.get(key)
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            raise ValueError(f"{path}: '{key}' must be a non-empty list of tags")
        return tuple(values)

    genres_raw = raw.get("genres")
    if not isinstance(genres_raw, dict) or not genres_raw:
        raise ValueError(f"{path}: 'genres' must be a non-empty mapping")
    auto_types = tag_list("auto_prompt_types")
    genres = []
    for name, spec in genres_raw.items():
        try:
            low, high = spec["bpm"]
            genre = Genre(str(name), (int(low), int(high)), str(spec["auto_prompt"]), tuple(spec["instruments"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: genre '{name}' needs bpm: [low, high], auto_prompt and instruments ({exc})") from exc
        if not (0 < low <= high) or not genre.instruments or genre.auto_prompt not in auto_types:
            raise ValueError(f"{path}: genre '{name}': bpm range, instruments or auto_prompt is invalid")
        genres.append(genre)
    return Vocabulary(tag_list("genders"), tag_list("emotions"), tuple(genres), auto_types)
