"""The `muq-mulan` text-audio scorer: MuQ-MuLan similarity, the LeVo paper's prompt-consistency score.

A MuQ-MuLan checkpoint directory (e.g. OpenMuQ/MuQ-MuLan-large) holds `config.json` and the joint
weights; building the model also needs its two pretrained towers as local directories — a MuQ
model (config `audio_model.name`, e.g. OpenMuQ/MuQ-large-msd-iter) and an XLM-RoBERTa
(`text_model.name`, e.g. xlm-roberta-base), because the package constructs each tower with
`from_pretrained(name)` before the joint weights overwrite them. The package chooses a tower's code
by its name: the MuQ directory's path must contain "muq" (any case), the text one "xlm-roberta".

Songs are cut into 24 kHz, 10-s clips by the package's own rule and the clips of many songs are
embedded in one forward pass (`batch_clips`); the package's `MuQMuLan(wavs=...)` walks songs one by
one. Descriptions are embedded one per forward pass: the text tower averages over every position,
padding included, so a batched description's embedding would depend on its batch-mates.
`pipeline.scoring.muq_shim` makes the package work with this project's torch/transformers.
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from pipeline.digest import model_dir_digest
from pipeline.scoring.embedding_scorer import EmbeddingScorer, EmbeddingScorerOptions

log = logging.getLogger(__name__)

_SECTIONS = ("mulan", "audio_model", "text_model", "audio_transformer", "text_transformer")


class MulanOptions(EmbeddingScorerOptions):
    backend: Literal["muq-mulan"] = Field("muq-mulan", description="Selects this scorer.")
    audio_model_dir: Path | None = Field(
        None,
        description="Local MuQ directory (the audio tower; its path must contain 'muq'). Default: config's "
        "audio_model.name if it is a local directory, else model_dir/<last part of that name>.",
    )
    text_model_dir: Path | None = Field(
        None,
        description="Local XLM-RoBERTa directory with its tokenizer (path must contain 'xlm-roberta'). "
        "Default: config's text_model.name if local, else model_dir/<last part of that name>.",
    )
    sample_rate: int = Field(24000, description="Rate the audio is resampled to; MuQ-MuLan works at 24 kHz.")
    clip_seconds: float = Field(10.0, gt=0, description="Clip length; MuQ-MuLan was trained on 10-s clips.")


def _sub_model_dir(model_dir: Path, configured: str, override: Path | None, marker: str, what: str) -> Path:
    candidates = [override] if override is not None else [Path(configured), model_dir / Path(configured).name]
    found = next((p for p in candidates if p.is_dir()), None)
    if found is None:
        raise FileNotFoundError(
            f"MuQ-MuLan {what} tower '{configured}' not found locally (tried {', '.join(map(str, candidates))}); "
            f"set {what}_model_dir"
        )
    name = str(found.resolve())
    if marker not in (name.lower() if marker == "muq" else name):
        raise ValueError(f"the muq package recognises the {what} tower by '{marker}' in its path; {name} lacks it")
    return found.resolve()


def _read_weights(model_dir: Path) -> dict:
    import torch

    if (model_dir / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(model_dir / "model.safetensors"))
    if (model_dir / "pytorch_model.bin").is_file():
        return torch.load(model_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {model_dir}")


class _TruncatingTokenizer:
    """The text tower tokenizes without truncation; XLM-RoBERTa has 512 positions, so cut long texts."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, texts, **kwargs):
        return self.tokenizer(texts, truncation=True, max_length=self.max_length, **kwargs)


class _Fp32Features:
    """MuQ's mel/dB features computed in float32 even under autocast (a bf16 mel loses ~0.5 dB steps)."""

    def __init__(self, features):
        self.features = features

    def __call__(self, waveform):
        import torch

        with torch.autocast(waveform.device.type, enabled=False):
            return self.features(waveform.float())

    def to(self, device):
        self.features = self.features.to(device)
        return self


