"""The policy DPO trains: loading it with its tokenizer, and a sampled estimate of KL(policy || reference).

`tiny` rounds train the round's own model (its checkpoint, as `TinyPolicy`); any other backend
names a Hugging Face causal LM folder in the config (`dpo.policy`), trained with TRL as it is.
"""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_checkpoint(model_options: dict) -> Path:
    from pipeline.models.tiny.song_model import CHECKPOINT_DIR

    return Path(model_options.get("checkpoint") or CHECKPOINT_DIR).resolve()


def policy_folder(backend: str, model_options: dict, policy_path: str | None) -> Path:
    """Where the policy's weights are: the tiny checkpoint, or the `dpo.policy` folder."""
    if policy_path is None:
        if backend != "tiny":
            raise ValueError(f"dpo.policy: model.backend {backend!r} is not trainable here; name a Hugging Face "
                             "causal LM folder (the song LM to align) in dpo.policy")  # fmt: skip
        return tiny_checkpoint(model_options)
    folder = Path(policy_path).resolve()
    if not (folder / "config.json").is_file():
        raise ValueError(f"dpo.policy: {folder} is not a model folder (no config.json)")
    return folder


def load_policy(backend: str, model_options: dict, policy_path: str | None):
    """(model, tokenizer, the folder it came from) for a DPO run, in float32."""
    folder = policy_folder(backend, model_options, policy_path)
    if policy_path is None:
        from alignment.tiny_policy import TinyPolicy
        from pipeline.models.tiny.preference_text import TinySongTokenizer

        model = TinyPolicy.from_pretrained(folder, torch_dtype=torch.float32)
        return model, TinySongTokenizer.for_model(model), folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32), AutoTokenizer.from_pretrained(folder), folder


def song_logprob(model, conditions: list[dict], songs: list[dict]) -> torch.Tensor:
    """log p(song | condition) under a tiny policy, all streams summed: [B]."""
    with torch.no_grad():
        parts = model.stream_logprobs(conditions, songs)
    return sum(parts.values())


def kl_estimate(policy, reference, conditions: list[dict], seeds: list[int], temperature: float = 1.0,
                max_frames: int | None = None) -> dict:  # fmt: skip
    """Monte Carlo KL(policy || reference): mean over songs y ~ policy of log π(y) − log π_ref(y),
    one song per (condition, seed); with its standard error."""
    values = []
    for condition, seed in zip(conditions, seeds):
        with torch.no_grad():
            song = policy.sample_batch(condition, [seed], temperature=temperature, max_frames=max_frames)[0]
        values.append(float(song_logprob(policy, [condition], [song])[0] - song_logprob(reference, [condition], [song])[0]))
    if not values:
        return {"kl": None, "kl_stderr": None, "samples": 0}
    t = torch.tensor(values, dtype=torch.float64)
    stderr = float(t.std() / len(t) ** 0.5) if len(t) > 1 else None
    return {"kl": float(t.mean()), "kl_stderr": stderr, "samples": len(values)}
