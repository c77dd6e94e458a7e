"""Audio embeddings the reward model's head reads: one fixed-length float32 vector per song.

Two backends behind one interface (`load_embedder(EmbeddingConfig(...)).embed(items)`):

* `features` (embedded default, numpy/scipy only): hand-made descriptors of the stems, chosen
  for what a listener hears as careless music rather than for genre or timbre: how clearly the
  accompaniment sits in one key (chroma against Krumhansl-Schmuckler profiles, triad fit), how
  regular the pulse is and whether the accompaniment's and the voice's onsets fall on its grid
  (vector strength of the onset envelope at the beat and eighth-note periods), silences, the
  voice's f0 and voicing, spectral flatness, the high band's share and log-mel band statistics.
  `FEATURE_NAMES` lists them in order (`FEATURE_DIM` = 51); `FEATURES_VERSION` changes whenever
  one of them does, so a checkpoint records which vector it was trained on.
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
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.scoring.audio_features import KS_MAJOR, KS_MINOR, chroma_frames, estimate_f0, grid_salience
from pipeline.scoring.audio_features import high_band_share, onset_envelope, spectrogram
from pipeline.scoring.base import ScoringItem
from pipeline.scoring.embedding_scorer import AudioError, check_audio, load_mono

FEATURES_VERSION = "reward-features/1"
N_MELS = 16
FEATURE_NAMES: tuple[str, ...] = (
    *(f"logmel_mean_{i}" for i in range(N_MELS)), *(f"logmel_std_{i}" for i in range(N_MELS)),
    "flatness_mean", "flatness_std",
    "silent_share", "longest_silence_log_s", "vocal_activity",
    "key_clarity", "in_scale_share", "triad_fit", "diatonic_chord_share", "chroma_entropy", "vocal_in_scale_share",
    "pulse_clarity", "accompaniment_eighth_strength", "vocal_beat_strength", "vocal_eighth_strength",
    "f0_log2", "voiced_share", "high_band_share", "duration_log_s",
)  # fmt: skip
FEATURE_DIM = len(FEATURE_NAMES)


class EmbeddingConfig(BaseModel):
    """Which embedding backend the reward model reads, and its options.

    Parameters:
        backend: `features` (embedded numpy descriptors) or `muq` (MuQ-MuLan audio tower).
        sample_rate: Rate the `features` backend decodes audio at (Hz); the tiny renders are 16 kHz.
        min_seconds: Shorter audio is an error row, not an embedding.
        silence_dbfs: A mix whose peak is below this level (dBFS) is an error row.
        model_dir: `muq` only: the local MuQ-MuLan directory (see `pipeline.scoring.mulan`).
        audio_model_dir: `muq` only: override for the MuQ tower's directory.
        text_model_dir: `muq` only: override for the XLM-RoBERTa tower's directory (the loader builds both).
        device: `muq` only: "auto", "cpu" or "cuda".
        batch_clips: `muq` only: clips per forward pass, gathered across songs.
    """

    model_config = ConfigDict(extra="forbid")

    backend: Literal["features", "muq"] = Field("features", description="Embedding backend.")
    sample_rate: int = Field(16000, ge=8000, description="features: decoding rate (Hz).")
    min_seconds: float = Field(1.0, ge=0, description="Shorter audio is an error.")
    silence_dbfs: float = Field(-60.0, description="A mix peaking below this (dBFS) is an error.")
    model_dir: Path | None = Field(None, description="muq: local MuQ-MuLan directory.")
    audio_model_dir: Path | None = Field(None, description="muq: MuQ tower directory override.")
    text_model_dir: Path | None = Field(None, description="muq: XLM-RoBERTa tower directory override.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="muq: device.")
    batch_clips: int = Field(32, ge=1, description="muq: clips per forward pass.")


@dataclass
class Embedding:
    candidate_id: str
    vector: np.ndarray | None = None  # float32, (dim,)
    error: str | None = None


def _stem(item: ScoringItem, name: str) -> Path:
    return Path(item.stems.get(name) or item.stems.get("mix") or item.audio_path)


# ---------------------------------------------------------------- the `features` backend


def _mel_filterbank(sr: int, n_fft: int, n_mels: int, low: float = 60.0, high: float = 7000.0) -> np.ndarray:
    """Triangular filters evenly spaced on the mel scale: (n_fft // 2 + 1, n_mels)."""
    mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
    edges = 700.0 * (10 ** (np.linspace(mel(low), mel(min(high, sr / 2)), n_mels + 2) / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid))).T


def _vector_strength(env: np.ndarray, period: float) -> float:
    """|sum e_t exp(2 pi i t / period)| / sum e_t: 1 when every onset sits at one phase of the grid."""
    env = np.maximum(env - np.median(env), 0.0)
    total = float(env.sum())
    if total <= 0 or period <= 1:
        return 0.0
    phase = np.exp(2j * np.pi * np.arange(len(env)) / period)
    return float(np.abs(env @ phase) / total)


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


def _triads() -> np.ndarray:
    """24 binary triad templates: rows 0-11 major on C..B, rows 12-23 minor."""
    triads = np.zeros((24, 12))
    for r in range(12):
        triads[r, [r, (r + 4) % 12, (r + 7) % 12]] = 1.0
        triads[12 + r, [r, (r + 3) % 12, (r + 7) % 12]] = 1.0
    return triads


