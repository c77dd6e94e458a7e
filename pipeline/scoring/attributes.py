"""The `attributes` text-audio scorer: how well a song's audio matches its described tags.

The embedded world has no joint text-audio model, but its descriptions are tag lists whose
musical content can be measured: tempo, mode (the emotion implies one), the singer's register
(the gender tag) and whether drums play (genre family and instrument tags). Each attribute is
estimated from the audio (`audio_features`), compared with what the tags ask for as an agreement
in [0, 1], and the similarity is the weighted mean of the agreements of the attributes the tags
describe. Agreements are graded, not 0/1, so that near-misses rank between hits and clear misses
and a preference pair has a margin to speak of.

Stems are used when the candidate has them: the accompaniment for tempo, key and drums (the voice
only blurs onsets and chroma), the vocals for pitch; otherwise the mix serves for all.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field

from pipeline.models.tiny.composer import DRUM_INSTRUMENTS, QUIET_FAMILIES, mode_for
from pipeline.scoring import audio_features as features
from pipeline.scoring.base import ScoringItem, Similarity
from pipeline.scoring.processes import map_in_processes, use_processes
from pipeline.vocab import load_vocabulary, tempo_bucket


class AttributesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["attributes"] = Field("attributes", description="Selects this scorer.")
    sample_rate: int = Field(16000, gt=0, description="Rate the audio is resampled to before analysis.")
    weight_tempo: float = Field(1.0, ge=0, description="Weight of tempo agreement in the total.")
    weight_mode: float = Field(1.0, ge=0, description="Weight of mode (major/minor vs the emotion) agreement.")
    weight_register: float = Field(1.0, ge=0, description="Weight of vocal register (vs the gender tag) agreement.")
    weight_drums: float = Field(0.5, ge=0, description="Weight of drums present/absent vs the genre and instruments.")
    tempo_tolerance: float = Field(0.06, ge=0, description="Relative bpm error that still counts as full agreement.")
    tempo_decay: float = Field(0.15, gt=0, description="Beyond the tolerance, bpm agreement falls as exp(-excess/decay), "
                                                      "excess being the log-ratio error past the tolerance.")  # fmt: skip
    tempo_bucket_share: float = Field(0.5, ge=0, le=1, description="Share of the tempo agreement given by the "
                                                                   "slow/mid/fast bucket match (the rest: bpm closeness).")  # fmt: skip
    beat_floor: float = Field(0.17, gt=0, description="Weakest lower-quartile pulse (relative to the loudest onsets) "
                                                      "a metrical level needs to count as the beat.")  # fmt: skip
    minor_dominance: float = Field(0.12, description="How much longer (share of chord-labelled time) the minor tonic "
                                                     "triad must sound than the relative major's for a minor verdict.")  # fmt: skip
    mode_softness: float = Field(0.05, gt=0, description="Width of the logistic turning that dominance into a mode "
                                                         "probability: smaller is closer to a hard verdict.")  # fmt: skip
    register_split_hz: float = Field(170.0, gt=0, description="Median vocal f0 dividing male from female register "
                                                              "(typical speaking f0: men 85-180 Hz, women 165-255 Hz).")  # fmt: skip
    register_softness: float = Field(0.1, gt=0, description="Width, in octaves, of the logistic around the split.")
    drum_share: float = Field(0.0035, gt=0, description="Accompaniment energy share above 4 kHz dividing drums "
                                                        "from none (tonal parts put almost nothing there).")  # fmt: skip
    drum_softness: float = Field(0.35, gt=0, description="Width, in natural-log units, of the logistic around drum_share.")
    min_seconds: float = Field(4.0, ge=0, description="Shorter audio is an error: too little for tempo or key.")
    silence_dbfs: float = Field(-50.0, description="Audio whose peak is below this level (dBFS) is an error.")
    workers: int = Field(2, ge=1, description="Processes measuring songs (1: in this process); any count gives the same scores.")


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(z, 60.0), -60.0)))


class AudioError(ValueError):
    """The item's audio cannot be analysed; the message is the Similarity's error."""


class AttributesScorer:
    name = "attributes"

    def __init__(self, options: AttributesOptions | None = None):
        self.options = options or AttributesOptions()
        self._families = {g.name: g.auto_prompt for g in load_vocabulary().genres}

    def describe(self) -> dict:
        return {"backend": self.name, "version": features.FEATURES_VERSION, "options": self.options.model_dump(mode="json")}

    def score(self, items: list[ScoringItem]) -> list[Similarity]:
        if not use_processes(len(items), self.options.workers):
            return [self._similarity(item) for item in items]
        return map_in_processes(_similarity_in_worker, [(self.options, item) for item in items], self.options.workers)

    def _similarity(self, item: ScoringItem) -> Similarity:
        try:
            return self._score_one(item)
        except AudioError as exc:
            return Similarity(item.candidate_id, error=str(exc))

    # ------------------------------------------------------------ audio

    def _load(self, path: Path, what: str) -> np.ndarray:
        opts = self.options
        try:
            audio, rate = sf.read(str(path), dtype="float64", always_2d=True)
        except Exception as exc:  # soundfile raises several types for missing/corrupt files
            raise AudioError(f"{what}: unreadable audio {path}: {exc}") from exc
        x = audio.mean(axis=1)
        if not np.all(np.isfinite(x)):
            raise AudioError(f"{what}: audio contains NaN or infinite samples")
        if rate != opts.sample_rate:
            g = math.gcd(int(rate), opts.sample_rate)
            from scipy.signal import resample_poly  # loaded with the first resampled file, not with the config

            x = resample_poly(x, opts.sample_rate // g, int(rate) // g)
        if len(x) < opts.min_seconds * opts.sample_rate:
            raise AudioError(f"{what}: {len(x) / opts.sample_rate:.2f} s of audio, under {opts.min_seconds:g} s")
        return x

    def _signals(self, item: ScoringItem) -> tuple[np.ndarray, np.ndarray, dict]:
        """(tonal/rhythmic source, voice source, which files they came from)."""
        mix = self._load(item.audio_path, "mix")
        peak = float(np.max(np.abs(mix)))
        if peak <= 10 ** (self.options.silence_dbfs / 20):
            raise AudioError(f"mix: silent (peak {20 * math.log10(max(peak, 1e-12)):.1f} dBFS)")
        band = self._load(item.stems["accompaniment"], "accompaniment") if "accompaniment" in item.stems else mix
        if band is not mix and np.max(np.abs(band)) <= 10 ** (self.options.silence_dbfs / 20):
            band = mix  # an a cappella render: tempo and key can only come from the voice
        voice = self._load(item.stems["vocals"], "vocals") if "vocals" in item.stems else mix
        sources = {"band_source": "accompaniment" if band is not mix else "mix",
                   "voice_source": "vocals" if voice is not mix else "mix"}  # fmt: skip
        return band, voice, sources

    # ------------------------------------------------------------ attributes

    def _score_one(self, item: ScoringItem) -> Similarity:
        opts, tags, sr = self.options, item.tags, self.options.sample_rate
        band, voice, details = self._signals(item)
        agreements: dict[str, float] = {}
        weights = {"tempo": opts.weight_tempo, "mode": opts.weight_mode, "register": opts.weight_register,
                   "drums": opts.weight_drums}  # fmt: skip

        bpm_tag, bucket_tag = tags.get("bpm"), tags.get("tempo")
        if bpm_tag or bucket_tag:
            tempo = features.estimate_tempo(band, sr, opts.beat_floor)
            details.update(estimated_bpm=tempo["bpm"], estimated_tempo=tempo_bucket(tempo["bpm"]),
                           strongest_pulse_bpm=tempo["strongest_pulse_bpm"], tempo_levels=tempo["level_strength"])
            agreements["tempo"] = self._tempo_agreement(tempo["bpm"], bpm_tag, bucket_tag)

        if tags.get("emotion"):
            key = features.estimate_key(band, sr, opts.minor_dominance)
            p_minor = _sigmoid((key["minor_tonic_dominance"] - opts.minor_dominance) / opts.mode_softness)
            expected = mode_for(str(tags["emotion"]))
            details.update(estimated_key=key["key"], estimated_mode=key["mode"], expected_mode=expected,
                           minor_tonic_dominance=key["minor_tonic_dominance"], p_minor=round(p_minor, 4),
                           key_profile_correlation=key["profile_correlation"])  # fmt: skip
            agreements["mode"] = p_minor if expected == "minor" else 1.0 - p_minor

        if tags.get("gender") in ("male", "female"):
            pitch = features.estimate_f0(voice, sr)
            details.update(vocal_f0_hz=pitch["f0_hz"], voiced_share=pitch["voiced"])
            if pitch["f0_hz"] is None:  # a described singer who cannot be heard
                details["estimated_register"] = "none"
                agreements["register"] = 0.0
            else:
                p_female = _sigmoid(math.log2(pitch["f0_hz"] / opts.register_split_hz) / opts.register_softness)
                details.update(estimated_register="female" if p_female >= 0.5 else "male", p_female=round(p_female, 4))
                agreements["register"] = p_female if tags["gender"] == "female" else 1.0 - p_female

        expects = self._expects_drums(tags)
        if expects is not None:
            share = features.high_band_share(band, sr)
            p_drums = _sigmoid(math.log(max(share, 1e-9) / opts.drum_share) / opts.drum_softness)
            details.update(high_band_share=round(share, 6), p_drums=round(p_drums, 4), expected_drums=expects)
            agreements["drums"] = p_drums if expects else 1.0 - p_drums

        used = {k: w for k, w in weights.items() if k in agreements and w > 0}
        if not used:
            return Similarity(item.candidate_id, details=details, error="the tags describe no measurable attribute")
        total = sum(w * agreements[k] for k, w in used.items()) / sum(used.values())
        details["agreement"] = {k: round(float(v), 4) for k, v in agreements.items()}
        details["weights"] = used
        return Similarity(item.candidate_id, similarity=round(float(total), 6), details=details)

    def _tempo_agreement(self, estimated: float, bpm_tag, bucket_tag) -> float:
        opts = self.options
        parts = []
        if bpm_tag:
            excess = abs(math.log(estimated / float(bpm_tag))) - math.log1p(opts.tempo_tolerance)
            parts.append((1.0 - opts.tempo_bucket_share, math.exp(-max(excess, 0.0) / opts.tempo_decay)))
        bucket = bucket_tag or tempo_bucket(float(bpm_tag))
        parts.append((opts.tempo_bucket_share if bpm_tag else 1.0, float(tempo_bucket(estimated) == bucket)))
        weight = sum(w for w, _ in parts)
        return sum(w * a for w, a in parts) / weight if weight > 0 else parts[-1][1]

    def _expects_drums(self, tags: dict) -> bool | None:
        """Drums are expected when an instrument tag names them, or the genre's family is not a
        quiet one (ballads and soundtracks go without unless asked); unknown without either tag."""
        instruments = [str(i).lower() for i in tags.get("instruments") or []]
        if DRUM_INSTRUMENTS.intersection(instruments):
            return True
        genre = tags.get("genre")
        if not genre:
            return None
        return self._families.get(str(genre), "Pop") not in QUIET_FAMILIES


def _similarity_in_worker(job: tuple[AttributesOptions, ScoringItem]) -> Similarity:
    """One item's similarity, in a worker process."""
    options, item = job
    return AttributesScorer(options)._similarity(item)
