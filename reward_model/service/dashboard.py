"""What the admin dashboard shows of a campaign, as plain data (the JSON routes answer with it too).

The statistics are `reward_model.quality.assess` over the campaign's rankings as exported
(`export.rankings_table`): Krippendorff's alpha with its bootstrap interval, and per annotator
consensus agreement, gold accuracy, speed and the reasons they are flagged. Nothing is computed
here that the reward-model stage would compute differently.
"""

from __future__ import annotations

import math

from sqlalchemy.orm import Session

from reward_model.quality import QualityThresholds, assess
from reward_model.service.campaigns import progress, task_progress
from reward_model.service.export import rankings_table
from reward_model.service.models import Campaign


def _plain(value):
    """JSON-safe: NaN (no evidence yet) becomes None, numpy scalars Python ones."""
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value


def campaign_quality(session: Session, campaign: Campaign, thresholds: QualityThresholds | None = None) -> dict:
    """Alpha with its interval and one row per annotator who ranked something (`quality.ANNOTATOR_COLUMNS`)."""
    t = thresholds or QualityThresholds()
    rankings = rankings_table(session, campaign, t.min_gold_accuracy).to_pandas()
    if rankings.empty:
        return {"alpha": {"alpha": None, "ci_low": None, "ci_high": None, "confidence": t.confidence, "tasks": 0}, "annotators": []}
    result = assess(rankings, t)
    rows = [{key: _plain(value) if key != "reasons" else list(value) for key, value in row.items()}
            for row in result.annotators.to_dict(orient="records")]  # fmt: skip
    return {"alpha": {key: _plain(value) for key, value in result.alpha.items()}, "annotators": rows}


def campaign_overview(session: Session, campaign: Campaign) -> dict:
    """Everything the campaign page shows: progress (overall, per annotator, per task) and quality."""
    overall, quality = progress(session, campaign), campaign_quality(session, campaign)
    by_name = {row["annotator_id"]: row for row in quality["annotators"]}
    annotators = [{**a, **by_name.get(a["annotator_id"], {"flagged": False, "reasons": []})} for a in overall["annotators"]]
    return {**overall, "annotators": annotators, "alpha": quality["alpha"], "per_task": task_progress(session, campaign),
            "flagged": [a for a in annotators if a.get("flagged")]}  # fmt: skip
