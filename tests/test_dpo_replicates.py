"""The dpo option `replicates`: each run's shard and seed, the combined metrics, and the options it refuses.
(The stage's runs and their weight average: tests/test_alignment_stages.py.)"""

import pytest
from pydantic import ValidationError

from alignment.dpo.options import DpoStageOptions
from alignment.dpo.replicates import combined_metrics, replicate_spec
from pipeline.stages.base import ShardSpec

SPEC = ShardSpec("dpo/lyrics", 0, {"pairs": {"train": "abc"}}, {"run": {"replicates": 3}, "seed": 7})


def test_the_first_replicate_is_the_plain_run_and_the_others_have_their_own_seed_and_folder():
    first, second, third = (replicate_spec(SPEC, i) for i in range(3))
    assert first == SPEC
    assert len({first.params["seed"], second.params["seed"], third.params["seed"]}) == 3
    assert len({first.key, second.key, third.key}) == 3  # the run folder is named by the key
    assert replicate_spec(SPEC, 2) == third  # the same seed every time: a killed run resumes
    assert (second.inputs, second.stage, second.index) == (SPEC.inputs, SPEC.stage, SPEC.index)


def test_combined_metrics_keep_each_run_and_average_the_held_out_figures():
    runs = [{"seed": 1, "log": [{"step": 1, "loss": 0.7}], "eval": {"eval_rewards/accuracies": 0.5, "eval_loss": 0.6}},
            {"seed": 2, "log": [{"step": 1, "loss": 0.6}], "eval": {"eval_rewards/accuracies": 0.75, "eval_loss": None}}]
    combined = combined_metrics(runs)
    assert combined["eval"]["eval_rewards/accuracies"] == pytest.approx(0.625)
    assert combined["eval"]["eval_loss"] == pytest.approx(0.6)  # a run without the figure is left out of its mean
    assert [row["replicate"] for row in combined["log"]] == [0, 1]
    assert [run["seed"] for run in combined["replicates"]] == [1, 2]


def test_replicates_with_lora_are_refused_when_the_config_is_read_naming_the_strategy():
    with pytest.raises(ValidationError, match=r"per_strategy\.musicality: .*replicates 3 with lora"):
        DpoStageOptions.model_validate({"per_strategy": {"musicality": {"replicates": 3, "lora": {"r": 4}}}})
    with pytest.raises(ValidationError, match="replicates"):
        DpoStageOptions.model_validate({"defaults": {"replicates": 0}})
    assert DpoStageOptions.model_validate({"per_strategy": {"musicality": {"replicates": 3}}}).for_strategy("musicality").replicates == 3
