"""What the joint-embedding scorers (`muq-mulan`, `clap`) share: audio in, clips, batched embedding.

Both models embed fixed-length clips of audio and a text into one space; a song's embedding is the
mean of its clips' embeddings and its score is the cosine similarity with its description's
embedding. Clips of many songs go through the model together (`batch_clips` per forward pass),
which is what keeps an accelerator busy: a song gives only a handful of 10-s clips.

A subclass supplies `_embed_clips` (clips -> unit vectors) and `_embed_texts`; everything here is
model-agnostic and cheap to import.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.digest import model_dir_digest
from pipeline.scoring.base import ScoringItem, Similarity



class EmbeddingScorerOptions(BaseModel):
    """Options common to the clip-embedding scorers; each backend adds its `backend` literal."""

    model_config = ConfigDict(extra="forbid")

    model_dir: Path = Field(..., description="Local model directory (no downloads happen).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' takes CUDA when available.")
    precision: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Autocast dtype for the forward passes; 'auto' is bfloat16 on CUDA, float32 on CPU."
    )
    clip_seconds: float = Field(10.0, gt=0, description="Clip length the model was trained on.")
    batch_clips: int = Field(32, ge=1, description="Clips per forward pass, gathered across songs.")
    min_seconds: float = Field(1.0, ge=0, description="Shorter audio is an error, not a score.")
    silence_dbfs: float = Field(-60.0, description="Audio whose peak is below this level (dBFS) is an error.")
    loader_threads: int = Field(2, ge=1, description="Threads decoding and resampling audio ahead of the model.")



def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(precision: str, device: str):
    import torch

    if precision == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, precision)


class AudioError(ValueError):
    """An item's audio cannot be scored; the message is the reason recorded on the item."""


