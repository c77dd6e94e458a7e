"""The embedded world's oracle metrics and the paired comparison the oracle ablation reports."""

import random

import numpy as np
import pandas as pd
import pytest

from alignment.sweep.controllability import edge_markdown, edge_table, edges
from alignment.sweep.grid import point_name
from alignment.sweep.oracle import held_out_conditions
from alignment.sweep.paired import paired_difference
from pipeline.config import RoundConfig
from pipeline.models.tiny.codec import SymbolicCodec, lyric_words
from pipeline.models.tiny.composer import compose
from pipeline.models.tiny.oracle import oracle_metrics

CONDITION = {"condition_id": "c0", "lyric": "[verse] the light is low. we walk the road [chorus] sing it out",
             "genre": "pop", "gender": "female", "emotion": "happy", "instruments": ["piano", "drums"], "bpm": 104,
             "tempo": "medium"}  # fmt: skip


def test_a_composed_song_is_perfect_by_every_oracle():
    score = compose(CONDITION, random.Random(0))
    tokens = SymbolicCodec().encode(score, lyric_words(CONDITION["lyric"]))
    metrics = oracle_metrics(tokens, CONDITION)
    assert metrics["symbolic_wer"] == 0.0 and metrics["mode_hit"] == 1.0 and 0.5 < metrics["utility"] <= 1.0
    missed = dict(tokens, vocals=[0] * len(tokens["vocals"]))  # nothing sung
    assert oracle_metrics(missed, CONDITION)["symbolic_wer"] == 100.0


def test_validation_prompts_are_fresh_and_apart_from_the_test_prompts(tmp_path):
    """Options are chosen on validation prompts; the ablation reports on test prompts: never the same."""
    config = RoundConfig.model_validate({"lyrics": {"count": 4}})
    test = held_out_conditions(config, 6, tmp_path / "test")
    validation = held_out_conditions(config, 6, tmp_path / "validation", split="validation")
    again = held_out_conditions(config, 6, tmp_path / "again", split="validation")
    assert len(test) == len(validation) == 6 and validation == again
    assert not {c["lyric"] for c in test} & {c["lyric"] for c in validation}
    assert all(c["condition_id"].startswith("validation-") for c in validation)
    with pytest.raises(ValueError, match="split: 'train' is not one of"):
        held_out_conditions(config, 2, tmp_path / "bad", split="train")


def test_paired_difference_is_over_the_same_songs_and_prompts():
    base = pd.DataFrame({"prompt_id": ["a", "a", "b", "b"], "seed": [1, 2, 1, 2], "utility": [0.5, 0.7, 0.2, 0.4]})
    better = base.assign(utility=base["utility"] + 0.1).iloc[::-1]  # row order must not matter
    result = paired_difference(better, base, "utility")
    assert np.isclose(result["diff"], 0.1) and np.isclose(result["low"], 0.1) and np.isclose(result["high"], 0.1)
    assert result["songs"] == 4 and np.isclose(result["mean"], 0.55)
    mixed = base.assign(utility=base["utility"] + np.array([0.2, 0.2, -0.2, -0.2]))
    spread = paired_difference(mixed, base, "utility")
    assert np.isclose(spread["diff"], 0.0) and spread["low"] < 0 < spread["high"]


def test_a_child_round_continues_its_parents_chosen_policy():
    config = RoundConfig.model_validate({"parent": "/rounds/r1"})
    assert config.model.options["checkpoint"] == "/rounds/r1/sweep/chosen"
    pinned = RoundConfig.model_validate({"parent": "/rounds/r1", "model": {"options": {"checkpoint": "/elsewhere"}}})
    assert pinned.model.options["checkpoint"] == "/elsewhere"


def test_controllability_reads_each_edge_both_ways():
    axes = ["lyrics", "prompt", "musicality"]
    on_edges = edges(axes, 0.25)
    assert list(on_edges) == [("lyrics", "prompt"), ("lyrics", "musicality"), ("prompt", "musicality")]
    assert [w["lyrics"] for w in on_edges[("lyrics", "prompt")]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(w["musicality"] == 0 for w in on_edges[("lyrics", "prompt")])
    # a world where WER falls with lyrics' weight and utility rises with musicality's, tempo flat
    rows = []
    for weights in {point_name(w): w for ws in on_edges.values() for w in ws}.values():
        for prompt in ("a", "b"):
            rows.append({"point": point_name(weights), "prompt_id": prompt, "seed": 1,
                         "symbolic_wer": 30 - 20 * weights["lyrics"] + (prompt == "b"),
                         "utility": 0.5 + 0.1 * weights["musicality"], "tempo_hit": 0.8})  # fmt: skip
    own = {"lyrics": ("symbolic_wer",), "prompt": ("tempo_hit",), "musicality": ("utility",)}
    table = edge_table(pd.DataFrame(rows), axes, 0.25, own).set_index(["edge", "grows"])
    assert np.isclose(table.loc[("lyrics–prompt", "lyrics"), "spearman"], 1.0) and table.loc[("lyrics–prompt", "lyrics"), "monotone"]
    assert np.isclose(table.loc[("lyrics–musicality", "musicality"), "spearman"], 1.0)
    assert table.loc[("lyrics–prompt", "lyrics"), "at_0"] == 30.5 and table.loc[("lyrics–prompt", "lyrics"), "at_1"] == 10.5
    flat = table.loc[("lyrics–prompt", "prompt")]
    assert not flat["monotone"] and np.isnan(flat["spearman"])  # a flat metric is no evidence of control
    assert "| lyrics–prompt | lyrics | symbolic wer | 5 | +1.00 | yes | 30.5 → 10.5 |" in edge_markdown(table.reset_index())
