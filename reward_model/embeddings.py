"""Audio embeddings the reward model's head reads: one fixed-length float32 vector per song.

Two backends behind one interface (`load_embedder(EmbeddingConfig(...)).embed(items)`):

* `features` (embedded default, numpy/scipy only): a few descriptors of the stems, chosen for
  what a listener hears as careless music rather than for genre or timbre. Harmony: the
  accompaniment's chroma (100 Hz-1 kHz, where the chords and the bass's harmonics sit) labelled
  frame by frame with its best triad, and how much of it fits the one diatonic scale that fits
  best (the key the music itself establishes; no key token is read). Rhythm: onset envelopes of
  the accompaniment (low band, mid band, chroma flux, which pitched onsets move and noise drums
  barely do, high band) and of the vocals, each summarised at the beat period of the tempo
  estimated from the audio: how strongly the onsets lock to one phase (vector strength), and
  where that phase sits on the beat grid anchored at the start of the audio (+1 on the beat, -1
  an eighth late). Silences and the voice's activity. `FEATURE_NAMES` lists them in order
  (`FEATURE_DIM`); `FEATURES_VERSION` changes whenever one of them does, so a checkpoint records
  which vector it was trained on.
* `muq` (production): MuQ-MuLan's audio tower, the mean of its unit clip embeddings over the
  song's 10-s clips, through `pipeline.scoring.mulan`'s loader and clipping rule (the same
  embeddings the prompt-consistency scorer uses for similarity).

Both take the mix from `ScoringItem.stems["mix"]` (else `audio_path`); `features` also reads the
vocals and accompaniment stems and falls back to the mix where a stem is missing. A song that
cannot be embedded gets an `Embedding` with `error` set; the others go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.scoring.audio_features import ONSET_FFT, chroma_frames, estimate_tempo, onset_envelope, spectrogram
from pipeline.scoring.base import ScoringItem
from pipeline.scoring.embedding_scorer import AudioError, check_audio, load_mono
from pipeline.scoring.processes import map_in_processes, use_processes
from reward_model.options import EmbeddingConfig

FEATURES_VERSION = "reward-features/2"
FEATURE_NAMES: tuple[str, ...] = (
    "diatonic_chord_share", "scale_energy_share", "out_of_scale_mean", "out_of_scale_p90", "triad_fit",
    "low_beat_strength", "mid_beat_strength", "chroma_beat_strength", "chroma_eighth_strength",
    "mid_two_beat_strength", "vocal_beat_strength", "chroma_two_beat_strength", "tempo_log2",
    "low_on_beat", "mid_on_beat", "chroma_on_beat", "high_on_beat", "vocal_on_beat",
    "silent_share", "longest_silence_log_s", "vocal_activity",
)  # fmt: skip
FEATURE_DIM = len(FEATURE_NAMES)


@dataclass
class Embedding:
    candidate_id: str
    vector: np.ndarray | None = None  # float32, (dim,)
    error: str | None = None


def _stem(item: ScoringItem, name: str) -> Path:
    return Path(item.stems.get(name) or item.stems.get("mix") or item.audio_path)


# ---------------------------------------------------------------- the `features` backend


def _beat_phase(env: np.ndarray, period: float) -> complex:
    """sum e_t exp(2 pi i t / period) / sum e_t over the envelope's excess above its median: the
    modulus is 1 when every onset sits at one phase of the grid, the angle is that phase (0 = on
    the grid anchored at t = 0)."""
    env = np.maximum(env - np.median(env), 0.0)
    total = float(env.sum())
    if total <= 0 or period <= 1:
        return 0j
    return complex(env @ np.exp(2j * np.pi * np.arange(len(env)) / period) / total)


def _silences(x: np.ndarray, hop_s: float, floor_db: float = -35.0) -> tuple[np.ndarray, float]:
    """Frames quieter than floor_db below the loud (95th-percentile) level, and the longest run (s)."""
    frames = x[: len(x) // 512 * 512].reshape(-1, 512)
    db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    quiet = db < np.percentile(db, 95) + floor_db
    longest, run = 0, 0
    for q in quiet:
        run = run + 1 if q else 0
        longest = max(longest, run)
    return quiet, longest * hop_s


def _unit_rows(m: np.ndarray) -> np.ndarray:
    m = m - m.mean(axis=1, keepdims=True)
    return m / (np.linalg.norm(m, axis=1, keepdims=True) + 1e-12)


MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
SCALES = np.array([[float((pc - tonic) % 12 in MAJOR_SCALE) for pc in range(12)] for tonic in range(12)])
# 24 triads (major on C..B, then minor), and which of the 12 diatonic scales holds all three tones
TRIADS = np.array([[float((pc - r) % 12 in ((0, 4, 7) if q == 0 else (0, 3, 7))) for pc in range(12)]
                   for q in (0, 1) for r in range(12)])  # fmt: skip
DIATONIC = (TRIADS @ SCALES.T) == 3


def _harmony_features(acc: np.ndarray, sr: int) -> list[float]:
    """The share of labelled chord energy on triads diatonic to the best-fitting scale, the chroma
    energy inside that scale, the per-frame share outside it (mean, 90th percentile), and how
    well frames fit a triad at all. A major scale and its relative minor share one row."""
    chroma = chroma_frames(acc, sr, 4096, 100.0, 1000.0)
    energy = chroma.sum(axis=1)
    chroma = chroma[energy > 0.1 * (np.percentile(energy, 95) + 1e-12)]  # rests have no chord
    if len(chroma) == 0:
        return [0.0] * 5
    fit = _unit_rows(chroma) @ _unit_rows(TRIADS).T
    labels, weights = np.argmax(fit, axis=1), chroma.sum(axis=1)
    diatonic = weights @ DIATONIC[labels] / weights.sum()  # per scale
    best = int(np.argmax(diatonic))
    profile = chroma.mean(axis=0) / (chroma.mean(axis=0).sum() + 1e-12)
    outside = chroma @ (1.0 - SCALES[best]) / (weights + 1e-12)
    return [float(diatonic[best]), float((SCALES @ profile).max()), float(outside.mean()),
            float(np.percentile(outside, 90)), float(fit.max(axis=1).mean())]  # fmt: skip


def _chroma_flux(x: np.ndarray, sr: int, hop: int) -> np.ndarray:
    """Positive change of log pitch-class energy (60 Hz-1 kHz) per hop: onsets of pitched notes."""
    mag = spectrogram(x, sr, 2048, hop)
    freqs = np.fft.rfftfreq(2048, 1.0 / sr)
    band = (freqs >= 60.0) & (freqs < 1000.0)
    chroma = np.sqrt(mag[:, band]) @ np.eye(12)[np.round(69 + 12 * np.log2(freqs[band] / 440.0)).astype(int) % 12]
    chroma = np.log1p(10.0 * chroma / (chroma.max() + 1e-12))
    return np.maximum(np.diff(chroma, axis=0, prepend=chroma[:1]), 0.0).sum(axis=1)


def _rhythm_features(acc: np.ndarray, voc: np.ndarray, sr: int) -> list[float]:
    """Onset envelopes at the beat period of the audio's tempo: vector strengths (pulse
    regularity) and on-beat phases (the real part: +1 every onset on the beat, -1 an eighth late)."""
    hop = sr // 100
    mag = spectrogram(acc, sr, ONSET_FFT, hop)  # one spectrogram for the accompaniment's bands
    low, mid = onset_envelope(acc, sr, hop, 30.0, 400.0, mag), onset_envelope(acc, sr, hop, 100.0, 1000.0, mag)
    bpm = estimate_tempo(acc, sr, env=low)["bpm"]  # the tempo's envelope is `low`
    beat = 60.0 * (sr / hop) / bpm
    flux, high = _chroma_flux(acc, sr, hop), onset_envelope(acc, sr, hop, 4000.0, 8000.0, mag)
    vocal = onset_envelope(voc, sr, hop, 80.0, 4000.0)
    strength = [abs(_beat_phase(e, p)) for e, p in ((low, beat), (mid, beat), (flux, beat), (flux, beat / 2),
                                                    (mid, 2 * beat), (vocal, beat), (flux, 2 * beat))]  # fmt: skip
    on_beat = [_beat_phase(e, beat).real for e in (low, mid, flux, high, vocal)]
    return [*strength, float(np.log2(bpm / 120.0)), *on_beat]


def song_features(mix: np.ndarray, vocals: np.ndarray, accompaniment: np.ndarray, sr: int) -> np.ndarray:
    """The `features` vector (FEATURE_NAMES order) of one song's three mono stems at rate sr."""
    hop = 512
    quiet, longest = _silences(mix, hop / sr)
    vquiet, _ = _silences(np.concatenate([vocals, np.zeros(max(0, len(mix) - len(vocals)))]), hop / sr, -30.0)
    values = [
        *_harmony_features(accompaniment, sr),
        *_rhythm_features(accompaniment, vocals, sr),
        float(quiet.mean()), float(np.log1p(longest)), float(1.0 - vquiet.mean()),
    ]  # fmt: skip
    return np.asarray(values, dtype=np.float32)


