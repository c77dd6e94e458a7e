"""The embedded world's ground truth, read from a tiny-model song's own tokens: what the audio
scorers estimate, measured without ASR or audio (noise-free, and fast enough for hundreds of songs).

- `symbolic_wer`: word error rate of the sung words against the lyric (what PER estimates);
- `tempo_hit`, `mode_hit`: the decoded tempo bucket and mode equal the described ones (what the
  text-audio similarity estimates);
- `utility`: the hidden musicality utility the simulated crowd ranks by (what the reward model learns).

Used by the simulated crowd (reward_model/crowd.py) and by the oracle ablation (alignment/sweep/oracle.py).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.models.tiny.score import BAR, SCALES, STEPS_PER_BEAT, Score

# metric -> higher is better
ORACLE_METRICS = {"symbolic_wer": False, "tempo_hit": True, "mode_hit": True, "utility": True}


class MusicalityWeights(BaseModel):
    """Weights of the utility's components (each in [0, 1], 1 = sound); normalised by their sum.

    Parameters:
        in_key: Share of sung notes whose pitch class is in the score's key and mode.
        chords_in_key: Share of chord time on diatonic triads (root and third in the scale).
        on_grid: Share of note onsets (voice, chords, bass) on a beat.
        smoothness: 1 - mean absolute interval between consecutive sung notes / octave (capped at 0).
        chord_tones: Share of sung notes starting on beats 1 and 3 whose pitch class is in the sounding chord.
        no_silence: 1 - share of the song inside silent stretches (nothing sounding) longer than a bar.
    """

    model_config = ConfigDict(extra="forbid")

    in_key: float = Field(1.0, ge=0)
    chords_in_key: float = Field(1.0, ge=0)
    on_grid: float = Field(1.0, ge=0)
    smoothness: float = Field(0.5, ge=0)
    chord_tones: float = Field(0.5, ge=0)
    no_silence: float = Field(1.5, ge=0)


def _chord_at(score: Score, step: int):
    for chord in score.chords:
        if chord.start <= step < chord.start + chord.duration:
            return chord
    return None


def _triad(chord) -> tuple[int, int, int]:
    return chord.root, (chord.root + (3 if chord.quality == "min" else 4)) % 12, (chord.root + 7) % 12


def heard_scale(score: Score) -> set[int]:
    """The diatonic scale a listener hears: of the 12 diatonic pitch-class sets (a minor key shares
    its relative major's), the one holding the most sung and chord duration. Annotators judge
    "in key" against it, not against the key token the model wrote, which nothing renders."""
    weight = np.zeros(12)
    for note in score.vocals:
        weight[note.pitch % 12] += note.duration
    for chord in score.chords:
        for pitch_class in _triad(chord):
            weight[pitch_class] += chord.duration
    fit = [sum(weight[(tonic + d) % 12] for d in SCALES["major"]) for tonic in range(12)]
    tonic = int(np.argmax(fit))  # ties: the lowest tonic, deterministic
    return {(tonic + d) % 12 for d in SCALES["major"]}


def utility_components(score: Score) -> dict[str, float]:
    """The musicality components of one decoded score, each in [0, 1] (1 = sound)."""
    scale = heard_scale(score)
    notes = sorted(score.vocals, key=lambda w: w.start)
    chord_steps = sum(c.duration for c in score.chords)
    diatonic = sum(c.duration for c in score.chords
                   if c.root in scale and (c.root + (3 if c.quality == "min" else 4)) % 12 in scale)  # fmt: skip
    onsets = [w.start for w in notes] + [c.start for c in score.chords] + [n.start for n in score.bass]
    intervals = [abs(b.pitch - a.pitch) for a, b in zip(notes, notes[1:])]
    strong = [w for w in notes if w.start % (2 * STEPS_PER_BEAT) == 0]
    agree = 0
    for w in strong:
        chord = _chord_at(score, w.start)
        if chord is not None:
            tones = set(_triad(chord))
            agree += w.pitch % 12 in tones
    sounding = np.zeros(max(score.steps, 1), dtype=bool)
    for start, length in [(w.start, w.duration) for w in notes] + [(c.start, c.duration) for c in score.chords] + \
            [(n.start, n.duration) for n in score.bass] + [(h.start, 1) for h in score.drums]:
        sounding[start:start + length] = True
    silent, run = 0, 0
    for on in list(sounding) + [True]:
        if on:
            silent += run if run > BAR else 0
            run = 0
        else:
            run += 1
    return {
        "in_key": sum(w.pitch % 12 in scale for w in notes) / len(notes) if notes else 0.0,
        "chords_in_key": diatonic / chord_steps if chord_steps else 0.0,
        "on_grid": sum(t % STEPS_PER_BEAT == 0 for t in onsets) / len(onsets) if onsets else 0.0,
        "smoothness": max(0.0, 1.0 - float(np.mean(intervals)) / 12.0) if intervals else 0.0,
        "chord_tones": agree / len(strong) if strong else 0.0,
        "no_silence": 1.0 - silent / len(sounding),
    }


def utility(score: Score, weights: MusicalityWeights | None = None) -> float:
    """The hidden musicality utility: the weighted mean of `utility_components`."""
    w = (weights or MusicalityWeights()).model_dump()
    parts = utility_components(score)
    return float(sum(w[k] * parts[k] for k in w) / max(sum(w.values()), 1e-12))


def decode_candidate(tokens: dict, condition: dict) -> Score:
    """A sampled candidate's score, decoded from its token streams (`read_tokens`) as the renderer did."""
    from pipeline.models.tiny.codec import SymbolicCodec, lyric_words

    return SymbolicCodec().decode(tokens, condition, lyric_words(condition.get("lyric", "")))


def header_metrics(score: Score, condition: dict) -> dict[str, float]:
    """`tempo_hit` and `mode_hit`: what the song's header decided (pipeline.models.tiny.header_odds)."""
    from pipeline.models.tiny.composer import mode_for
    from pipeline.vocab import tempo_bucket

    described = condition.get("tempo") or tempo_bucket(condition["bpm"])
    return {"tempo_hit": float(tempo_bucket(score.tempo_bpm) == described),
            "mode_hit": float(score.mode == mode_for(condition.get("emotion", "")))}  # fmt: skip


def oracle_metrics(tokens: dict, condition: dict, weights: MusicalityWeights | None = None,
                   score: Score | None = None) -> dict[str, float]:  # fmt: skip
    """Every oracle metric of one sampled song (its token streams) for its condition; `score`: the
    song already decoded, if the caller has it."""
    from pipeline.models.tiny.codec import lyric_words, word_error_rate

    words = lyric_words(condition.get("lyric", ""))
    score = score or decode_candidate(tokens, condition)
    return {
        "symbolic_wer": 100.0 * word_error_rate(score, words),  # x100, as PER
        **header_metrics(score, condition),
        "utility": utility(score, weights),
        "frames": float(len(tokens["mixed"])),
    }
