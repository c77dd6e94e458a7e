"""The SongModel interface: sample N candidate songs per condition, with one recorded seed each;
and the TrainablePolicy contract: what DPO, DNI merge and the sweep need of a model.

Backends: `tiny` (embedded, pipeline/models/tiny), `hf-codec` (a YuE-style Hugging Face codec
LM) and plugins registered in the Python entry-point group `songpref.models` (e.g. the
LeVo/SongGeneration adapter). A backend is trainable when its class also offers
`trainable_policy(options)`; a round whose backend is not stops before `pairs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    cfg_coef: float | None = None  # classifier-free guidance, where the model has it


@dataclass(frozen=True)
class CandidateRequest:
    """One song to sample: `condition` is a conditions-stage row (lyric, description, tags, prompt)."""

    candidate_id: str
    condition: dict
    seed: int


@dataclass
class CandidateResult:
    """Where one sampled song went. `audio` maps stem name (mix, vocals, accompaniment) to a file;
    `tokens` is a file of the song's token streams when the model has them: JSON
    `{stream: [token ids]}`, exactly as sampled (a trainable model must write it: pairs, DPO and
    the KL estimate read it back). A failed candidate has `error` set and no audio."""

    candidate_id: str
    audio: dict[str, Path] = field(default_factory=dict)
    tokens: Path | None = None
    duration_seconds: float = 0.0
    error: str | None = None


class SongModel(Protocol):
    name: str

    def sample(self, requests: list[CandidateRequest], params: SamplingParams, out_dir: Path) -> list[CandidateResult]:
        """Sample and render every request into out_dir/<candidate_id>/, in request order. A plugin
        may also take `progress`, a callable given the count of songs done so far (the candidates
        stage reports it inside the shard: to the CLI's bar and the flow run's log)."""
        ...

    def describe(self) -> dict:
        """Checkpoint, its digest and settings: for manifests and data cards."""
        ...

    # Optional, by duck typing:
    # - `check_sampling(params) -> ...`: raise ValueError naming a sampling value the model cannot
    #   take; the candidates stage calls it when it plans, before any song is sampled.
    # - class attribute `checkpoint_option`: the options key naming the weights to sample from
    #   (default "checkpoint" where the options have it); see pipeline.models.checkpoint.


class TrainablePolicy(Protocol):
    """What DPO, DNI merge and the sweep need of a song model, beside sampling.

    A SongModel class is trainable when it has a classmethod `trainable_policy(options)` that
    returns one of these (without loading the sampler); its options then have a `checkpoint`
    field, so the sweep and a continued round sample from another checkpoint by setting it.
    Implemented by `tiny` (pipeline/models/tiny/trainable.py), every Hugging Face causal LM
    (pipeline/models/causal_lm.py, used by `hf-codec`) and a lab's own plugin.
    """

    checkpoint: Path
    """The folder the song model samples from: config.json and *.safetensors weights (what DPO
    starts at and DNI merges tensor by tensor, with the folder's other files copied along)."""

    def digest(self) -> str:
        """What identifies the checkpoint's weights (part of DPO's shard keys)."""
        ...

    def prompt_text(self, condition: dict) -> str:
        """The condition as the policy tokenizer's prompt text (TRL's `prompt` column)."""
        ...

    def completion_text(self, streams: dict[str, list[int]]) -> str:
        """A sampled song's token streams (its tokens file) as completion text (`chosen`/`rejected`):
        the tokenizer reads prompt + completion back to exactly the ids the song was sampled as."""
        ...

    def load(self, folder: Path | None = None) -> tuple[Any, Any]:
        """(model, tokenizer) of the weights in `folder` (default: `checkpoint`), float32: a model
        TRL's DPOTrainer trains (a causal LM, or one with `computes_fused_log_probs = True` that
        returns TRL's per-token log-probs itself) and the tokenizer it trains with."""
        ...

    def save(self, model, tokenizer, folder: Path) -> None:
        """Write a trained model (or LoRA adapter) and its tokenizer into `folder`, loadable as a checkpoint."""
        ...

    def stream_logprobs(self, model, conditions: list[dict], songs: list[dict[str, list[int]]]) -> dict[str, Any]:
        """Teacher-forced log p(song | condition) per stream: {stream: tensor [B]}; their sum is the
        song's log-likelihood (what DPO's log-ratios sum)."""
        ...

    def sample_streams(self, model, condition: dict, seeds: list[int], params: SamplingParams) -> list[dict[str, list[int]]]:
        """One song's token streams per seed, sampled from `model` as the song model does (no audio)."""
        ...


class PreferenceText(Protocol):
    """What a SongModel adds to be trained with TRL's DPOTrainer on the pairs the round writes:
    the text of a condition (`prompt`) and of a sampled song (`chosen`/`rejected`) that its
    policy's tokenizer reads."""

    def preference_prompt(self, condition: dict) -> str: ...

    def preference_completion(self, tokens: dict) -> str: ...


def save_model(model, tokenizer, folder) -> None:
    """A model and its tokenizer into `folder`, replacing what was there (callers write into a
    scratch folder and rename it into place)."""
    import shutil
    from pathlib import Path

    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
