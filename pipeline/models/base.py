"""The SongModel interface: sample N candidate songs per condition, with one recorded seed each.

Backends: `tiny` (embedded, pipeline/models/tiny) and plugins registered in the Python
entry-point group `songpref.models` (e.g. the LeVo/SongGeneration adapter).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    cfg_coef: float | None = None  # classifier-free guidance, where the model has it


@dataclass(frozen=True)
class CandidateRequest:
    """One song to sample: `condition` is a conditions-stage row (lyric, description, tags, prompt)."""

    candidate_id: str
    condition: dict
    seed: int


@dataclass
class CandidateResult:
    """Where one sampled song went. `audio` maps stem name (mix, vocals, accompaniment) to a file;
    `tokens` is a file of the song's token streams when the model has them. A failed candidate
    has `error` set and no audio."""

    candidate_id: str
    audio: dict[str, Path] = field(default_factory=dict)
    tokens: Path | None = None
    duration_seconds: float = 0.0
    error: str | None = None


class SongModel(Protocol):
    name: str

    def sample(self, requests: list[CandidateRequest], params: SamplingParams, out_dir: Path) -> list[CandidateResult]:
        """Sample and render every request into out_dir/<candidate_id>/, in request order. A plugin
        may also take `progress`, a callable given the count of songs done so far (the candidates
        stage reports it inside the shard: to the CLI's bar and the flow run's log)."""
        ...

    def describe(self) -> dict:
        """Checkpoint, its digest and settings: for manifests and data cards."""
        ...


class PreferenceText(Protocol):
    """What a SongModel adds to be trained with TRL's DPOTrainer on the pairs the round writes:
    the text of a condition (`prompt`) and of a sampled song (`chosen`/`rejected`) that its
    policy's tokenizer reads."""

    def preference_prompt(self, condition: dict) -> str: ...

    def preference_completion(self, tokens: dict) -> str: ...