def prepare_for_inference(model, tokenizer=None):
    """Eval mode, float32 features under autocast, truncated descriptions (`tokenizer`: else the tower's own)."""
    model.eval()
    muq_model = model.mulan_module.audio.model.model
    if not isinstance(muq_model.preprocessor_melspec_2048, _Fp32Features):
        muq_model.preprocessor_melspec_2048 = _Fp32Features(muq_model.preprocessor_melspec_2048)
    text = model.mulan_module.text
    tokenizer = tokenizer if tokenizer is not None else text.tokenizer
    limit = getattr(text.model.config, "max_position_embeddings", 514) - 2  # RoBERTa offsets positions by 2
    text._tokenizer = _TruncatingTokenizer(tokenizer, min(limit, tokenizer.model_max_length))
    return model


def load_muq_mulan(model_dir: Path, audio_model_dir: Path | None = None, text_model_dir: Path | None = None):
    """Build MuQ-MuLan from local directories and load its joint weights; returns (model, report)."""
    from pipeline.scoring.muq_shim import conformer_compat, import_muq

    muq = import_muq()
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    sections = {key: dict(config[key]) for key in _SECTIONS}
    audio_dir = _sub_model_dir(model_dir, sections["audio_model"]["name"], audio_model_dir, "muq", "audio")
    text_dir = _sub_model_dir(model_dir, sections["text_model"]["name"], text_model_dir, "xlm-roberta", "text")
    sections["audio_model"]["name"], sections["text_model"]["name"] = str(audio_dir), str(text_dir)
    with conformer_compat():
        model = muq.MuQMuLan(sections)
    missing, unexpected = model.load_state_dict(_read_weights(model_dir), strict=False)
    if missing:
        raise ValueError(f"MuQ-MuLan weights in {model_dir} lack {len(missing)} tensors, e.g. {missing[:5]}")
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]  # old transformers saved these
    if unexpected:
        log.warning("ignoring %d unexpected tensors in %s, e.g. %s", len(unexpected), model_dir, unexpected[:5])
    prepare_for_inference(model)
    report = {"audio_model_dir": str(audio_dir), "text_model_dir": str(text_dir), "ignored_tensors": len(unexpected),
              "sample_rate": config["mulan"].get("sr"), "clip_seconds": config["mulan"].get("clip_secs")}
    return model, report


class MulanScorer(EmbeddingScorer):
    name = "muq-mulan"

    def __init__(self, options: MulanOptions, _loaded: tuple | None = None):
        self.sample_rate = options.sample_rate
        super().__init__(options)
        loaded = _loaded or load_muq_mulan(options.model_dir, options.audio_model_dir, options.text_model_dir)
        self.model, self.report = loaded
        if self.report["sample_rate"] not in (None, options.sample_rate):
            raise ValueError(f"the model works at {self.report['sample_rate']} Hz, options say {options.sample_rate}")
        if self.report["clip_seconds"] not in (None, options.clip_seconds):
            log.warning("clip_seconds %s differs from the model's %s", options.clip_seconds, self.report["clip_seconds"])
        self.model.to(self.device)

    @classmethod
    def from_model(cls, model, options: MulanOptions, report: dict | None = None) -> "MulanScorer":
        """A scorer around a MuQ-MuLan already in memory (prepared with `prepare_for_inference`)."""
        base = {"audio_model_dir": None, "text_model_dir": None, "ignored_tensors": 0,
                "sample_rate": model.sr, "clip_seconds": model.clip_secs}
        return cls(options, _loaded=(model, {**base, **(report or {})}))

    def autocast(self):
        import torch

        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device, dtype=self.dtype)

    def _embed_clips(self, clips: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode(), self.autocast():
            latents = self.model.mulan_module.get_audio_latents(torch.from_numpy(clips).to(self.device))
        return latents.float().cpu().numpy()

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode(), self.autocast():
            latents = self.model.extract_text_latents(texts)
        return latents.float().cpu().numpy()

    def describe(self) -> dict:
        from pipeline.scoring.muq_shim import uses_torchaudio_stand_in

        out = super().describe()
        out.update(self.report)
        for tower in ("audio", "text"):
            folder = self.report[f"{tower}_model_dir"]
            out[f"{tower}_model_digest"] = model_dir_digest(Path(folder)) if folder else None
        out["torchaudio_stand_in"] = uses_torchaudio_stand_in()
        return out