class FeatureEmbedder:
    """The embedded backend: `song_features` of each item's stems."""

    name = "features"
    version = FEATURES_VERSION
    dim = FEATURE_DIM

    def __init__(self, config: EmbeddingConfig | None = None):
        self.config = config or EmbeddingConfig()

    def _one(self, item: ScoringItem) -> np.ndarray:
        sr = self.config.sample_rate
        mix = load_mono(_stem(item, "mix"), sr)
        check_audio(mix, sr, self.config.min_seconds, self.config.silence_dbfs)
        stems = {}
        for name in ("vocals", "accompaniment"):
            stems[name] = load_mono(_stem(item, name), sr)
            if not np.all(np.isfinite(stems[name])):
                raise AudioError(f"{name} stem contains NaN or infinite samples")
        vector = song_features(mix, stems["vocals"], stems["accompaniment"], sr)
        if not np.all(np.isfinite(vector)):
            bad = [FEATURE_NAMES[i] for i in np.flatnonzero(~np.isfinite(vector))]
            raise AudioError(f"non-finite features: {', '.join(bad)}")
        return vector

    def embed(self, items: list[ScoringItem]) -> list[Embedding]:
        """Every item's embedding, in order; `workers` processes share them (the same vectors on any count)."""
        if not use_processes(len(items), self.config.workers):
            return [self._embedding(item) for item in items]
        return map_in_processes(_feature_embedding, [(self.config, item) for item in items], self.config.workers)

    def _embedding(self, item: ScoringItem) -> Embedding:
        try:
            return Embedding(item.candidate_id, self._one(item))
        except AudioError as exc:
            return Embedding(item.candidate_id, error=str(exc))

    def describe(self) -> dict:
        used = {"backend", "sample_rate", "min_seconds", "silence_dbfs"}
        return {"backend": self.name, "version": self.version, "dim": self.dim,
                "config": self.config.model_dump(mode="json", include=used)}  # fmt: skip


