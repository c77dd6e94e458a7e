"""A symbolic song: what the tiny policy's tokens decode to and what the renderer sings and plays.

Time is counted in steps of an eighth note (`STEPS_PER_BEAT` = 2), so a score's duration in
seconds follows from its tempo alone. Pitches are MIDI numbers. Every list is sorted by start.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

STEPS_PER_BEAT = 2
MODES = ("major", "minor")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}  # semitones above the tonic
BAR = 4 * STEPS_PER_BEAT
DRUM_KINDS = ("kick", "snare", "hat")


@dataclass(frozen=True)
class SungWord:
    """One word of the lyrics, sung on one note. `section` indexes Score.sections."""

    start: int
    duration: int
    pitch: int
    word: str
    section: int


@dataclass(frozen=True)
class Chord:
    start: int
    duration: int
    root: int  # pitch class 0-11
    quality: str  # "maj" or "min"


@dataclass(frozen=True)
class Note:
    start: int
    duration: int
    pitch: int


@dataclass(frozen=True)
class Hit:
    start: int
    kind: str  # one of DRUM_KINDS


@dataclass(frozen=True)
class Section:
    tag: str  # a LeVo structure tag, e.g. "[verse]"
    start: int
    end: int  # exclusive


@dataclass
class Score:
    tempo_bpm: int
    key: int  # tonic pitch class 0-11
    mode: str  # "major" or "minor"
    gender: str  # "male" or "female": the vocal register
    genre: str
    instruments: list[str]
    sections: list[Section] = field(default_factory=list)
    vocals: list[SungWord] = field(default_factory=list)
    chords: list[Chord] = field(default_factory=list)
    bass: list[Note] = field(default_factory=list)
    drums: list[Hit] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return max((s.end for s in self.sections), default=0)

    @property
    def seconds_per_step(self) -> float:
        return 60.0 / self.tempo_bpm / STEPS_PER_BEAT

    @property
    def duration_seconds(self) -> float:
        return self.steps * self.seconds_per_step

    def sung_text(self) -> list[str]:
        """The words in the order they are sung: compared with the lyrics for the word error rate."""
        return [w.word for w in self.vocals]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Score":
        return cls(
            **{k: v for k, v in data.items() if k not in ("sections", "vocals", "chords", "bass", "drums")},
            sections=[Section(**s) for s in data.get("sections", [])],
            vocals=[SungWord(**w) for w in data.get("vocals", [])],
            chords=[Chord(**c) for c in data.get("chords", [])],
            bass=[Note(**n) for n in data.get("bass", [])],
            drums=[Hit(**h) for h in data.get("drums", [])],
        )
