"""Lyrics from a local causal LM through transformers' `generate`, batched and seeded.

For rounds that must not depend on a server: the model directory is read offline
(local_files_only), and every batch is seeded from its requests' seeds and the attempt
number, so the same round on the same machine writes the same lyrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.digest import model_dir_digest
from pipeline.lyrics.base import GeneratedLyric, LyricRequest
from pipeline.lyrics.llm_common import generate_with_retries, prompt_digest, render_prompt, sampling_seed



class TransformersOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["transformers"] = Field(description="Selects this backend.")
    model_dir: Path = Field(description="A local model directory (config.json, weights, tokenizer); never downloaded.")
    batch_size: int = Field(8, ge=1, description="Prompts per generate() call.")
    max_new_tokens: int = Field(512, ge=1, description="Most tokens in one answer.")
    temperature: float = Field(0.9, ge=0, description="Sampling temperature; 0 = greedy decoding.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    max_attempts: int = Field(3, ge=1, description="Answers asked per lyric before giving up on it.")
    device: str = Field("auto", description="'auto' (cuda when available, else cpu), or a torch device such as 'cuda:1'.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; 'auto' keeps the checkpoint's."
    )

    @field_validator("model_dir")
    @classmethod
    def _model_dir_exists(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"model directory {value} does not exist or is not a directory")
        return value


def plain_chat_text(messages: list[dict]) -> str:
    """A prompt for models without a chat template: roles as plain labels, the answer to follow."""
    return "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages) + "Assistant:"


class TransformersGenerator:
    name = "transformers"

    def __init__(self, options: TransformersOptions, template_dir: Path | None = None, lyric_max_tokens: int = 300):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.options = options
        self.template_dir = template_dir
        self.lyric_max_tokens = lyric_max_tokens  # the round's limit (lyrics.max_tokens)
        self.device = options.device if options.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        # Left padding: generation continues every prompt from the right edge of the batch.
        self.tokenizer = AutoTokenizer.from_pretrained(options.model_dir, local_files_only=True, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = options.dtype if options.dtype == "auto" else getattr(torch, options.dtype)
        model = AutoModelForCausalLM.from_pretrained(options.model_dir, local_files_only=True, dtype=dtype)
        self.model = model.to(self.device).eval()

    def _prompt_text(self, request: LyricRequest) -> str:
        messages = render_prompt(request, self.template_dir)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return plain_chat_text(messages)

    def answers(self, requests: list[LyricRequest], attempt: int = 1) -> list[str]:
        """Raw model answers, batch by batch; each batch seeded by its first request's seed and the attempt."""
        out = []
        size = self.options.batch_size
        for start in range(0, len(requests), size):
            batch = requests[start : start + size]
            out.extend(self._generate_batch(batch, sampling_seed(batch[0].seed, attempt)))
        return out

    def _generate_batch(self, batch: list[LyricRequest], seed: int) -> list[str]:
        import torch

        texts = [self._prompt_text(r) for r in batch]
        # A chat template writes its own special tokens (bos, role markers); plain text needs the tokenizer's.
        special = not getattr(self.tokenizer, "chat_template", None)
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=special).to(self.device)
        opts = self.options
        if opts.temperature > 0:
            sampling = {"do_sample": True, "temperature": opts.temperature, "top_p": opts.top_p}
        else:
            sampling = {"do_sample": False}
        # generate() samples from torch's global generator, so seeding it is what makes a batch reproducible.
        torch.manual_seed(seed)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, max_new_tokens=opts.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id, **sampling
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def generate(self, requests: list[LyricRequest]) -> list[GeneratedLyric]:
        return generate_with_retries(requests, self.answers, self.options.max_attempts, self.lyric_max_tokens)

    def describe(self) -> dict:
        opts = self.options
        return {
            "backend": self.name,
            "model_dir": str(opts.model_dir),
            "model_digest": model_dir_digest(opts.model_dir),
            "prompt_digest": prompt_digest(self.template_dir),
            "sampling": {
                "temperature": opts.temperature,
                "top_p": opts.top_p,
                "max_new_tokens": opts.max_new_tokens,
                "max_attempts": opts.max_attempts,
                "batch_size": opts.batch_size,
            },
            "dtype": opts.dtype,
            "chat_template": bool(getattr(self.tokenizer, "chat_template", None)),
        }
