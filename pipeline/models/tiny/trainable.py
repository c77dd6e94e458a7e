"""The tiny model's TrainablePolicy: its checkpoint as `TinyPolicy` (TRL's fused-log-prob contract
over all four streams), the text form its tokenizer reads, and its own sampler and log-probs.

Each method does what the DPO stage did for the tiny model before the contract existed, so a
tiny round's outputs are unchanged.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.models.base import SamplingParams, save_model
from pipeline.models.tiny.song_model import checkpoint_digest


class TinyTrainable:
    """TrainablePolicy of the `tiny` backend (see pipeline.models.base.TrainablePolicy)."""

    def __init__(self, checkpoint: Path, max_frames: int | None = None):
        self.checkpoint = Path(checkpoint).resolve()
        self.max_frames = max_frames
        self._config = None

    def digest(self) -> str:
        """sha256 of the weights file, hashed once per process while the file is unchanged (every DPO
        part's plan asks for it)."""
        return checkpoint_digest(self.checkpoint)

    @property
    def config(self):
        if self._config is None:
            from pipeline.models.tiny.model import TinyLeLMConfig

            self._config = TinyLeLMConfig.from_pretrained(self.checkpoint)
        return self._config

    def prompt_text(self, condition: dict) -> str:
        from pipeline.models.tiny.preference_text import TokenLayout, prompt_text

        return prompt_text(condition, TokenLayout.from_config(self.config), self.config.max_prefix)

    def completion_text(self, streams: dict[str, list[int]]) -> str:
        from pipeline.models.tiny.preference_text import completion_text

        return completion_text(streams)

    def load(self, folder: Path | None = None):
        import torch

        from pipeline.models.tiny.policy import TinyPolicy
        from pipeline.models.tiny.preference_text import TinySongTokenizer

        model = TinyPolicy.from_pretrained(Path(folder or self.checkpoint), torch_dtype=torch.float32)
        return model, TinySongTokenizer.for_model(model)

    def save(self, model, tokenizer, folder: Path) -> None:
        save_model(model, tokenizer, folder)

    def stream_logprobs(self, model, conditions: list[dict], songs: list[dict]) -> dict:
        import torch

        with torch.no_grad():
            return model.stream_logprobs(conditions, songs)

    def sample_streams(self, model, condition: dict, seeds: list[int], params: SamplingParams) -> list[dict]:
        import torch

        with torch.no_grad():
            return model.sample_batch(condition, seeds, temperature=params.temperature, top_k=params.top_k,
                                      top_p=params.top_p, max_frames=self.max_frames)  # fmt: skip
