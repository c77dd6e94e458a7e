"""`hf-codec`: a YuE-style song LM from Hugging Face weights, as a SongModel and a TrainablePolicy.

The LM is a causal LM (Llama architecture, as YuE's stage 1) over text and codec tokens: the
prompt is YuE's (instruction, `[Genre]` description, the lyric in YuE's layout, then
`[start_of_segment]` and the start-of-audio token); the song is one X-Codec token per frame for
vocals and for accompaniment, interleaved (v0 a0 v1 a1 ...), then the end-of-audio token. The
whole lyric is one segment (YuE samples section by section with the earlier ones in context;
one segment keeps a song one prompt and one completion for DPO).

Sampling: candidates of one condition share a batch (`batch_size` rows at most), a static KV
cache, and each draws from its own seeded generator (pipeline/models/causal_lm.py), so a song
depends on its condition, seed, weights and settings only. Decoding: each stream's codes go
through the codec's codebook 0 and decoder (X-Codec, the codec YuE uses; transformers ships it
as XcodecModel) into vocals.flac and accompaniment.flac; mix.flac is their sum. The tokens file
(tokens.json: {"vocals": [...], "accompaniment": [...]}) is what pairs and DPO read back.
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.models.base import CandidateRequest, CandidateResult, SamplingParams
from pipeline.models.causal_lm import CausalLMPolicy, InterleavedSongs, sample_interleaved, weights_digest

STREAMS = ("vocals", "accompaniment")
TOKENS_FILE = "tokens.json"
INSTRUCTION = "Generate music from the given lyrics segment by segment."


class HfCodecOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint: Path = Field(description="The song LM folder: a causal LM (config.json, *.safetensors) and its tokenizer, "
                             "whose vocabulary holds the codec and start/end-of-audio tokens.")  # fmt: skip
    codec: Path = Field(description="An X-Codec model folder (transformers' XcodecModel) that decodes the tokens to audio.")
    codebook_size: int = Field(1024, ge=2, description="Codec tokens the LM knows: codebook 0's size (X-Codec: 1024).")
    code_token: str = Field("<xcodec_{}>", description="The tokenizer's name of codec token k ({} is k).")
    start_token: str = Field("<SOA>", description="The tokenizer's start-of-audio token (ends the prompt).")
    end_token: str = Field("<EOA>", description="The tokenizer's end-of-audio token (ends a song; its EOS).")
    max_frames: int = Field(750, ge=1, description="Most codec frames per song (X-Codec: 50 a second, so 750 = 15 s).")
    min_frames: int = Field(1, ge=1, description="Fewest frames before the end token may be drawn.")
    batch_size: int = Field(8, ge=1, description="Songs sampled at once (candidates of one condition share a batch).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="LM weights while sampling.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA where present.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads while sampling; None leaves torch's setting.")

    @model_validator(mode="after")
    def _consistent(self):
        if self.min_frames > self.max_frames:
            raise ValueError(f"min_frames {self.min_frames} exceeds max_frames {self.max_frames}")
        if self.code_token.count("{}") != 1:
            raise ValueError(f"code_token {self.code_token!r} must contain {{}} once (the codec token's number)")
        return self


class HfCodecError(RuntimeError):
    pass


class HfCodecPolicy(CausalLMPolicy):
    """The TrainablePolicy of `hf-codec`: its LM, YuE's prompt, vocals and accompaniment interleaved."""

    def __init__(self, options: HfCodecOptions):
        super().__init__(options.checkpoint, options.max_frames, options.min_frames)
        self.options = options

    def prompt_text(self, condition: dict) -> str:
        from pipeline.lyrics.format import to_yue

        return (f"{INSTRUCTION}\n[Genre] {condition.get('description') or ''}\n{to_yue(condition['lyric'])}\n"
                f"[start_of_segment]{self.options.start_token}")  # fmt: skip

    def songs(self, tokenizer) -> InterleavedSongs:
        o = self.options
        names = [o.code_token.format(k) for k in range(o.codebook_size)] + [o.start_token, o.end_token]
        ids = tokenizer.convert_tokens_to_ids(names)
        unknown = [n for n, i in zip(names, ids) if i is None or i == tokenizer.unk_token_id]
        if unknown:
            raise HfCodecError(f"model.options.checkpoint: the tokenizer of {self.checkpoint} has no token {unknown[0]!r} "
                               f"({len(unknown)} of the codec/start/end tokens missing; see code_token, start_token, end_token)")  # fmt: skip
        return InterleavedSongs(STREAMS, tuple(ids[: o.codebook_size]), ids[-1])


