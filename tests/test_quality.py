"""Quality control of crowd rankings: Krippendorff's alpha on known answers, annotator checks, the
report, and the acceptance on the simulated crowd (its careless annotators are the ones flagged)."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from pipeline.models.tiny.composer import compose
from reward_model.crowd import CrowdConfig, SimulatedCrowd
from reward_model.quality import (
    QualityThresholds,
    _distances,
    annotator_quality,
    assess,
    campaign_alpha,
    consensus_agreement,
    drop_flagged,
    krippendorff_alpha,
)
from reward_model.quality_report import write_quality_report
from reward_model.options import RewardStageOptions
from test_reward_model import condition, damage

N = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers,
# 12 units, values 1-5, missing data. Published: nominal .743, ordinal .815, interval .849.
PAPER_C = [[1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
           [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
           [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
           [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N]]  # fmt: skip
# Section A: binary data, two observers, no missing data. Published: .095.
PAPER_A = [[0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]]


def ranking(annotator, task, ids, ranks, seconds=60.0, gold=None):
    return {"annotator_id": annotator, "task_id": task, "prompt_id": task.split("/")[0], "candidate_ids": ids,
            "ranks": ranks, "tied": len(set(ranks)) < len(ranks), "is_gold": gold is not None, "gold_answer": gold,
            "duration_s": seconds, "simulated": False}  # fmt: skip


@pytest.mark.parametrize(("metric", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_alpha_matches_krippendorffs_worked_example(metric, published):
    assert krippendorff_alpha(PAPER_C, metric) == pytest.approx(published, abs=5e-4)


def test_alpha_on_hand_examples():
    # o_00 = 10, o_01 = o_10 = 4, o_11 = 2: alpha = 1 - 19 * 4 / (14 * 6) = 0.0952
    assert krippendorff_alpha(PAPER_A, "nominal") == pytest.approx(1 - 19 * 4 / (14 * 6))
    assert krippendorff_alpha([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, N, 4]]) == 1.0
    assert np.isnan(krippendorff_alpha([[2, 2, 2], [2, 2, 2]]))  # no variation: undefined, not 1
    with pytest.raises(ValueError, match="unknown alpha metric 'cosine'"):
        krippendorff_alpha(PAPER_A, "cosine")


def test_ordinal_distance_is_the_definition():
    # d2_ck = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2, written out with loops
    n_c = np.array([3.0, 0.0, 7.0, 2.0, 5.0])
    expected = np.array([[(n_c[min(c, k):max(c, k) + 1].sum() - (n_c[c] + n_c[k]) / 2) ** 2 for k in range(5)]
                         for c in range(5)])  # fmt: skip
    assert np.allclose(_distances(n_c, "ordinal", np.arange(5.0)), expected)
    assert np.allclose(_distances(np.stack([n_c, n_c]), "ordinal", np.arange(5.0))[1], expected)


def test_campaign_alpha_is_the_matrix_alpha_with_a_seeded_interval():
    rng = np.random.default_rng(3)
    rows = []
    for t in range(30):
        true = rng.permutation(4)
        for a in rng.choice(6, size=3, replace=False):
            noisy = np.argsort(np.argsort(true + rng.normal(0, 1.2, 4))) + 1
            rows.append(ranking(f"a{a}", f"p{t}/t0", ["w", "x", "y", "z"], [int(r) for r in noisy]))
    rankings = pd.DataFrame(rows)
    long = [(r["annotator_id"], (r["task_id"], c), k) for r in rows for c, k in zip(r["candidate_ids"], r["ranks"])]
    matrix = pd.DataFrame(long, columns=["annotator", "unit", "rank"]).pivot(index="annotator", columns="unit", values="rank")
    result = campaign_alpha(rankings, QualityThresholds(bootstrap_samples=300, seed=1))
    assert result["alpha"] == pytest.approx(krippendorff_alpha(matrix.to_numpy(dtype=float), "ordinal"))
    assert result["ci_low"] < result["alpha"] < result["ci_high"] and result["tasks"] == 30
    assert campaign_alpha(rankings, QualityThresholds(bootstrap_samples=300, seed=1)) == result
    assert campaign_alpha(rankings, QualityThresholds(bootstrap_samples=300, seed=2))["ci_low"] != result["ci_low"]
    assert campaign_alpha(rankings, QualityThresholds(bootstrap_samples=0))["ci_low"] is None


def test_consensus_agreement_on_a_hand_example():
    ids = ["x", "y", "z"]
    rankings = pd.DataFrame([ranking("u1", "p/t0", ids, [1, 2, 3]), ranking("u2", "p/t0", ids, [1, 2, 3]),
                             ranking("u3", "p/t0", ids, [1, 3, 2]), ranking("u4", "q/t0", ids, [1, 2, 3])])  # fmt: skip
    out = consensus_agreement(rankings).set_index("annotator_id")
    # u1: others' mean x 1, y 2.5, z 2.5 -> xy, xz agree, yz tied (skipped); u3: others 1, 2, 3 -> yz disagrees
    assert out.loc["u1"].tolist() == [2, 1.0] and out.loc["u3"].tolist() == [3, pytest.approx(2 / 3)]
    assert "u4" not in out.index  # alone on its task: nothing to compare with


def test_each_check_flags_with_its_reason_and_only_with_enough_evidence():
    ids = ["w", "x", "y", "z"]
    rows = []
    for t in range(8):
        task = f"p{t}/t0"
        gold = "w" if t < 4 else None
        for a in ("good1", "good2", "good3"):
            rows.append(ranking(a, task, ids, [1, 2, 3, 4], 60.0 + t, gold))
        rows.append(ranking("contrarian", task, ids[::-1], [1, 2, 3, 4], 61.0, gold))
        rows.append(ranking("clicker", task, ids, [1, 2, 3, 4], 4.0, gold))
    rows.append(ranking("newcomer", "p0/t0", ids[::-1], [1, 2, 3, 4], 1.0))
    table = annotator_quality(pd.DataFrame(rows)).set_index("annotator_id")
    assert not table.loc[["good1", "good2", "good3"], "flagged"].any()
    reasons = table.loc["contrarian", "reasons"]
    assert table.loc["contrarian", "gold_accuracy"] == 0 and any(r.startswith("gold accuracy 0.00 < 0.50") for r in reasons)
    assert any(r.startswith("consensus agreement 0.00 < 0.60") for r in reasons)
    assert table.loc["clicker", "reasons"][0].startswith("too fast: median 4.0 s per task, robust z")
    assert not table.loc["newcomer", "flagged"]  # one task: too little evidence to judge
    strict = annotator_quality(pd.DataFrame(rows), QualityThresholds(max_speed_z=0, min_seconds_per_task=65))
    assert strict.set_index("annotator_id").loc["good1", "reasons"] == ["too fast: median 63.5 s per task < 65 s"]


def test_legacy_min_gold_accuracy_moves_into_quality():
    options = RewardStageOptions.model_validate({"min_gold_accuracy": 0.7})
    assert options.quality.min_gold_accuracy == 0.7 and options.quality.min_consensus_agreement == 0.6
    with pytest.raises(ValueError, match="min_gold_accuracy is set twice"):
        RewardStageOptions.model_validate({"min_gold_accuracy": 0.7, "quality": {"min_gold_accuracy": 0.4}})
    with pytest.raises(ValueError, match="quality.min_tasks"):
        RewardStageOptions.model_validate({"quality": {"min_tasks": 0}})


@pytest.fixture(scope="module")
def candidates():
    """64 prompts x 4 candidates (the tiny round's shape): one sound score, three damaged ones."""
    rows = []
    for p in range(64):
        base = compose(condition(p), random.Random(1000 + p))
        for j in range(4):
            score = base if j == 0 else damage(base, random.Random(p * 100 + j))
            rows.append({"candidate_id": f"p{p:02d}-c{j}", "prompt_id": f"p{p:02d}", "score": score})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("config", [CrowdConfig(seed=s) for s in range(3)]
                         + [CrowdConfig(seed=s, annotators=16, careless_share=0.25) for s in range(3)])  # fmt: skip
def test_quality_control_flags_the_simulated_spammers(candidates, config):
    crowd = SimulatedCrowd(config)
    rankings, _ = crowd.rank(candidates)
    result = assess(rankings, QualityThresholds(bootstrap_samples=200))
    careless = set(crowd.annotators.loc[crowd.annotators["careless"], "annotator_id"])
    flagged = set(result.excluded)
    assert careless and careless <= flagged and len(flagged - careless) <= 1
    assert result.simulated and 0.3 < result.alpha["alpha"] < 0.9
    kept = drop_flagged(rankings, result)
    assert set(kept["annotator_id"]).isdisjoint(flagged) and len(kept) < len(rankings)
    assert campaign_alpha(kept, QualityThresholds(bootstrap_samples=0))["alpha"] > result.alpha["alpha"]


def test_report_is_written_labelled_and_whole(candidates, tmp_path):
    rankings, _ = SimulatedCrowd(CrowdConfig(seed=0)).rank(candidates)
    result = write_quality_report(rankings, QualityThresholds(bootstrap_samples=100), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quality.md", "quality.png"]  # no temporaries left
    text = (tmp_path / "quality.md").read_text()
    assert text.startswith("# Ranking quality (simulated)") and "SIMULATED crowd" in text
    assert f"**{result.alpha['alpha']:.3f}**" in text and f"excluded from training: **{len(result.excluded)}**" in text
    for annotator in result.excluded:
        assert f"| {annotator} |" in text and "gold accuracy" in text
    assert (tmp_path / "quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
