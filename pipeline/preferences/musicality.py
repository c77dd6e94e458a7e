"""Musicality: prefer the candidate the reward model (trained on human rankings) scores higher.

Score: `reward` (higher is better), from `scores/reward`, which the reward_model stage writes
after training on the round's rankings. Within a prompt, a pair needs a margin of at least
`reward_margin`: the Bradley-Terry scores are only meaningful as differences, and small ones are
within the model's error. The signal is the whole song: every stream.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from pipeline.preferences.base import Preference, RuleOptions


class MusicalityOptions(RuleOptions):
    reward_margin: float = Field(
        1.0, ge=0, description="Chosen minus rejected reward-model score must be at least this."
    )


def _rule(cands, pairs, options: MusicalityOptions) -> np.ndarray:
    return pairs.gap >= options.reward_margin


def _describe(options: MusicalityOptions) -> str:
    return f"reward margin >= {options.reward_margin}"


MUSICALITY = Preference(
    name="musicality", table="reward", column="reward", higher_is_better=True, options_class=MusicalityOptions,
    rule=_rule, describe_rule=_describe, score_label="reward (higher is better)", metric_label="reward ↑",
    card="Musicality: the chosen song is preferred by the reward model trained on the round's rankings of "
         "candidate songs (Bradley-Terry).",
    oracles=("utility",), order=30,
)  # fmt: skip
