"""The layout of a strategy's preference dataset: where its files go and what columns they hold.

`pairs/<strategy>/data/{train,test}-00000-of-00001.parquet`, a Hugging Face Parquet dataset with
TRL DPOTrainer's columns `prompt`, `chosen`, `rejected`, both candidates' ids and audio URIs, each
registered preference's score for both sides (`chosen_per`, `rejected_reward`, ...) and the pair's
facts. The stage's own shard (`INDEX_SCHEMA`) holds the selected pairs only.
"""

from __future__ import annotations

import pyarrow as pa

from pipeline.preferences import preferences

SPLITS = ("train", "test")
PAIR_IDS = [("prompt_id", pa.string()), ("chosen_id", pa.string()), ("rejected_id", pa.string())]
PAIR_FACTS = [("strategy", pa.string()), ("chosen_score", pa.float64()), ("rejected_score", pa.float64()),
              ("gap", pa.float64()), ("genre", pa.string()), ("language", pa.string()), ("split", pa.string())]  # fmt: skip
INDEX_SCHEMA = pa.schema([*PAIR_IDS, *PAIR_FACTS])


def score_names() -> list[str]:
    """Every preference's score name, in registry order (a score two preferences share counts once)."""
    return list(dict.fromkeys(p.score for p in preferences().values()))


def dataset_schema() -> pa.Schema:
    return pa.schema([
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        *PAIR_IDS,
        ("chosen_audio_uri", pa.string()),
        ("rejected_audio_uri", pa.string()),
        *[(f"{side}_{score}", pa.float64()) for score in score_names() for side in ("chosen", "rejected")],
        *PAIR_FACTS,
    ])  # fmt: skip


def dataset_files(strategy: str) -> dict[str, str]:
    """Split -> the dataset file of a strategy, relative to the round."""
    return {split: f"pairs/{strategy}/data/{split}-00000-of-00001.parquet" for split in SPLITS}
