"""What a scorer sees of a candidate, and what it gives back.

Each score kind (`kind.py`) wraps one of these: a `Transcriber` (ASR) gives a transcript, from
which `per.py` computes the phoneme error rate against the lyric (the `per` kind); a
`TextAudioScorer` gives a similarity between the description and the audio (`similarity`); the
round's reward model gives the `reward` kind. Backends are chosen by name in the config
(`scoring.*.backend`); each has a pydantic options class with a `backend` literal, importable
without the backend's heavy dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ScoringItem:
    """One candidate as a scorer sees it: a local audio file and its condition."""

    candidate_id: str
    audio_path: Path  # the stem to score: vocals for ASR when the model gives stems, else the mix
    lyric: str  # LeVo-format lyric (structure tags, '.'-separated sentences)
    language: str  # the lyric's language code, e.g. "en", "zh"
    description: str  # the text description the song was sampled for
    tags: dict = field(default_factory=dict)  # gender, genre, emotion, instruments, bpm, tempo
    stems: dict = field(default_factory=dict)  # every stem the model gave: {"mix"|"vocals"|"accompaniment": Path}


@dataclass
class Transcript:
    candidate_id: str
    text: str = ""
    language: str | None = None  # the language decoded in (given or detected)
    error: str | None = None  # set when the audio could not be transcribed; text is then ""


class Transcriber(Protocol):
    name: str

    def prepare(self, lyrics: list[str]) -> None:
        """Called once before transcribing, with every lyric of the round (e.g. an in-domain LM)."""
        ...

    def transcribe(self, items: list[ScoringItem]) -> list[Transcript]:
        """One transcript per item, in order; a bad item gets `error`, the others go on."""
        ...

    def describe(self) -> dict:
        """Backend, model/checkpoint and its digest, options: for manifests and data cards."""
        ...


@dataclass
class Similarity:
    candidate_id: str
    similarity: float | None = None  # higher = the audio matches the description better
    details: dict = field(default_factory=dict)  # backend-specific parts (e.g. per-attribute agreement)
    error: str | None = None


class TextAudioScorer(Protocol):
    name: str

    def score(self, items: list[ScoringItem]) -> list[Similarity]:
        """One similarity per item, in order; a bad item gets `error`, the others go on."""
        ...

    def describe(self) -> dict:
        ...
