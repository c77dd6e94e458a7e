"""The reward_model section of the round config: rankings source, simulated crowd, embeddings,
the Bradley-Terry head and quality control."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reward_model.bradley_terry import RewardModelConfig
from reward_model.crowd import CrowdConfig
from reward_model.embeddings import EmbeddingConfig
from reward_model.quality import QualityThresholds
from reward_model.rankings_source import parse_source


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
