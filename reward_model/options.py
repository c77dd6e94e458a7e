"""The reward_model section of the round config: rankings source, simulated crowd, embeddings,
the Bradley-Terry head and quality control.

Every options class of the section lives here, with pydantic alone, so a config loads without
torch, scipy or pandas; the modules that use them (bradley_terry, crowd, embeddings, quality)
import them from here."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.models.tiny.oracle import MusicalityWeights
from reward_model.rankings_source import parse_source


class RewardModelConfig(BaseModel):
    """Options of the reward model and its training.

    Parameters:
        hidden_size: Width of the head's hidden layers.
        num_layers: Hidden layers (0 = a linear reward, the classic Bradley-Terry on features).
        dropout: Dropout after each hidden layer.
        learning_rate: AdamW learning rate.
        num_epochs: Passes over the training pairs.
        batch_size: Pairs per optimiser step.
        margin: Subtracted from r(chosen) - r(rejected) inside the loss (TRL's `margin` column, one value here).
        weight_decay: AdamW weight decay; the data sets are small, so it matters.
        center_rewards_coefficient: TRL's penalty on mean((r+ + r-)^2); 0 turns it off.
        seed: Seeds initialisation, shuffling and the prompt split: same seed, same weights.
        test_fraction: Expected share of prompts held out for evaluation.
        calibration_bins: Equal-width bins of sigmoid(r_i - r_j) for the reliability table.
        torch_threads: torch threads while training, restored after (None = leave them); a head this
            small trains fastest on one thread, and more threads on a busy machine slow it down many times.
    """

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(32, ge=1)
    num_layers: int = Field(1, ge=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    learning_rate: float = Field(1e-3, gt=0)
    num_epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    margin: float = Field(0.0)
    weight_decay: float = Field(1e-2, ge=0)
    center_rewards_coefficient: float = Field(0.0, ge=0)
    seed: int = Field(0, ge=0)
    test_fraction: float = Field(0.25, ge=0, lt=1)
    calibration_bins: int = Field(10, ge=1)
    torch_threads: int | None = Field(1, ge=1)


class CrowdConfig(BaseModel):
    """The simulated campaign.

    Parameters:
        seed: Root of every random choice.
        annotators: Size of the crowd.
        candidates_per_task: k candidates of one prompt per task (fewer if the prompt has fewer).
        tasks_per_prompt: Tasks drawn per prompt, each a random k-subset (so tasks overlap).
        annotators_per_task: Different annotators per task (their overlap gives the agreement ceiling).
        noise_sd_range: Each annotator's perception noise sd, uniform in this range (utility units).
        careless_share: Share of annotators who rank at random.
        tie_width: Neighbours perceived closer than this are tied (no preference).
        gold_min_gap: A task is gold when its best utility beats the runner-up by this much.
        seconds_base: Time an annotator spends on a task besides listening (s).
        listen_share: Mean share of each song listened to (log-normal around it).
        weights: Utility component weights.
    """

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0)
    annotators: int = Field(12, ge=2)
    candidates_per_task: int = Field(4, ge=2)
    tasks_per_prompt: int = Field(3, ge=1)
    annotators_per_task: int = Field(3, ge=1)
    noise_sd_range: tuple[float, float] = Field((0.02, 0.08))
    careless_share: float = Field(0.1, ge=0, le=1)
    tie_width: float = Field(0.004, ge=0)
    gold_min_gap: float = Field(0.08, ge=0)
    seconds_base: float = Field(20.0, ge=0)
    listen_share: float = Field(0.6, gt=0, le=1)
    weights: MusicalityWeights = Field(default_factory=MusicalityWeights)


class EmbeddingConfig(BaseModel):
    """Which embedding backend the reward model reads, and its options.

    Parameters:
        backend: `features` (embedded numpy descriptors) or `muq` (MuQ-MuLan audio tower).
        sample_rate: Rate the `features` backend decodes audio at (Hz); the tiny renders are 16 kHz.
        min_seconds: Shorter audio is an error row, not an embedding.
        silence_dbfs: A mix whose peak is below this level (dBFS) is an error row.
        model_dir: `muq` only: the local MuQ-MuLan directory (see `pipeline.scoring.mulan`).
        audio_model_dir: `muq` only: override for the MuQ tower's directory.
        text_model_dir: `muq` only: override for the XLM-RoBERTa tower's directory (the loader builds both).
        device: `muq` only: "auto", "cpu" or "cuda".
        batch_clips: `muq` only: clips per forward pass, gathered across songs.
        workers: `features` only: processes computing descriptors; any count gives the same vectors.
    """

    model_config = ConfigDict(extra="forbid")

    backend: Literal["features", "muq"] = Field("features", description="Embedding backend.")
    sample_rate: int = Field(16000, ge=8000, description="features: decoding rate (Hz).")
    min_seconds: float = Field(1.0, ge=0, description="Shorter audio is an error.")
    silence_dbfs: float = Field(-60.0, description="A mix peaking below this (dBFS) is an error.")
    model_dir: Path | None = Field(None, description="muq: local MuQ-MuLan directory.")
    audio_model_dir: Path | None = Field(None, description="muq: MuQ tower directory override.")
    text_model_dir: Path | None = Field(None, description="muq: XLM-RoBERTa tower directory override.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="muq: device.")
    batch_clips: int = Field(32, ge=1, description="muq: clips per forward pass.")
    workers: int = Field(2, ge=1, description="features: processes computing descriptors (1: in this process).")


class QualityThresholds(BaseModel):
    """When an annotator's rankings are excluded, and how the campaign's reliability is estimated."""

    model_config = ConfigDict(extra="forbid")

    min_gold_accuracy: float = Field(0.5, ge=0, le=1, description="Excluded below this share of gold tasks answered right.")
    min_gold_tasks: int = Field(2, ge=1, description="Gold accuracy is judged only from this many gold tasks on.")
    min_consensus_agreement: float = Field(
        0.6, ge=0, le=1, description="Excluded below this share of pairs ordered like the other annotators' mean rank."
    )
    min_tasks: int = Field(5, ge=1, description="Consensus and speed are judged only from this many ranked tasks on.")
    max_speed_z: float = Field(
        3.0, ge=0, description="Excluded when the median log seconds per task is this many robust sds below the crowd's (0 = off)."
    )
    min_seconds_per_task: float = Field(0.0, ge=0, description="Excluded when the median seconds per task is below this (0 = off).")
    bootstrap_samples: int = Field(1000, ge=0, description="Resamples of tasks for alpha's confidence interval (0 = none).")
    confidence: float = Field(0.95, gt=0, lt=1, description="Coverage of alpha's bootstrap (percentile) interval.")
    seed: int = Field(0, ge=0, description="Seeds the bootstrap: same rankings and seed, same interval.")



class RewardStageOptions(BaseModel):
    """Reward model: rankings source, simulated crowd, audio embeddings, Bradley-Terry head, quality control."""

    model_config = ConfigDict(extra="forbid")

    rankings: str = Field(
        "simulated",
        description="Where the rankings come from: the annotation service's export file (Parquet or CSV), a campaign URL "
        "of the service (http(s)://HOST/admin/campaigns/NAME, read with the admin token in $SONGPREF_ADMIN_TOKEN), or "
        "'simulated': the embedded world's crowd, which ranks only the tiny model's songs (any other model.backend is "
        "refused at plan time without a real source).",
        json_schema_extra={"needs": "source", "keywords": ["simulated"]},
    )
    crowd: CrowdConfig = Field(default_factory=CrowdConfig, description="The simulated crowd (rankings: simulated).")
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig, description="Audio embeddings the head reads.")
    training: RewardModelConfig = Field(default_factory=RewardModelConfig, description="The Bradley–Terry head.")
    quality: QualityThresholds = Field(
        default_factory=QualityThresholds, description="Quality control: which annotators are excluded before training."
    )

    @field_validator("rankings")
    @classmethod
    def _a_rankings_source(cls, value: str) -> str:
        parse_source(value)  # a URL that is not a campaign's, or a file of another kind, is refused here
        return value

    @model_validator(mode="before")
    @classmethod
    def _legacy_min_gold_accuracy(cls, data):
        """Configs written before `quality` set `min_gold_accuracy` at this level: it moves into `quality`."""
        if isinstance(data, dict) and "min_gold_accuracy" in data:
            data = dict(data)
            legacy = data.pop("min_gold_accuracy")
            quality = dict(data.get("quality") or {})
            if "min_gold_accuracy" in quality and quality["min_gold_accuracy"] != legacy:
                raise ValueError("min_gold_accuracy is set twice (top level and quality) with different values")
            data["quality"] = {**quality, "min_gold_accuracy": legacy}
        return data
