"""The `similarity` score kind: how well the mix matches its text description.

Table `scores/similarity`: the similarity, the backend and its parts as JSON (`details`, e.g.
per-attribute agreement). Backends under `scoring.similarity`: attributes (embedded), muq-mulan
(the paper) and clap.
"""

from __future__ import annotations

import json
from typing import Annotated, Union

import numpy as np
import pyarrow as pa
from pydantic import Field

from pipeline.scoring.attributes import AttributesOptions
from pipeline.scoring.base import ScoringItem
from pipeline.scoring.clap import ClapOptions
from pipeline.scoring.kind import ERROR_COLUMN, ID_COLUMNS, ScoreKind
from pipeline.scoring.mulan import MulanOptions

SimilarityOptions = Annotated[Union[AttributesOptions, MulanOptions, ClapOptions], Field(discriminator="backend")]


class SimilarityKind(ScoreKind):
    name = "similarity"
    schema = pa.schema([*ID_COLUMNS, ("similarity", pa.float64()), ("backend", pa.string()),
                        ("details", pa.string()), ERROR_COLUMN])  # fmt: skip
    config_key = "similarity"
    backends = {
        "attributes": "pipeline.scoring.attributes:AttributesScorer",
        "muq-mulan": "pipeline.scoring.mulan:MulanScorer",
        "clap": "pipeline.scoring.clap:ClapScorer",
    }
    options_annotation = SimilarityOptions
    default_options = AttributesOptions
    order = 20
    column, meaning, title = "similarity", "text-audio similarity (higher is better)", "text-audio similarity scores"
    role = "text-audio similarity"

    def skews(self, values: list[float]) -> list[str]:
        median = float(np.median(values)) if values else 0.0
        if median > 0.8:
            return [f"similarities sit high (median {round(median, 4)}): absolute thresholds separate few candidates; "
                    "quantile thresholds compare within a prompt"]  # fmt: skip
        return []

    def score(self, scorer, items: list[ScoringItem], lyrics: list[str]) -> list[dict]:
        rows = []
        for result in scorer.score(items):
            value = result.similarity
            error = result.error or (None if value is not None and value == value else "similarity is missing or NaN")
            rows.append({"similarity": None if error else float(value), "backend": scorer.name,
                         "details": json.dumps(result.details, sort_keys=True, default=str), "error": error})  # fmt: skip
        return rows


SIMILARITY = SimilarityKind()
