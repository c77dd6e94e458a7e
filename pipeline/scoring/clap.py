"""The `clap` text-audio scorer: CLAP (LAION; transformers' `ClapModel`) similarity.

A local directory as written by `ClapModel.save_pretrained` plus its processor
(`ClapProcessor.save_pretrained`: feature extractor and tokenizer), e.g. laion/clap-htsat-unfused.
Songs are resampled to the feature extractor's rate (48 kHz), cut into 10-s clips by the same rule
as `muq-mulan`, and the clips of many songs go through the audio tower together. Every clip is
exactly the extractor's `max_length_s`, so its random crop ('rand_trunc') or fusion crops never
come into play and scores are deterministic.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Literal

import numpy as np
from pydantic import Field

from pipeline.scoring.embedding_scorer import EmbeddingScorer, EmbeddingScorerOptions


class ClapOptions(EmbeddingScorerOptions):
    backend: Literal["clap"] = Field("clap", description="Selects this scorer.")
    sample_rate: int = Field(48000, description="Rate the audio is resampled to; CLAP's extractor expects 48 kHz.")
    clip_seconds: float = Field(10.0, gt=0, description="Clip length; CLAP's extractor takes 10-s windows.")
    batch_texts: int = Field(64, ge=1, description="Descriptions per text forward pass (padding is masked).")


class ClapScorer(EmbeddingScorer):
    name = "clap"

    def __init__(self, options: ClapOptions):
        import torch
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        self.sample_rate = options.sample_rate
        super().__init__(options)
        self.extractor = ClapFeatureExtractor.from_pretrained(options.model_dir, local_files_only=True)
        if self.extractor.sampling_rate != options.sample_rate:
            raise ValueError(f"the feature extractor works at {self.extractor.sampling_rate} Hz, "
                             f"options say {options.sample_rate}")
        if self.extractor.nb_max_samples != self.clip_samples:
            raise ValueError(f"clips of {self.clip_samples} samples would be cropped or padded by the extractor "
                             f"(it takes {self.extractor.nb_max_samples}); set clip_seconds to match")
        self.tokenizer = AutoTokenizer.from_pretrained(options.model_dir, local_files_only=True)
        self.model = ClapModel.from_pretrained(options.model_dir, local_files_only=True).to(self.device).eval()
        self._torch = torch
        # Fused checkpoints take 4 mel views per clip, unfused ones 1; the saved extractor may say either.
        self.truncation = "fusion" if self.model.config.audio_config.enable_fusion else "rand_trunc"

    def autocast(self):
        if self.dtype == self._torch.float32:
            return nullcontext()
        return self._torch.autocast(self.device, dtype=self.dtype)

    def _embed_clips(self, clips: np.ndarray) -> np.ndarray:
        torch = self._torch
        inputs = self.extractor(list(clips), sampling_rate=self.sample_rate, truncation=self.truncation,
                                return_tensors="pt")
        features = inputs["input_features"].to(self.device)
        is_longer = inputs.get("is_longer")
        is_longer = is_longer.to(self.device) if is_longer is not None else None
        with torch.inference_mode(), self.autocast():
            out = self.model.get_audio_features(input_features=features, is_longer=is_longer)
        vectors = out.pooler_output if hasattr(out, "pooler_output") else out  # transformers 4.x returned a tensor
        return torch.nn.functional.normalize(vectors.float(), dim=-1).cpu().numpy()

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        limit = getattr(self.model.config.text_config, "max_position_embeddings", 514) - 2  # RoBERTa offset
        tokens = self.tokenizer(texts, padding=True, truncation=True,
                                max_length=min(limit, self.tokenizer.model_max_length), return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode(), self.autocast():
            out = self.model.get_text_features(**tokens)
        vectors = out.pooler_output if hasattr(out, "pooler_output") else out
        return torch.nn.functional.normalize(vectors.float(), dim=-1).cpu().numpy()
