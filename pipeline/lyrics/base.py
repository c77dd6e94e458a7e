"""The lyrics generator interface shared by every backend.

The lyrics stage decides *what* each lyric is about (a request: id, seed, language,
emotion, theme); a backend decides *how* to write it. Backends return raw text plus
how many attempts it took; validation and de-duplication happen in the stage, so every
backend is judged by the same rules (pipeline.lyrics.format).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class LyricRequest:
    """One lyric to write. `seed` makes the answer reproducible where the backend allows."""

    lyric_id: str
    seed: int
    language: str  # "en" or "zh"
    emotion: str  # a description tag, e.g. "nostalgic"; the lyric's mood must match it
    theme: str  # a short topic, e.g. "a night drive home"


@dataclass
class GeneratedLyric:
    """A backend's answer to one request.

    `text` is LeVo-format lyrics after any safe repair, or "" when the backend gave up;
    `error` then says why (unreachable endpoint, not lyrics after N attempts, ...).
    """

    lyric_id: str
    text: str
    attempts: int = 1
    error: str | None = None


class LyricsGenerator(Protocol):
    """Writes lyrics for a batch of requests, in request order."""

    name: str

    def generate(self, requests: list[LyricRequest]) -> list[GeneratedLyric]: ...

    def describe(self) -> dict:
        """What produced the lyrics (backend, model, prompt digest, settings): for manifests and cards."""
        ...
