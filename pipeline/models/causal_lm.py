"""Any Hugging Face causal LM as a TrainablePolicy, for songs that are token streams interleaved in
its own vocabulary (YuE's stage 1: vocals and accompaniment codec tokens alternating).

- `InterleavedSongs`: a song's streams <-> its completion ids: frame t is stream 0's token t,
  stream 1's token t, ...; after the last frame the end-of-audio token. Stream token k is the
  vocabulary id `code_ids[k]`, so the text form is those tokens' strings, which the tokenizer
  reads back to the same ids.
- `sample_interleaved`: a batch of rows from one prompt, with a static KV cache, each row
  drawing from its own seeded generator (a song depends on its seed, not on its batch), only
  audio tokens allowed and the end token only at a frame boundary.
- `CausalLMPolicy`: load/save (full weights or a PEFT LoRA adapter), a digest of the weights,
  teacher-forced per-stream log-probs, sampling. TRL's DPOTrainer trains the model as it is; a
  backend adds its prompt text and its layout (`songs`).

Only torch and transformers are imported (benchmarks/hfcodec_gpu.py runs on that alone).
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


from pipeline.digest import WEIGHT_SUFFIXES, model_dir_digest
from pipeline.models.base import SamplingParams, save_model

END = "end"  # the log-prob key of the end-of-audio token: the song's length, no stream's
FULL_HASH_BYTES = 2 * 10**9  # weights above this are identified by names, sizes and config, not hashed


@dataclass(frozen=True)
class InterleavedSongs:
    streams: tuple[str, ...]
    code_ids: tuple[int, ...]  # vocabulary id of codec token k
    end_id: int

    def completion_ids(self, song: dict[str, list[int]]) -> list[int]:
        missing = [s for s in self.streams if s not in song]
        if missing:
            raise ValueError(f"song tokens lack stream(s) {missing}; streams are {list(self.streams)}")
        lengths = {len(song[s]) for s in self.streams}
        if len(lengths) != 1:
            raise ValueError(f"song tokens: streams {list(self.streams)} differ in length ({sorted(lengths)})")
        size = len(self.code_ids)
        bad = [k for s in self.streams for k in song[s] if not 0 <= k < size]
        if bad:
            raise ValueError(f"song tokens: codec token {bad[0]} is outside the codebook (size {size})")
        frames = zip(*(song[s] for s in self.streams))
        return [self.code_ids[k] for frame in frames for k in frame] + [self.end_id]

    def position_streams(self, length: int) -> list[str]:
        """The stream of each completion position (`length` includes the end token)."""
        return [self.streams[i % len(self.streams)] for i in range(length - 1)] + [END]


def weights_digest(folder: Path) -> str:
    """sha256 over the weight files (names and bytes) when they are small, else names, sizes and config."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise ValueError(f"{folder}: no weight files (*.safetensors)")
    if sum(p.stat().st_size for p in files) > FULL_HASH_BYTES:
        return model_dir_digest(folder)
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            while block := handle.read(1 << 24):
                h.update(block)
    return h.hexdigest()


