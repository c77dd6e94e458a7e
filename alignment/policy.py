"""The policy DPO trains: loading it with its tokenizer, and a sampled estimate of KL(policy || reference).

The round's own model is trained through its backend's TrainablePolicy (pipeline.models.base):
the tiny model as `TinyPolicy`, a Hugging Face codec LM as the causal LM it is, a lab's model
through its plugin. `dpo.policy` names a Hugging Face causal LM folder to train instead.
torch is imported by the functions that run a model: planning a stage (`policy_folder`) needs none.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.models.base import SamplingParams
from pipeline.models.registry import trainable_policy

if TYPE_CHECKING:
    import torch


def tiny_checkpoint(model_options: dict) -> Path:
    from pipeline.models.tiny.song_model import CHECKPOINT_DIR

    return Path(model_options.get("checkpoint") or CHECKPOINT_DIR).resolve()


def policy_folder(backend: str, model_options: dict, policy_path: str | None) -> Path:
    """Where the policy's weights are: the backend's checkpoint, or the `dpo.policy` folder.
    A backend without a trainable-policy plugin raises NotTrainable, naming it."""
    if policy_path is None:
        return trainable_policy(backend, model_options).checkpoint
    folder = Path(policy_path).resolve()
    if not (folder / "config.json").is_file():
        raise ValueError(f"dpo.policy: {folder} is not a model folder (no config.json)")
    return folder


def load_policy(backend: str, model_options: dict, policy_path: str | None):
    """(model, tokenizer, the folder it came from) for a DPO run, in float32."""
    import torch

    folder = policy_folder(backend, model_options, policy_path)
    if policy_path is None:
        model, tokenizer = trainable_policy(backend, model_options).load(folder)
        return model, tokenizer, folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32), AutoTokenizer.from_pretrained(folder), folder


class _TinyStreams:
    """The tiny model's own sampler and log-probs, for callers that pass no TrainablePolicy."""

    def __init__(self, max_frames: int | None):
        self.max_frames = max_frames

    def stream_logprobs(self, model, conditions, songs):
        import torch

        with torch.no_grad():
            return model.stream_logprobs(conditions, songs)

    def sample_streams(self, model, condition, seeds, params: SamplingParams):
        import torch

        with torch.no_grad():
            return model.sample_batch(condition, seeds, temperature=params.temperature, max_frames=self.max_frames)


def song_logprob(model, conditions: list[dict], songs: list[dict], trainable=None) -> torch.Tensor:
    """log p(song | condition) under a policy, all streams summed: [B]."""
    parts = (trainable or _TinyStreams(None)).stream_logprobs(model, conditions, songs)
    return sum(parts.values())


def kl_estimate(policy, reference, conditions: list[dict], seeds: list[int], temperature: float = 1.0,
                max_frames: int | None = None, trainable=None) -> dict:  # fmt: skip
    """Monte Carlo KL(policy || reference): mean over songs y ~ policy of log π(y) − log π_ref(y),
    one song per (condition, seed); with its standard error. `trainable` (a TrainablePolicy)
    samples and scores; without it, the models are tiny policies sampled up to `max_frames`."""
    import torch

    streams = trainable or _TinyStreams(max_frames)
    values = []
    for condition, seed in zip(conditions, seeds):
        song = streams.sample_streams(policy, condition, [seed], SamplingParams(temperature=temperature))[0]
        values.append(float(song_logprob(policy, [condition], [song], streams)[0]
                            - song_logprob(reference, [condition], [song], streams)[0]))  # fmt: skip
    if not values:
        return {"kl": None, "kl_stderr": None, "samples": 0}
    t = torch.tensor(values, dtype=torch.float64)
    stderr = float(t.std() / len(t) ** 0.5) if len(t) > 1 else None
    return {"kl": float(t.mean()), "kl_stderr": stderr, "samples": len(values)}
