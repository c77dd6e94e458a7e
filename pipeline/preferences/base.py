"""What a preference is: one module says everything the round needs to know about it.

A `Preference` names the score it reads and its direction, its pair rule and the options class of
that rule, the metric that evaluates a policy for it, the policy streams that carry its signal and
the text of its data card. The pairs stage, DPO parts, merge points, the sweep's axes and ablation
rows, data cards, CLI choices and the config schema all iterate the registry of preferences;
joint training is their union.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
from pydantic import BaseModel, ConfigDict

# The token streams of a LeVo-shaped policy (pipeline.models.tiny): the conditioning header, the
# mixed-token stream and the two tracks of the dual-track decoder.
POLICY_STREAMS = ("header", "mixed", "vocals", "accompaniment")


class RuleOptions(BaseModel):
    """Base of every preference's rule options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Preference:
    """One preference. `rule(cands, pairs, options) -> bool mask` keeps the pairs it teaches; `pairs`
    are every within-prompt pair with the better candidate as chosen and `gap` > 0 in score units."""

    name: str
    table: str  # the score table it reads: scores/<table>
    column: str  # the column of that table holding the raw value
    higher_is_better: bool
    options_class: type[RuleOptions]
    rule: Callable  # (Candidates, PairSet, options) -> np.ndarray of bool
    describe_rule: Callable[[RuleOptions], str]  # one line with the thresholds in force
    score_label: str  # the score and its direction, for plots: "PER x100 (lower is better)"
    metric_label: str  # the evaluation metric's column head: "PER ↓"
    card: str  # what the preference teaches, for data cards
    streams: tuple[str, ...] = POLICY_STREAMS  # policy streams that carry its signal
    oracles: tuple[str, ...] = ()  # the embedded world's ground-truth metrics of its target (tiny model only)
    score: str = ""  # the score's name in pairs, datasets and sweeps; "" = `column`
    extract: Callable | None = None  # raw cell -> float, when the score is derived from `column`
    order: int = 1000  # registry order: joint labels a pair found twice with the earlier preference
    dpo_defaults: dict = field(default_factory=dict)  # DPO run options this preference starts from

    def __post_init__(self):
        if not self.score:
            object.__setattr__(self, "score", self.column)
        unknown = sorted(set(self.streams) - set(POLICY_STREAMS))
        if unknown:
            raise ValueError(f"preference {self.name!r}: unknown streams {unknown}; streams are {POLICY_STREAMS}")

    @property
    def stage(self) -> str:
        """The stage part that writes its score table."""
        return f"scores/{self.table}"

    def values(self, table: pd.DataFrame) -> pd.Series:
        """Its score for each row of its score table (a failed row is NaN); override `extract` to
        derive the score from another column (e.g. one agreement out of a JSON details column)."""
        values = table[self.column].map(self.extract) if self.extract is not None else table[self.column]
        return pd.to_numeric(values, errors="coerce").where(table["error"].isna())
