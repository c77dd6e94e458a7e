"""Rule-based composer: the tiny model's synthetic training data, correct for its condition.

Every song it writes follows the condition exactly (tempo, sections in the lyric's order,
every lyric word sung once in order, register for the gender, minor for sad emotions), so
a model trained on these songs has a known target, and a preference signal can measure how
far a sampled song strays from it. The music is simple but sound: diatonic chords on every
bar, a mostly stepwise melody whose strong-beat notes are chord tones, roots in the bass and
a genre-family drum pattern. Everything random comes from the caller's rng (deterministic).
"""

from __future__ import annotations

import random
from functools import lru_cache

from pipeline.lyrics.format import VOCAL_TAGS, split_sections
from pipeline.models.tiny.codec import BASS_OCTAVE, sentence_words
from pipeline.models.tiny.score import BAR, DRUM_KINDS, SCALES, STEPS_PER_BEAT, Chord, Hit, Note, Score, Section, SungWord
from pipeline.vocab import load_vocabulary

REGISTERS = {"female": (60, 76), "male": (48, 64)}
MINOR_EMOTIONS = frozenset({
    "melancholic", "nostalgic", "longing", "bittersweet", "heartbreak", "dark", "sad",
    "somber", "haunting", "lonely", "introspective",
})  # fmt: skip
# Instrumental section lengths in steps: short/medium/long = 4/8/16 beats, silence 2 beats.
LENGTHS = {"short": 4 * STEPS_PER_BEAT, "medium": 8 * STEPS_PER_BEAT, "long": 16 * STEPS_PER_BEAT}
SILENCE_STEPS = 2 * STEPS_PER_BEAT

# Diatonic four-bar progressions as (semitones above the tonic, quality), one per section tag.
_I, _ii, _iii, _IV, _V, _vi = (0, "maj"), (2, "min"), (4, "min"), (5, "maj"), (7, "maj"), (9, "min")
_i, _III, _iv, _v, _VI, _VII = (0, "min"), (3, "maj"), (5, "min"), (7, "min"), (8, "maj"), (10, "maj")
PROGRESSIONS = {
    "major": ((_I, _V, _vi, _IV), (_I, _vi, _IV, _V), (_vi, _IV, _I, _V), (_I, _IV, _V, _IV), (_ii, _V, _I, _iii)),
    "minor": ((_i, _VI, _III, _VII), (_i, _iv, _VI, _v), (_i, _VII, _VI, _VII), (_i, _iv, _v, _i)),
}

DRUM_INSTRUMENTS = frozenset({"drums", "drum kit", "drum machine"})
QUIET_FAMILIES = frozenset({"Ballad", "Soundtrack"})  # no drums unless the condition names them


def _pattern(kick, snare) -> tuple[tuple[str, ...], ...]:
    """Per step of a bar, the kinds hit, in DRUM_KINDS order (hats on every eighth)."""
    hits = {"kick": set(kick), "snare": set(snare), "hat": set(range(BAR))}
    return tuple(tuple(k for k in DRUM_KINDS if s in hits[k]) for s in range(BAR))


_BACKBEAT = _pattern(kick=(0, 4), snare=(2, 6))  # kick on 1 and 3, snare on 2 and 4
_FOUR_ON_FLOOR = _pattern(kick=(0, 2, 4, 6), snare=(2, 6))
_SYNCOPATED = _pattern(kick=(0, 3, 4), snare=(2, 6))
DRUM_PATTERNS = {"Electronic": _FOUR_ON_FLOOR, "Funk": _FOUR_ON_FLOOR, "Hip-Hop": _SYNCOPATED, "Latin": _SYNCOPATED}
_MOVES = (-2, -1, -1, -1, 0, 1, 1, 1, 2)  # mostly stepwise, in scale degrees


@lru_cache(maxsize=1)
def _families() -> dict[str, str]:
    return {g.name: g.auto_prompt for g in load_vocabulary().genres}


def mode_for(emotion: str) -> str:
    return "minor" if emotion in MINOR_EMOTIONS else "major"


def drum_pattern(genre: str, instruments: list[str]) -> tuple[tuple[str, ...], ...] | None:
    family = _families().get(genre, "Pop")
    if family in QUIET_FAMILIES and not DRUM_INSTRUMENTS.intersection(instruments):
        return None
    return DRUM_PATTERNS.get(family, _BACKBEAT)


