"""Turn a symbolic `Score` into real audio: flite-sung vocals over a numpy-synthesised band.

The vocals stem is later transcribed by ASR to measure the phoneme error rate, so every choice
here favours intelligibility over musical accuracy:

* Each *phrase* (words up to a rest of at least one step, never crossing a section) is spoken by
  flite in ONE call, so its own prosody and coarticulation survive; words sung one by one would
  be far harder to recognise.
* Pitch: flite's intonation model is asked for a mean F0 equal to the phrase's mean note pitch
  (`int_f0_target_mean`), clamped to a comfortable register of the voice. The per-word melody
  is not followed: speech prosody stays intact, which keeps the words recognisable.
* Time: the phrase (leading/trailing silence trimmed) is placed at its first word's start and
  time-stretched by WSOLA (pitch-preserving overlap-add) to the phrase's span in the score, with
  the factor clamped to 0.7-1.4; beyond that speech smears. What still overruns is cut (with a
  short fade) at the next phrase's start or its section's end, so phrases never overlap and
  instrumental sections stay free of voice.

Mixing: vocals and accompaniment are each peak-normalised, mixed as vocals + 0.5 * accompaniment,
and one gain brings the mix's peak to 0.99. The stems carry that same gain (the accompaniment stem
includes its 0.5), so vocals + accompaniment == mix up to 16-bit rounding.

Determinism: noise comes from a generator seeded by a hash of the score, and flite is
deterministic, so the same score always yields the same samples (and FLAC bytes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter, resample_poly

from pipeline.models.tiny.score import Score, SungWord

FLITE_RATE = 16000
STRETCH_RANGE = (0.7, 1.4)
# Mean-F0 registers (Hz) a voice stays intelligible in; pitch beyond this is clamped.
REGISTERS = {"male": (90.0, 150.0), "female": (160.0, 260.0)}
# Preferred voices in order; awb and slt honour int_f0_target_mean (rms ignores it).
VOICES = {"male": ("awb", "rms", "kal16", "kal"), "female": ("slt",)}
STEM_NAMES = ("mix", "vocals", "accompaniment")


class RenderError(RuntimeError):
    """flite failed on one phrase: the caller records it against the candidate."""


@dataclass
class RenderedSong:
    vocals: np.ndarray
    accompaniment: np.ndarray
    mix: np.ndarray
    sample_rate: int


def render(score: Score, sample_rate: int = 16000, flite_binary: str = "flite") -> RenderedSong:
    """Sing and play `score`; all three signals are float32 mono of the score's exact length."""
    n = round(score.duration_seconds * sample_rate)
    rng = np.random.default_rng(_seed(score))
    vocals = _normalise(_sing(score, sample_rate, n, flite_binary))
    accompaniment = 0.5 * _normalise(_play(score, sample_rate, n, rng))
    mix = vocals + accompaniment
    peak = float(np.max(np.abs(mix), initial=0.0))
    gain = 0.99 / peak if peak > 0 else 1.0
    return RenderedSong(*(np.asarray(x * gain, dtype=np.float32) for x in (vocals, accompaniment, mix)), sample_rate)