def _draw(logits: torch.Tensor, gens: list[torch.Generator], params: SamplingParams, active: list[bool]) -> torch.Tensor:
    """One token per active row from its own generator (an inactive row draws nothing and gets -1)."""
    import torch

    if params.temperature <= 0:
        return torch.where(torch.tensor(active, device=logits.device), logits.argmax(-1), -1)
    logits = logits.float() / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = logits.topk(params.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        ordered, order = logits.sort(-1, descending=True)
        probs = ordered.softmax(-1)
        drop = probs.cumsum(-1) - probs > params.top_p  # keeps the smallest prefix reaching top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = logits.softmax(-1)
    picks = [torch.multinomial(probs[i], 1, generator=g) if on else torch.full((1,), -1, device=probs.device)
             for i, (g, on) in enumerate(zip(gens, active))]  # fmt: skip
    return torch.cat(picks)


def cache_keyword(model) -> str:
    """The forward's KV-cache argument: `cache` (transformers 5) or `past_key_values` (4.x)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def static_cache(model, rows: int, length: int):
    """A preallocated KV cache of `length` positions (no copy of the whole cache at every step,
    as a growing one makes); older transformers want the batch size, device and dtype up front."""
    import torch

    from transformers import StaticCache

    try:
        return StaticCache(config=model.config, max_cache_len=length)
    except TypeError:
        return StaticCache(config=model.config, max_batch_size=rows, max_cache_len=length, device=model.device,
                           dtype=model.dtype)  # fmt: skip


def sample_interleaved(model, prompt_ids: list[int], seeds: list[int], songs: InterleavedSongs, params: SamplingParams,
                       max_frames: int, min_frames: int = 1, on_step: Callable[[int], None] | None = None) -> list[dict]:  # fmt: skip
    """One song (its streams' codec tokens) per seed, all from `prompt_ids`, as one batch.
    `on_step(step)` is called after each token is drawn (benchmarks time the steps with it)."""
    import torch

    with torch.no_grad():  # sampling needs no graph
        device, n, width = model.device, len(seeds), len(songs.streams)
        gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        cache = static_cache(model, n, len(prompt_ids) + max_frames * width + 1)
        key = cache_keyword(model)
        audio = torch.zeros(model.config.vocab_size, dtype=torch.bool, device=device)
        audio[list(songs.code_ids)] = True
        end_only = torch.zeros_like(audio)
        end_only[songs.end_id] = True
        code_of = torch.full((model.config.vocab_size,), -1, dtype=torch.long)
        code_of[list(songs.code_ids)] = torch.arange(len(songs.code_ids))
        tokens = torch.tensor([prompt_ids] * n, device=device)
        codes, active = [[] for _ in range(n)], [True] * n
        for step in range(max_frames * width + 1):
            logits = model(input_ids=tokens, use_cache=True, logits_to_keep=1, **{key: cache}).logits[:, -1]
            frame, slot = divmod(step, width)
            allowed = end_only if frame == max_frames else audio.clone()
            if slot == 0 and min_frames <= frame < max_frames:
                allowed[songs.end_id] = True
            picks = _draw(logits.masked_fill(~allowed, float("-inf")), gens, params, active).cpu()
            for row, pick in enumerate(picks.tolist()):
                if not active[row]:
                    continue
                if pick == songs.end_id:
                    active[row] = False
                else:
                    codes[row].append(int(code_of[pick]))
            if on_step:
                on_step(step)
            if not any(active):
                break
            tokens = picks.clamp(min=0).to(device)[:, None]  # a finished row feeds token 0: never read again
        return [{s: row[i::width] for i, s in enumerate(songs.streams)} for row in codes]


class CausalLMPolicy:
    """TrainablePolicy of a Hugging Face causal LM over interleaved song streams. Subclasses (a
    backend) give `prompt_text(condition)` and `songs(tokenizer)`: the layout in its vocabulary."""

    def __init__(self, checkpoint: Path, max_frames: int, min_frames: int = 1):
        self.checkpoint = Path(checkpoint).resolve()
        self.max_frames, self.min_frames = max_frames, min_frames
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.checkpoint)
        return self._tokenizer

    def digest(self) -> str:
        return weights_digest(self.checkpoint)

    def prompt_text(self, condition: dict) -> str:
        raise NotImplementedError

    def songs(self, tokenizer) -> InterleavedSongs:
        raise NotImplementedError

    def completion_text(self, streams: dict[str, list[int]]) -> str:
        ids = self.songs(self.tokenizer).completion_ids(streams)
        return "".join(self.tokenizer.convert_ids_to_tokens(ids))

    def prompt_ids(self, condition: dict) -> list[int]:
        return self.tokenizer(self.prompt_text(condition))["input_ids"]

    def load(self, folder: Path | None = None, dtype=None):
        """The model (a LoRA adapter folder is loaded onto its base and merged) and its tokenizer (float32 unless `dtype`)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder, dtype = Path(folder or self.checkpoint), dtype or torch.float32
        if (folder / "adapter_config.json").is_file():
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(folder, dtype=dtype).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        return model, AutoTokenizer.from_pretrained(folder)

    def save(self, model, tokenizer, folder: Path) -> None:
        save_model(model, tokenizer, folder)

    def stream_logprobs(self, model, conditions: list[dict], songs: list[dict[str, list[int]]]) -> dict:
        import torch

        layout = self.songs(self.tokenizer)
        out: dict[str, list[torch.Tensor]] = {s: [] for s in (*layout.streams, END)}
        with torch.no_grad():
            for condition, song in zip(conditions, songs):  # one row at a time: no padding to get right
                prompt, completion = self.prompt_ids(condition), layout.completion_ids(song)
                ids = torch.tensor([prompt + completion], device=model.device)
                logp = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float().log_softmax(-1)
                picked = logp.gather(-1, ids[0, len(prompt) :, None])[:, 0].cpu()
                owners = layout.position_streams(len(completion))
                for stream in out:
                    mask = torch.tensor([o == stream for o in owners])
                    out[stream].append(picked[mask].sum())
        return {stream: torch.stack(values) for stream, values in out.items()}

    def sample_streams(self, model, condition: dict, seeds: list[int], params: SamplingParams) -> list[dict]:
        return sample_interleaved(model, self.prompt_ids(condition), seeds, self.songs(self.tokenizer), params,
                                  self.max_frames, self.min_frames)  # fmt: skip
