"""The tiny renderer: real, deterministic stems whose vocals sit where the score sings."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.models.tiny import renderer
from pipeline.models.tiny.renderer import RenderError, render, write_stems
from pipeline.models.tiny.score import Chord, Hit, Note, Score, Section, SungWord

pytestmark = pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed")

SR = 16000
LINES = ("the morning light is on my face", "we keep on walking through the rain")


def make_score(gender: str = "male") -> Score:
    """100 bpm (0.3 s a step): a sung verse of two phrases, then an instrumental outro."""
    vocals = []
    for line, first in zip(LINES, (2, 18)):
        for k, word in enumerate(line.split()):
            vocals.append(SungWord(first + 2 * k, 2, 55 + (k % 3) * 2, word, 0))
    chords = [Chord(0, 16, 0, "maj"), Chord(16, 16, 9, "min"), Chord(32, 16, 5, "maj")]
    bass = [Note(c.start + o, 4, 36 + c.root) for c in chords for o in range(0, 16, 4)]
    drums = [Hit(s, "kick" if s % 8 == 0 else "snare") for s in range(0, 48, 4)] + [Hit(s, "hat") for s in range(2, 48, 4)]
    return Score(
        tempo_bpm=100, key=0, mode="major", gender=gender, genre="pop", instruments=["piano", "drums", "bass guitar"],
        sections=[Section("[verse]", 0, 34), Section("[outro]", 34, 48)],
        vocals=vocals, chords=chords, bass=bass, drums=sorted(drums, key=lambda h: h.start),
    )


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def seconds(score: Score, step: float) -> int:
    return round(step * score.seconds_per_step * SR)


@pytest.fixture(scope="module")
def song():
    return render(make_score())


def test_stems_load_at_16k_with_the_score_duration(song, tmp_path):
    score = make_score()
    paths = write_stems(song, tmp_path)
    assert set(paths) == {"mix", "vocals", "accompaniment"}
    for path in paths.values():
        audio, rate = sf.read(path)
        assert rate == SR and audio.ndim == 1
        assert abs(len(audio) - score.duration_seconds * SR) <= 1
    assert np.allclose(song.vocals + song.accompaniment, song.mix, atol=1e-5)
    assert np.max(np.abs(song.mix)) <= 0.99 + 1e-6


def test_same_score_gives_identical_flac_bytes(song, tmp_path):
    renderer._flite.cache_clear()
    again = render(make_score())
    a, b = write_stems(song, tmp_path / "a"), write_stems(again, tmp_path / "b")
    for name in a:
        assert a[name].read_bytes() == b[name].read_bytes()


def test_vocals_sound_where_words_are_and_rest_elsewhere(song):
    score, v = make_score(), song.vocals
    loud = min(rms(v[seconds(score, s) : seconds(score, s + 6)]) for s in (2, 18))  # inside each phrase
    assert loud > 0.02
    assert rms(v[: seconds(score, 1.5)]) < 0.01 * loud  # before the first word
    assert rms(v[seconds(score, 34) :]) < 0.01 * loud  # instrumental outro


def test_accompaniment_has_chord_fundamentals_and_drum_onsets(song):
    score, acc = make_score(), song.accompaniment
    last = acc[seconds(score, 32) : seconds(score, 48)]  # the F major chord
    spectrum = np.abs(np.fft.rfft(last * np.hanning(len(last))))
    freqs = np.fft.rfftfreq(len(last), 1 / SR)
    band = (freqs > 100) & (freqs < 400)
    floor = np.median(spectrum[band])
    for midi in (53, 57, 60):  # F major on F3: F3, A3, C4
        hz = 440.0 * 2 ** ((midi - 69) / 12)
        near = np.abs(freqs - hz) < 2.0
        assert spectrum[near].max() > 20 * floor, midi
    window = int(0.03 * SR)
    for hit in (h for h in score.drums if h.kind == "kick"):
        at = seconds(score, hit.start)
        after = rms(acc[at : at + window])
        before = rms(acc[max(0, at - window) : at])
        assert after > 1.5 * before, hit


def test_male_and_female_use_different_voices():
    male, female = render(make_score("male")), render(make_score("female"))
    assert not np.array_equal(male.vocals, female.vocals)
    assert abs(np.corrcoef(male.vocals, female.vocals)[0, 1]) < 0.5


def test_missing_flite_gives_a_clear_error():
    with pytest.raises(RuntimeError, match="flite not found"):
        render(make_score(), flite_binary="/nonexistent/flite")


def test_flite_failure_names_the_phrase(tmp_path):
    fake = tmp_path / "flite"
    fake.write_text('#!/bin/sh\nif [ "$1" = "-lv" ]; then echo "Voices available: awb slt"; exit 0; fi\nexit 3\n')
    fake.chmod(0o755)
    with pytest.raises(RenderError, match="the morning light"):
        render(make_score(), flite_binary=str(fake))


def test_atomic_write_leaves_no_temp_files(song, tmp_path):
    write_stems(song, tmp_path)
    write_stems(song, tmp_path)  # overwriting goes through a temp name too
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["accompaniment.flac", "mix.flac", "vocals.flac"]


def test_instrumental_score_needs_no_flite():
    score = replace(make_score(), vocals=[])
    song = render(score, flite_binary="/nonexistent/flite")
    assert rms(song.vocals) == 0.0 and rms(song.accompaniment) > 0.01
