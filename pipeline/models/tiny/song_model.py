"""The embedded SongModel: the tiny LeLM samples token streams, the codec decodes them into a
score, and the renderer sings and plays it into mix, vocals and accompaniment stems.

Requests are sampled together, many conditions in one batch (`pipeline.models.tiny.sampling`),
each from its own seeded generator, so a candidate's song depends only on its condition, its seed
and the sampling settings. Rendering is deterministic too: the same seed gives the same FLAC bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipeline.models.base import CandidateRequest, CandidateResult, SamplingParams

CHECKPOINT_DIR = Path(__file__).parent / "checkpoint"
TOKENS_FILE = "tokens.json"
SAMPLING_BATCH = 64  # songs sampled together: one step of the small model costs about the same for 4 or 64


class TinyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint: Path | None = Field(None, description="A TinyLeLM checkpoint folder; None = the one shipped with songpref.")
    max_frames: int | None = Field(None, ge=1, description="Cap on frames (eighth notes) per song; None = the checkpoint's.")
    sample_rate: int = Field(16000, ge=16000, description="Audio sample rate of the rendered stems (Hz).")
    flite_binary: str = Field("flite", description="The flite executable that sings the vocals.")
    threads: int | None = Field(None, ge=1, description="torch threads while sampling; None leaves torch's setting.")


class TinyModelError(RuntimeError):
    pass


def _load(checkpoint: str):
    """The checkpoint's model, cached per process; a rewritten checkpoint (a new DPO or merged model
    in the same folder) is a new cache entry, keyed by its weights file's size and mtime."""
    return _load_cached(checkpoint, _stamp(Path(checkpoint) / "model.safetensors"))


def _stamp(path: Path):
    return (path.stat().st_mtime_ns, path.stat().st_size) if path.is_file() else None


def _check_checkpoint(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise TinyModelError(
            f"tiny model checkpoint {folder} has no config.json; build one with "
            f"`python -m pipeline.models.tiny.pretrain --out {folder}`"
        )


@lru_cache(maxsize=4)
def _load_cached(checkpoint: str, stamp):
    from pipeline.models.tiny.model import TinyLeLM  # torch stays out of the CLI's import path

    _check_checkpoint(Path(checkpoint))
    import torch

    return TinyLeLM.from_pretrained(Path(checkpoint), torch_dtype=torch.float32).eval()


def checkpoint_digest(folder: Path) -> str:
    weights = Path(folder) / "model.safetensors"
    return _weights_digest(str(weights), _stamp(weights))


@lru_cache(maxsize=16)
def _weights_digest(weights: str, stamp) -> str:
    return hashlib.sha256(Path(weights).read_bytes()).hexdigest()


def checkpoint_parameters(folder: Path) -> int:
    """The model's parameter count, read from the safetensors header (8-byte little-endian length,
    then a JSON map of tensor name to dtype, shape and offsets): describing a checkpoint loads no
    weights. Every parameter of a TinyLeLM is stored once (no tied weights, no stored buffers)."""
    with open(Path(folder) / "model.safetensors", "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")


class TinySongModel:
    name = "tiny"
    options_class = TinyOptions

    def __init__(self, options: TinyOptions | None = None) -> None:
        self.options = options or TinyOptions()
        if shutil.which(self.options.flite_binary) is None:
            raise TinyModelError(
                f"flite not found (model.options.flite_binary={self.options.flite_binary!r}): "
                "install it with `apt-get install flite` (or `make setup`)"
            )
        self.checkpoint = Path(self.options.checkpoint or CHECKPOINT_DIR).resolve()
        _check_checkpoint(self.checkpoint)

    @property
    def model(self):
        """The checkpoint's TinyLeLM, loaded on first use: planning a stage only describes the model."""
        return _load(str(self.checkpoint))

    @classmethod
    def trainable_policy(cls, options: TinyOptions):
        """Its TrainablePolicy: DPO trains the checkpoint it samples from."""
        from pipeline.models.tiny.trainable import TinyTrainable

        return TinyTrainable(options.checkpoint or CHECKPOINT_DIR, options.max_frames)

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "checkpoint": str(self.checkpoint),
            "checkpoint_sha256": checkpoint_digest(self.checkpoint),
            "parameters": checkpoint_parameters(self.checkpoint),
            "options": self.options.model_dump(mode="json", exclude={"checkpoint", "threads"}),
        }

    def preference_prompt(self, condition: dict) -> str:
        """The condition as the policy's prompt text (its conditioning prefix; see preference_text.py)."""
        from pipeline.models.tiny.preference_text import TokenLayout, prompt_text

        return prompt_text(condition, TokenLayout.from_config(self.model.config), self.model.config.max_prefix)

    def preference_completion(self, tokens: dict) -> str:
        """A sampled song (its tokens.json streams) as the policy's completion text."""
        from pipeline.models.tiny.preference_text import completion_text

        return completion_text(tokens)

    def sample(self, requests: list[CandidateRequest], params: SamplingParams, out_dir: Path,
               progress: Callable[[int], None] | None = None) -> list[CandidateResult]:  # fmt: skip
        """Up to SAMPLING_BATCH requests, of any conditions, are sampled as one batch; results come back in
        request order. `progress(done)` hears the count of songs rendered so far, after each one."""
        if params.cfg_coef is not None:
            raise TinyModelError("sampling.cfg_coef: the tiny model has no classifier-free guidance; set it to null")
        import torch

        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        from pipeline.models.tiny.sampling import sample_songs

        results = {}
        for start in range(0, len(requests), SAMPLING_BATCH):
            batch = requests[start : start + SAMPLING_BATCH]
            songs = sample_songs(self.model, [r.condition for r in batch], [r.seed for r in batch],
                                 temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                                 max_frames=self.options.max_frames)  # fmt: skip
            for request, tokens in zip(batch, songs):
                results[request.candidate_id] = self._render(request, tokens, Path(out_dir))
                if progress is not None:
                    progress(len(results))
        return [results[r.candidate_id] for r in requests]

    def _render(self, request: CandidateRequest, tokens: dict, out_dir: Path) -> CandidateResult:
        from pipeline.models.tiny.codec import SymbolicCodec, lyric_words
        from pipeline.models.tiny.renderer import RenderError, render, write_stems

        folder = out_dir / request.candidate_id
        folder.mkdir(parents=True, exist_ok=True)
        tokens_path = folder / TOKENS_FILE
        _write_atomic(tokens_path, json.dumps(tokens, separators=(",", ":")))
        cid = request.candidate_id
        try:
            score = SymbolicCodec().decode(tokens, request.condition, lyric_words(request.condition["lyric"]))
            song = render(score, self.options.sample_rate, self.options.flite_binary)
            audio = write_stems(song, folder)
        except (RenderError, ValueError, KeyError) as exc:  # one bad song must not stop the shard
            return CandidateResult(cid, tokens=tokens_path, error=f"render failed: {type(exc).__name__}: {exc}")
        return CandidateResult(cid, audio, tokens_path, len(song.mix) / song.sample_rate)


def read_tokens(path: Path | str) -> dict[str, list[int]]:
    """A candidate's token streams (header, mixed, vocals, accompaniment), as sampled."""
    return json.loads(Path(path).read_text())


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