def _feature_embedding(job: tuple[EmbeddingConfig, ScoringItem]) -> Embedding:
    """One item's `features` embedding, in a worker process."""
    config, item = job
    return FeatureEmbedder(config)._embedding(item)


# ---------------------------------------------------------------- the `muq` backend


class MuqEmbedder:
    """MuQ-MuLan's audio tower: the mean of the unit clip embeddings of each song's mix."""

    name = "muq"

    def __init__(self, config: EmbeddingConfig, _scorer=None):
        from pipeline.scoring.mulan import MulanOptions, MulanScorer

        if _scorer is None:
            if config.model_dir is None:
                raise ValueError("embedding backend 'muq' needs model_dir (a local MuQ-MuLan directory)")
            options = MulanOptions(model_dir=config.model_dir, audio_model_dir=config.audio_model_dir,
                                   text_model_dir=config.text_model_dir, device=config.device,
                                   batch_clips=config.batch_clips, min_seconds=config.min_seconds,
                                   silence_dbfs=config.silence_dbfs)  # fmt: skip
            _scorer = MulanScorer(options)
        self.config, self.scorer = config, _scorer
        self.dim = int(self.scorer.model.mulan_module.dim_latent)
        self.version = f"muq-mulan-audio/{self.scorer.describe()['model_digest'][:16]}"

    def embed(self, items: list[ScoringItem]) -> list[Embedding]:
        mixes = [ScoringItem(it.candidate_id, _stem(it, "mix"), it.lyric, it.language, it.description) for it in items]
        means, errors, _ = self.scorer.embed_audio(mixes)
        out = []
        for i, item in enumerate(items):
            if i in errors:
                out.append(Embedding(item.candidate_id, error=errors[i]))
            elif not np.all(np.isfinite(means[i])):
                out.append(Embedding(item.candidate_id, error="non-finite embedding"))
            else:
                out.append(Embedding(item.candidate_id, means[i].astype(np.float32)))
        return out

    def describe(self) -> dict:
        return {"backend": self.name, "version": self.version, "dim": self.dim,
                "config": self.config.model_dump(mode="json"), "model": self.scorer.describe()}  # fmt: skip


def load_embedder(config: EmbeddingConfig | None = None):
    """The embedder for a config: `FeatureEmbedder` or `MuqEmbedder`."""
    config = config or EmbeddingConfig()
    return FeatureEmbedder(config) if config.backend == "features" else MuqEmbedder(config)


def embedding_matrix(embeddings: list[Embedding]) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """(ids, (n, dim) float32 matrix, errors by candidate id) of the embeddings that succeeded."""
    good = [e for e in embeddings if e.error is None]
    dim = len(good[0].vector) if good else 0
    matrix = np.stack([e.vector for e in good]).astype(np.float32) if good else np.zeros((0, dim), np.float32)
    return [e.candidate_id for e in good], matrix, {e.candidate_id: e.error for e in embeddings if e.error}