def write_stems(song: RenderedSong, folder: Path | str) -> dict[str, Path]:
    """Write mix/vocals/accompaniment FLACs atomically, so a crash never leaves a truncated stem."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in STEM_NAMES:
        final = folder / f"{name}.flac"
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        os.close(fd)
        try:
            sf.write(tmp, getattr(song, name), song.sample_rate, format="FLAC", subtype="PCM_16")
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        paths[name] = final
    return paths


def _seed(score: Score) -> int:
    digest = hashlib.sha256(json.dumps(score.to_dict(), sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _normalise(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x), initial=0.0))
    return x / peak if peak > 0 else x


def _index(step: float, score: Score, sr: int) -> int:
    return int(round(step * score.seconds_per_step * sr))


# ---------------------------------------------------------------- vocals


def _phrases(words: list[SungWord]) -> list[list[SungWord]]:
    """Split the words at rests of >= 1 step and at section changes: one flite call each."""
    phrases: list[list[SungWord]] = []
    for word in words:
        last = phrases[-1][-1] if phrases else None
        if last is None or word.start - (last.start + last.duration) >= 1 or word.section != last.section:
            phrases.append([word])
        else:
            phrases[-1].append(word)
    return phrases


def _sing(score: Score, sr: int, n: int, flite_binary: str) -> np.ndarray:
    out = np.zeros(n)
    if not score.vocals:
        return out
    if shutil.which(flite_binary) is None:
        raise RuntimeError("flite not found: install it with `apt-get install flite` (or run `make setup`)")
    voice = _pick_voice(flite_binary, score.gender)
    low, high = REGISTERS.get(score.gender, REGISTERS["male"])
    phrases = _phrases(score.vocals)
    for i, phrase in enumerate(phrases):
        text = " ".join(w.word for w in phrase)
        hz = 440.0 * 2 ** ((np.mean([w.pitch for w in phrase]) - 69) / 12)
        speech = _trim_silence(_flite(flite_binary, voice, text, int(round(np.clip(hz, low, high)))))
        if sr != FLITE_RATE:
            speech = resample_poly(speech, sr, FLITE_RATE)
        start = _index(phrase[0].start, score, sr)
        span = _index(phrase[-1].start + phrase[-1].duration, score, sr) - start
        factor = float(np.clip(span / max(len(speech), 1), *STRETCH_RANGE))
        speech = _wsola(speech, factor, sr)
        stop = _index(phrases[i + 1][0].start, score, sr) if i + 1 < len(phrases) else n
        if 0 <= phrase[0].section < len(score.sections):
            stop = min(stop, _index(score.sections[phrase[0].section].end, score, sr))
        speech = _fade_out(speech[: max(0, min(stop, n) - start)], int(0.02 * sr))
        out[start : start + len(speech)] += speech
    return out


@lru_cache(maxsize=8)
def _voices(flite_binary: str) -> tuple[str, ...]:
    listing = subprocess.run([flite_binary, "-lv"], capture_output=True, text=True, check=False).stdout
    return tuple(listing.split(":", 1)[-1].split())


def _pick_voice(flite_binary: str, gender: str) -> str:
    available = _voices(flite_binary)
    for voice in VOICES.get(gender, VOICES["male"]):
        if voice in available:
            return voice
    if not available:
        raise RenderError(f"flite at {flite_binary!r} lists no voices")
    return available[0]


@lru_cache(maxsize=1024)
def _flite(flite_binary: str, voice: str, text: str, f0_hz: int) -> np.ndarray:
    """One flite call for one phrase, cached per (voice, text, pitch): choruses repeat lines."""
    with tempfile.TemporaryDirectory(prefix="flite-") as tmp:
        wav = Path(tmp) / "out.wav"
        cmd = [flite_binary, "-voice", voice, "--setf", f"int_f0_target_mean={f0_hz}", "-t", text, "-o", str(wav)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, check=False)
        if proc.returncode != 0 or not wav.exists():
            raise RenderError(f"flite failed on phrase {text!r} (exit {proc.returncode}): {proc.stderr.strip()[:200]}")
        audio, rate = sf.read(wav, dtype="float64", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != FLITE_RATE:
        audio = resample_poly(audio, FLITE_RATE, rate)
    audio.setflags(write=False)  # shared through the cache
    return audio


def _trim_silence(x: np.ndarray, margin: int = 160) -> np.ndarray:
    """flite pads phrases with silence; trimming it lets the first word land on its note."""
    loud = np.flatnonzero(np.abs(x) > 0.02 * np.max(np.abs(x), initial=0.0))
    if loud.size == 0:
        return x[:0]
    return x[max(0, loud[0] - margin) : loud[-1] + margin]


def _wsola(x: np.ndarray, factor: float, sr: int) -> np.ndarray:
    """Pitch-preserving time stretch by `factor` (output length / input length), WSOLA-style:
    each 30 ms frame is taken from near its nominal input position where it best continues the
    previous frame, which avoids the phasiness of plain overlap-add."""
    if abs(factor - 1.0) < 0.01 or len(x) == 0:
        return np.array(x)
    win, tol = int(0.03 * sr), int(0.008 * sr)
    hop = win // 2
    window = np.hanning(win)
    n_out = int(len(x) * factor)
    padded = np.concatenate([np.zeros(tol), x, np.zeros(2 * win + 2 * tol)])
    out, norm = np.zeros(n_out + win), np.zeros(n_out + win)
    prev = None
    for o in range(0, n_out, hop):
        nominal = min(int(o / factor), len(x)) + tol
        if prev is None:
            pos = nominal
        else:
            target = padded[prev + hop : prev + hop + win]
            corr = np.correlate(padded[nominal - tol : nominal + tol + win], target, "valid")
            pos = nominal - tol + int(np.argmax(corr))
        out[o : o + win] += padded[pos : pos + win] * window
        norm[o : o + win] += window
        prev = pos
    return (out / np.maximum(norm, 1e-3))[:n_out]


def _fade_out(x: np.ndarray, length: int) -> np.ndarray:
    x = np.array(x)
    length = min(length, len(x))
    if length:
        x[-length:] *= np.linspace(1.0, 0.0, length)
    return x


# ---------------------------------------------------------------- accompaniment


def _timbre(instruments: list[str]) -> str:
    """The chord instrument: the first tag that names one (bass, drums and vocals play elsewhere)."""
    for tag in (t.lower() for t in instruments):
        if any(skip in tag for skip in ("bass", "drum", "percussion", "vocal")):
            continue
        for keyword, timbre in (("guitar", "pluck"), ("piano", "piano"), ("keyboard", "piano"),
                                ("string", "pad"), ("violin", "pad"), ("cello", "pad"), ("synth", "pad"),
                                ("organ", "organ"), ("accordion", "organ"), ("sax", "organ"),
                                ("trumpet", "organ"), ("trombone", "organ")):
            if keyword in tag:
                return timbre
    return "piano"


def _tone(timbre: str, hz: float, length: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    if timbre == "pluck":  # Karplus-Strong: a noise burst through a damped delay-line loop
        period = max(2, int(round(sr / hz)))
        excitation = np.zeros(length)
        excitation[:period] = rng.uniform(-1, 1, min(period, length))
        a = np.zeros(period + 2)
        a[0], a[period], a[period + 1] = 1.0, -0.498, -0.498
        return _fade_out(lfilter([1.0], a, excitation), int(0.01 * sr))
    return _steady_tone(timbre, hz, length, sr)


@lru_cache(maxsize=512)
def _steady_tone(timbre: str, hz: float, length: int, sr: int) -> np.ndarray:
    """A noise-free timbre's note, cached read-only: progressions repeat the same chords within and across songs."""
    t = np.arange(length) / sr
    if timbre == "pad":  # band-limited saw with steep roll-off ("filtered"), slow attack
        y = sum(np.sin(2 * np.pi * h * hz * t) / h**1.5 for h in range(1, 7))
        y = y * np.minimum(1.0, t / 0.08)
    elif timbre == "organ":  # steady drawbar-like harmonics
        y = sum(w * np.sin(2 * np.pi * h * hz * t) for h, w in ((1, 1.0), (2, 0.6), (3, 0.4), (4, 0.3)))
    else:  # piano: harmonics that decay faster the higher they are
        y = sum(np.sin(2 * np.pi * h * hz * t) * np.exp(-t * (0.5 + 0.5 * h)) / h for h in range(1, 6))
    y = _fade_out(y, int(0.01 * sr))
    y.flags.writeable = False
    return y


