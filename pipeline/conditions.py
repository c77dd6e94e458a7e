"""Conditions: each valid lyric gets a text description and, as LeVo does, one audio prompt.

The audio prompt is either a clip from a prompt library or an auto-prompt type, never both
(LeVo's generate.py refuses records with both). The description's emotion is the lyric's
own, so text and lyrics tell one story.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import soundfile

from pipeline.vocab import Vocabulary, tempo_bucket

CLIP_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
MIN_CLIP_SECONDS = 1.0


@dataclass(frozen=True)
class PromptLibrary:
    clips: tuple[str, ...]
    rejected: tuple[tuple[str, str], ...]  # (path, reason) for clips that cannot be used


def scan_prompt_library(folder: Path) -> PromptLibrary:
    """List usable clips, sorted for reproducibility; unreadable or too-short clips are recorded, not fatal."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"conditions.prompt_library: {folder} is not a directory")
    clips, rejected = [], []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in CLIP_SUFFIXES):
        try:
            info = soundfile.info(str(path))
        except (RuntimeError, soundfile.LibsndfileError) as exc:
            rejected.append((str(path), f"unreadable audio: {exc}"))
            continue
        if info.frames / max(info.samplerate, 1) < MIN_CLIP_SECONDS:
            rejected.append((str(path), f"shorter than {MIN_CLIP_SECONDS:g} s"))
            continue
        clips.append(str(path.resolve()))
    if not clips:
        raise ValueError(f"conditions.prompt_library: no usable clip in {folder} ({len(rejected)} rejected)")
    return PromptLibrary(tuple(clips), tuple(rejected))


def make_condition(
    lyric: dict,
    rng: random.Random,
    vocab: Vocabulary,
    *,
    min_instruments: int,
    max_instruments: int,
    library: PromptLibrary | None,
    library_share: float,
    auto_prompt: str,
) -> dict:
    """One condition row for one lyric row (lyric_id, text, language, emotion)."""
    genre = rng.choice(vocab.genres)
    gender = rng.choice(vocab.genders)
    count = rng.randint(min_instruments, min(max_instruments, len(genre.instruments)))
    instruments = rng.sample(genre.instruments, count)
    bpm = rng.randint(*genre.bpm_range)
    emotion = lyric["emotion"] if lyric["emotion"] in vocab.emotions else rng.choice(vocab.emotions)
    tags = [gender, genre.name, emotion, *instruments]
    use_clip = library is not None and rng.random() < library_share
    if use_clip:
        clip, auto_type = rng.choice(library.clips), None
    else:
        clip = None
        auto_type = genre.auto_prompt if auto_prompt == "genre" else rng.choice(vocab.auto_prompt_types)
    return {
        "condition_id": "c-" + lyric["lyric_id"],
        "lyric_id": lyric["lyric_id"],
        "lyric": lyric["text"],
        "language": lyric["language"],
        "description": ", ".join(tags) + f", the bpm is {bpm}.",
        "gender": gender,
        "genre": genre.name,
        "emotion": emotion,
        "instruments": instruments,
        "bpm": bpm,
        "tempo": tempo_bucket(bpm),
        "prompt_audio_path": clip,
        "auto_prompt_audio_type": auto_type,
    }


def to_levo_record(condition: dict) -> dict:
    """LeVo's generate.py input line: idx, gt_lyric, descriptions and exactly one prompt field."""
    record = {"idx": condition["condition_id"], "gt_lyric": condition["lyric"], "descriptions": condition["description"]}
    if condition["prompt_audio_path"]:
        record["prompt_audio_path"] = condition["prompt_audio_path"]
    else:
        record["auto_prompt_audio_type"] = condition["auto_prompt_audio_type"]
    return record


def round_conditions(store) -> dict[str, dict]:
    """Every condition of a round (its conditions stage done) by condition_id."""
    from pipeline.manifest import finished_outputs

    rows = []
    for path in finished_outputs(store, "conditions"):
        rows += store.read_table(path).to_pylist()
    return {row["condition_id"]: row for row in rows}