def load_mono(path: Path, sample_rate: int) -> np.ndarray:
    """Decode to mono float32 at `sample_rate` (polyphase resampling; no torchaudio needed)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    if not Path(path).is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # missing file, unknown format, truncated stream
        raise AudioError(f"unreadable audio: {type(exc).__name__}: {exc}") from exc
    wave = data.mean(axis=1)
    if rate != sample_rate and wave.size:
        g = np.gcd(int(rate), int(sample_rate))
        wave = resample_poly(wave, sample_rate // g, rate // g).astype(np.float32)
    return np.ascontiguousarray(wave, dtype=np.float32)


def check_audio(wave: np.ndarray, sample_rate: int, min_seconds: float, silence_dbfs: float) -> None:
    if not np.all(np.isfinite(wave)):
        raise AudioError("audio contains NaN or infinite samples")
    seconds = wave.size / sample_rate
    if wave.size == 0 or seconds < min_seconds:
        raise AudioError(f"audio too short: {seconds:.2f} s < {min_seconds} s")
    peak = float(np.abs(wave).max())
    if peak <= 10 ** (silence_dbfs / 20):
        level = 20 * np.log10(peak) if peak > 0 else float("-inf")
        raise AudioError(f"audio is silent: peak {level:.1f} dBFS <= {silence_dbfs} dBFS")


def cut_clips(wave: np.ndarray, clip_samples: int) -> np.ndarray:
    """Consecutive full clips; a remainder is completed by wrapping around to the song's start.

    This is MuQ-MuLan's own rule (`MuQMuLan._get_all_clips`), kept for both backends so a score
    does not depend on how the audio was batched. Audio shorter than one clip is repeated to fill it.
    """
    if wave.size < clip_samples:
        return np.resize(wave, clip_samples)[None, :]
    full = wave.size // clip_samples
    clips = [wave[i * clip_samples:(i + 1) * clip_samples] for i in range(full)]
    rest = wave.size - full * clip_samples
    if rest:
        clips.append(np.concatenate([wave[full * clip_samples:], wave[:clip_samples - rest]]))
    return np.stack(clips)


@dataclass
class _Song:
    index: int
    clips: int
    seconds: float
    total: np.ndarray | None = None  # sum of the clips' unit embeddings
    done: int = 0


class EmbeddingScorer:
    """Scores items by cosine(mean of clip embeddings, description embedding)."""

    name = "embedding"
    sample_rate = 24000

    def __init__(self, options: EmbeddingScorerOptions):
        # Checked here, not in the options: a config is checkable on a machine without the model.
        if not Path(options.model_dir).is_dir():
            raise ValueError(f"{self.name}: model_dir {options.model_dir} does not exist or is not a directory")
        self.options = options
        self.device = resolve_device(options.device)
        self.dtype = resolve_dtype(options.precision, self.device)
        self.clip_samples = int(round(options.clip_seconds * self.sample_rate))

    # -- what a backend supplies ---------------------------------------------------------------
    def _embed_clips(self, clips: np.ndarray) -> np.ndarray:
        """(n, clip_samples) float32 -> (n, d) unit vectors."""
        raise NotImplementedError

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        """n texts -> (n, d) unit vectors."""
        raise NotImplementedError

    # -- the shared flow -----------------------------------------------------------------------
    def _load(self, item: ScoringItem) -> np.ndarray:
        wave = load_mono(Path(item.audio_path), self.sample_rate)
        check_audio(wave, self.sample_rate, self.options.min_seconds, self.options.silence_dbfs)
        return wave

    def embed_audio(self, items: list[ScoringItem]) -> tuple[dict[int, np.ndarray], dict[int, str], dict[int, _Song]]:
        """Mean clip embedding per item index; errors by item index for those that failed."""
        errors: dict[int, str] = {}
        songs: dict[int, _Song] = {}
        pending: list[tuple[_Song, np.ndarray]] = []  # (song, clip) rows waiting for a forward pass

        def flush(at_least: int) -> None:
            nonlocal pending
            size = self.options.batch_clips
            while pending and len(pending) >= at_least:
                head, pending = pending[:size], pending[size:]
                vectors = self._embed_clips(np.stack([clip for _, clip in head]))
                for (song, _), vec in zip(head, vectors):
                    vec = vec.astype(np.float64)
                    song.total = vec if song.total is None else song.total + vec
                    song.done += 1

        with ThreadPoolExecutor(max_workers=self.options.loader_threads) as pool:
            ahead = deque()
            queue = iter(enumerate(items))
            for _ in range(self.options.loader_threads * 2):
                nxt = next(queue, None)
                if nxt is not None:
                    ahead.append((nxt[0], pool.submit(self._load, nxt[1])))
            while ahead:
                index, future = ahead.popleft()
                nxt = next(queue, None)
                if nxt is not None:
                    ahead.append((nxt[0], pool.submit(self._load, nxt[1])))
                try:
                    wave = future.result()
                except AudioError as exc:
                    errors[index] = str(exc)
                    continue
                clips = cut_clips(wave, self.clip_samples)
                song = _Song(index, len(clips), wave.size / self.sample_rate)
                songs[index] = song
                pending.extend((song, clip) for clip in clips)
                flush(self.options.batch_clips)
        flush(1)
        means = {i: s.total / s.done for i, s in songs.items() if s.done == s.clips}
        return means, errors, songs

    def embed_texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        unique = list(dict.fromkeys(t for t in texts if t.strip()))
        out: dict[str, np.ndarray] = {}
        size = getattr(self.options, "batch_texts", 1)  # 1 where padding would change a text's embedding
        for start in range(0, len(unique), size):
            chunk = unique[start:start + size]
            for text, vec in zip(chunk, self._embed_texts(chunk)):
                out[text] = vec
        return out

    def score(self, items: list[ScoringItem]) -> list[Similarity]:
        means, errors, songs = self.embed_audio(items)
        texts = self.embed_texts([it.description for it in items])
        results = []
        for i, item in enumerate(items):
            if i in errors:
                results.append(Similarity(item.candidate_id, error=errors[i]))
                continue
            text = texts.get(item.description)
            if text is None:
                results.append(Similarity(item.candidate_id, error="empty description"))
                continue
            audio = means[i]
            norm = float(np.linalg.norm(audio))
            dot = float(audio @ text)
            if not np.isfinite(dot) or norm == 0.0:
                results.append(Similarity(item.candidate_id, error="non-finite embedding"))
                continue
            song = songs[i]
            results.append(Similarity(
                item.candidate_id,
                similarity=dot / (norm * float(np.linalg.norm(text))),
                details={"clips": song.clips, "seconds": round(song.seconds, 3), "dot": dot},
            ))
        return results

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "model_dir": str(self.options.model_dir),
            "model_digest": model_dir_digest(self.options.model_dir),
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "sample_rate": self.sample_rate,
            "options": self.options.model_dump(mode="json"),
        }