def _unit_rows(m: np.ndarray) -> np.ndarray:
    m = m - m.mean(axis=1, keepdims=True)
    return m / (np.linalg.norm(m, axis=1, keepdims=True) + 1e-12)


MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)


def _key_features(acc: np.ndarray, voc: np.ndarray, sr: int) -> list[float]:
    """Key clarity (best Krumhansl-Schmuckler correlation), the share of chroma energy in the best
    diatonic scale, mean triad fit, the share of chord frames on a triad diatonic to that scale,
    chroma entropy, and the vocals' share of chroma energy in the accompaniment's scale."""
    chroma = chroma_frames(acc, sr, 4096, 55.0)
    energy = chroma.sum(axis=1)
    chroma = chroma[energy > 0.1 * (np.percentile(energy, 95) + 1e-12)]
    if len(chroma) == 0:
        return [0.0] * 6
    profile = chroma.mean(axis=0) / (chroma.mean(axis=0).sum() + 1e-12)
    corr = [np.corrcoef(profile, np.roll(p, t))[0, 1] for p in (KS_MAJOR, KS_MINOR) for t in range(12)]
    scales = np.zeros((12, 12))
    for tonic in range(12):
        scales[tonic, [(tonic + d) % 12 for d in MAJOR_SCALE]] = 1.0
    tonic = int(np.argmax(scales @ profile))  # the major scale (and its relative minor) holding most energy
    triads = _triads()
    diatonic = (triads @ scales[tonic]) == 3  # all three tones in the scale
    fit = _unit_rows(chroma) @ _unit_rows(triads).T
    labels = np.argmax(fit, axis=1)
    weights = chroma.sum(axis=1)
    entropy = float(-(profile * np.log(profile + 1e-12)).sum() / np.log(12))
    vchroma = chroma_frames(voc, sr, 2048, 80.0).sum(axis=0)
    vocal_in_scale = float(vchroma @ scales[tonic] / vchroma.sum()) if vchroma.sum() > 0 else 0.0
    return [float(np.nan_to_num(np.nanmax(corr))), float(profile @ scales[tonic]), float(np.mean(np.max(fit, axis=1))),
            float(weights @ diatonic[labels] / weights.sum()), entropy, vocal_in_scale]  # fmt: skip


def _rhythm_features(acc: np.ndarray, voc: np.ndarray, sr: int) -> list[float]:
    hop = sr // 100
    fps = sr / hop
    env = onset_envelope(acc, sr, hop)
    bpms = 60.0 * np.exp(np.arange(0.0, np.log(200.0 / 60.0), 0.01))
    salience = grid_salience(env, fps, bpms)
    spread = float(np.abs(env - env.mean()).sum()) + 1e-12
    beat = 60.0 * fps / float(bpms[int(np.argmax(salience))])
    full = onset_envelope(acc, sr, hop, 30.0, 8000.0)
    venv = onset_envelope(voc, sr, hop, 80.0, 4000.0)
    return [float(salience.max()) / spread, _vector_strength(full, beat / 2),
            _vector_strength(venv, beat), _vector_strength(venv, beat / 2)]  # fmt: skip


def song_features(mix: np.ndarray, vocals: np.ndarray, accompaniment: np.ndarray, sr: int) -> np.ndarray:
    """The `features` vector (FEATURE_NAMES order) of one song's three mono stems at rate sr."""
    n_fft, hop = 1024, 512
    power = spectrogram(mix, sr, n_fft, hop) ** 2
    logmel = np.log(power @ _mel_filterbank(sr, n_fft, N_MELS) + 1e-8)
    loud = power.sum(axis=1) > 1e-4 * (np.percentile(power.sum(axis=1), 95) + 1e-12)
    flat = np.exp(np.mean(np.log(power[loud] + 1e-12), axis=1)) / (np.mean(power[loud], axis=1) + 1e-12)
    quiet, longest = _silences(mix, hop / sr)
    vquiet, _ = _silences(np.concatenate([vocals, np.zeros(max(0, len(mix) - len(vocals)))]), hop / sr, -30.0)
    f0 = estimate_f0(vocals, sr)
    values = [
        *logmel.mean(axis=0), *logmel.std(axis=0),
        float(flat.mean()) if flat.size else 0.0, float(flat.std()) if flat.size else 0.0,
        float(quiet.mean()), float(np.log1p(longest)), float(1.0 - vquiet.mean()),
        *_key_features(accompaniment, vocals, sr),
        *_rhythm_features(accompaniment, vocals, sr),
        float(np.log2(f0["f0_hz"] / 150.0)) if f0["f0_hz"] else 0.0, float(f0["voiced"]),
        high_band_share(accompaniment, sr), float(np.log(len(mix) / sr)),
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
        out = []
        for item in items:
            try:
                out.append(Embedding(item.candidate_id, self._one(item)))
            except AudioError as exc:
                out.append(Embedding(item.candidate_id, error=str(exc)))
        return out

    def describe(self) -> dict:
        used = {"backend", "sample_rate", "min_seconds", "silence_dbfs"}
        return {"backend": self.name, "version": self.version, "dim": self.dim,
                "config": self.config.model_dump(mode="json", include=used)}  # fmt: skip


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