def _drum(kind: str, sr: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "kick":  # sine swept down from 120 Hz to 45 Hz
        t = np.arange(int(0.3 * sr)) / sr
        hz = 45 + 75 * np.exp(-t / 0.04)
        return np.sin(2 * np.pi * np.cumsum(hz) / sr) * np.exp(-t / 0.12)
    if kind == "snare":  # noise burst over a short 185 Hz body
        t = np.arange(int(0.2 * sr)) / sr
        return (0.7 * rng.uniform(-1, 1, t.size) + 0.5 * np.sin(2 * np.pi * 185 * t)) * np.exp(-t / 0.05)
    t = np.arange(int(0.05 * sr)) / sr  # hat: first-differenced (high-passed) noise
    return np.diff(rng.uniform(-1, 1, t.size + 1)) * np.exp(-t / 0.012)


def _play(score: Score, sr: int, n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)

    def add(signal: np.ndarray, step: float, gain: float) -> None:
        start = _index(step, score, sr)
        if start < n:
            out[start : start + len(signal)] += gain * signal[: n - start]

    timbre = _timbre(score.instruments)
    for chord in score.chords:
        length = _index(chord.duration, score, sr)
        for interval in (0, 3 if chord.quality == "min" else 4, 7):
            hz = 440.0 * 2 ** ((48 + chord.root + interval - 69) / 12)
            add(_tone(timbre, hz, length, sr, rng), chord.start, 0.25)
    for note in score.bass:
        t = np.arange(_index(note.duration, score, sr)) / sr
        hz = 440.0 * 2 ** ((note.pitch - 69) / 12)
        body = (np.sin(2 * np.pi * hz * t) + 0.3 * np.sin(4 * np.pi * hz * t)) * np.exp(-t / 0.6)
        add(_fade_out(body, int(0.01 * sr)), note.start, 0.5)
    samples = {kind: _drum(kind, sr, rng) for kind in ("kick", "snare", "hat")}
    for hit in score.drums:
        add(samples[hit.kind], hit.start, {"kick": 0.9, "snare": 0.5, "hat": 0.25}[hit.kind])
    return out