class _Melody:
    """A walk over the scale's pitches in the singer's register, carried across sections."""

    def __init__(self, key: int, mode: str, gender: str, rng: random.Random):
        low, high = REGISTERS["male" if gender == "male" else "female"]
        scale = {(key + d) % 12 for d in SCALES[mode]}
        self.pitches = [p for p in range(low, high + 1) if p % 12 in scale]
        self.i = len(self.pitches) // 3
        self.rng = rng

    def next(self, chord_tones: frozenset[int] | None) -> int:
        """A step from the last note; on a strong beat, the nearest chord tone within a third."""
        last = len(self.pitches) - 1
        i = self.i + self.rng.choice(_MOVES)
        i = -i if i < 0 else (2 * last - i if i > last else i)
        if chord_tones is not None:
            near = [j for j in range(max(i - 2, 0), min(i + 3, last + 1)) if self.pitches[j] % 12 in chord_tones]
            if near:
                i = min(near, key=lambda j: abs(j - i))
        self.i = i
        return self.pitches[i]


def _tones(root: int, quality: str) -> frozenset[int]:
    return frozenset({root, (root + (3 if quality == "min" else 4)) % 12, (root + 7) % 12})


def _sing(score: Score, index: int, start: int, sentences: list[list[str]], chords, melody: _Melody,
          rng: random.Random) -> int:  # fmt: skip
    """Sings the sentences from `start`, one word per note, a rest after each; returns the
    section's end, rounded up to a whole bar."""
    t = start
    for sentence in sentences:
        for word in sentence:
            strong = (t - start) % (2 * STEPS_PER_BEAT) == 0  # beats 1 and 3
            duration = 2 if rng.random() < 0.6 else 1
            pitch = melody.next(chords[(t - start) // BAR % len(chords)] if strong else None)
            score.vocals.append(SungWord(t, duration, pitch, word, index))
            t += duration
        t += STEPS_PER_BEAT + (t - start) % 2  # a rest, and the next sentence starts on a beat
    return start + max(-(-(t - start) // BAR), 1) * BAR


def _accompany(score: Score, start: int, end: int, progression, pattern) -> None:
    """A chord per bar, the root in the bass on beats 1 and 3, drums throughout."""
    for bar in range(start, end, BAR):
        offset, quality = progression[(bar - start) // BAR % len(progression)]
        root, bar_end = (score.key + offset) % 12, min(bar + BAR, end)
        score.chords.append(Chord(bar, bar_end - bar, root, quality))
        onsets = [s for s in (bar, bar + BAR // 2) if s < bar_end] + [bar_end]
        score.bass += [Note(a, b - a, BASS_OCTAVE + root) for a, b in zip(onsets, onsets[1:])]
        if pattern is not None:
            score.drums += [Hit(s, kind) for s in range(bar, bar_end) for kind in pattern[s - bar]]


def compose(condition: dict, rng: random.Random) -> Score:
    """A song for the condition (keys lyric, gender, genre, emotion, instruments, bpm; an
    optional `mode` overrides the emotion's)."""
    mode = condition.get("mode") or mode_for(condition.get("emotion", ""))
    instruments = list(condition.get("instruments", []))
    score = Score(int(condition["bpm"]), rng.randrange(12), mode, condition.get("gender", "female"),
                  condition.get("genre", ""), instruments)  # fmt: skip
    melody = _Melody(score.key, mode, score.gender, rng)
    pattern = drum_pattern(score.genre, instruments)
    progressions: dict[str, tuple] = {}  # a tag keeps its progression: choruses sound alike
    t = 0
    for index, section in enumerate(split_sections(condition.get("lyric", ""))):
        tag = section.tag
        if tag not in progressions:
            progressions[tag] = rng.choice(PROGRESSIONS[mode])
        chords = [_tones((score.key + o) % 12, q) for o, q in progressions[tag]]
        if tag in VOCAL_TAGS:
            end = _sing(score, index, t, sentence_words(section.text), chords, melody, rng)
        elif tag == "silence":
            end = t + SILENCE_STEPS
        else:
            end = t + LENGTHS.get(tag.rpartition("-")[2], BAR)
        score.sections.append(Section(f"[{tag}]", t, end))
        if tag != "silence":
            _accompany(score, t, end, progressions[tag], pattern)
        t = end
    return score