@lru_cache(maxsize=2)
def _codec(folder: str, stamp):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder).eval()
    if model.config.model_type != "xcodec":
        raise HfCodecError(f"model.options.codec: {folder} is a {model.config.model_type!r} model; hf-codec decodes X-Codec")
    return model


def _stamp(folder: Path):
    return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(Path(folder).glob("*.safetensors")))


class HfCodecSongModel:
    name = "hf-codec"
    options_class = HfCodecOptions

    def __init__(self, options: HfCodecOptions) -> None:
        import torch

        self.options = options
        for key, names in (("checkpoint", ("config.json", "adapter_config.json")), ("codec", ("config.json",))):
            if not any((Path(getattr(options, key)) / name).is_file() for name in names):
                raise HfCodecError(f"model.options.{key}: {getattr(options, key)} is not a model folder (no {' or '.join(names)})")
        self.policy = HfCodecPolicy(options)
        self.device = "cuda" if options.device == "cuda" or (options.device == "auto" and torch.cuda.is_available()) else "cpu"
        self.codec = _codec(str(Path(options.codec).resolve()), _stamp(options.codec)).to(self.device)
        if self.codec.config.codebook_size < options.codebook_size:
            raise HfCodecError(f"model.options.codebook_size {options.codebook_size} exceeds the codec's codebook "
                               f"({self.codec.config.codebook_size})")  # fmt: skip
        self._lm = None

    @classmethod
    def trainable_policy(cls, options: HfCodecOptions) -> HfCodecPolicy:
        return HfCodecPolicy(options)

    @property
    def lm(self):
        if self._lm is None:
            import torch

            model, _ = self.policy.load(dtype=getattr(torch, self.options.dtype))
            self._lm = model.to(self.device).eval()
        return self._lm

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "checkpoint": str(self.policy.checkpoint),
            "checkpoint_sha256": self.policy.digest(),
            "codec": str(Path(self.options.codec).resolve()),
            "codec_sha256": weights_digest(self.options.codec),
            "device": self.device,
            "options": self.options.model_dump(mode="json", exclude={"checkpoint", "codec", "threads", "device"}),
        }

    def sample(self, requests: list[CandidateRequest], params: SamplingParams, out_dir: Path) -> list[CandidateResult]:
        """Candidates sharing a condition are sampled in batches; results come back in request order."""
        if params.cfg_coef is not None:
            raise HfCodecError("sampling.cfg_coef: hf-codec samples without classifier-free guidance; set it to null")
        import torch

        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        groups: dict[str, list[CandidateRequest]] = {}
        for request in requests:
            groups.setdefault(json.dumps(request.condition, sort_keys=True, default=str), []).append(request)
        layout, results = self.policy.songs(self.policy.tokenizer), {}
        for members in groups.values():
            prompt = self.policy.prompt_ids(members[0].condition)
            for start in range(0, len(members), self.options.batch_size):
                chunk = members[start : start + self.options.batch_size]
                songs = sample_interleaved(self.lm, prompt, [r.seed for r in chunk], layout, params,
                                           self.options.max_frames, self.options.min_frames)  # fmt: skip
                for request, song in zip(chunk, songs):
                    results[request.candidate_id] = self._render(request.candidate_id, song, Path(out_dir))
        return [results[r.candidate_id] for r in requests]

    def decode(self, codes: list[int]):
        """One stream's codec tokens -> mono float32 audio at the codec's sample rate."""
        import torch

        with torch.no_grad():
            audio = self.codec.decode(torch.tensor([[codes]], dtype=torch.long, device=self.device)).audio_values
        return audio[0, 0].float().cpu().numpy()

    def _render(self, cid: str, song: dict, out_dir: Path) -> CandidateResult:
        import numpy as np
        import soundfile

        folder = out_dir / cid
        folder.mkdir(parents=True, exist_ok=True)
        tokens = folder / TOKENS_FILE
        _write_atomic(tokens, json.dumps(song, separators=(",", ":")).encode())
        stems = {stem: self.decode(song[stem]) for stem in STREAMS}
        stems["mix"] = np.clip(stems["vocals"] + stems["accompaniment"], -1.0, 1.0)
        rate = int(self.codec.config.sample_rate)
        audio = {}
        for stem, wave in stems.items():
            path = folder / f"{stem}.flac"
            with tempfile.NamedTemporaryFile(dir=folder, suffix=".flac", delete=False) as handle:
                soundfile.write(handle, np.clip(wave, -1.0, 1.0), rate, format="FLAC", subtype="PCM_16")
            os.replace(handle.name, path)
            audio[stem] = path
        return CandidateResult(cid, audio, tokens, len(stems["mix"]) / rate)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
