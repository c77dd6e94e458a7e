"""A kind of score: the table `scores/<name>` it writes, which stem it hears, how it is computed.

Kinds register in the entry-point group `songpref.scorers` (`pipeline.scoring.registry`): songpref's
own are `per` (a transcriber, then phoneme error rate), `similarity` (text-audio) and `reward`
(the round's reward model). A kind with a `config_key` has its backends' options under
`scoring.<config_key>` in the round config, one backend chosen by name; a kind `trained_in_round`
(reward) is scored by the reward_model stage after training, the others by the scores stage.
A new kind is one module with a `ScoreKind` plus one entry point.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import pyarrow as pa

from pipeline.scoring.base import ScoringItem

# Every score table starts and ends with these columns.
ID_COLUMNS = [("candidate_id", pa.string()), ("audio_sha256", pa.string())]
ERROR_COLUMN = ("error", pa.string())


class ScoreKind(ABC):
    name: ClassVar[str]  # the table: scores/<name>
    schema: ClassVar[pa.Schema]
    stems: ClassVar[tuple[str, ...]] = ("mix",)  # the stem it scores, first present wins
    trained_in_round: ClassVar[bool] = False  # scored after the reward_model stage trains its model
    config_key: ClassVar[str | None] = None  # `scoring.<config_key>`: its backends' options
    backends: ClassVar[dict[str, str]] = {}  # backend name -> "module:Class" (built with its options)
    options_annotation: ClassVar[Any] = None  # the options type: an Annotated union discriminated by `backend`
    default_options: ClassVar[Any] = None  # a callable giving the default options
    order: ClassVar[int] = 1000
    # For data cards: the value column, what it means, the dataset's title and tasks, the scorer's role.
    column: ClassVar[str]
    meaning: ClassVar[str]
    title: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]] = ("text-to-audio",)
    role: ClassVar[str] = ""

    @property
    def stage(self) -> str:
        return f"scores/{self.name}"

    def options(self, config):
        """The options that shape this kind's rows (part of every shard's key)."""
        return getattr(config.scoring, self.config_key)

    def load(self, config, store):
        """The scorer, loaded once per process and options (models are large)."""
        from pipeline.scoring.registry import build_backend

        return build_backend(self.backends, self.options(config))

    @abstractmethod
    def score(self, scorer, items: list[ScoringItem], lyrics: list[str]) -> list[dict]:
        """One row per item, in order (schema columns besides the ids; `error` set on failure);
        `lyrics` are every lyric of the round (an ASR may build its language model from them)."""

    def skews(self, values: list[float]) -> list[str]:
        """Measured oddities of this score's scale that change how pair thresholds behave."""
        return []

    def extra_inputs(self, store) -> dict:
        """What else a shard reads besides its candidates (e.g. a model trained in the round)."""
        return {}
