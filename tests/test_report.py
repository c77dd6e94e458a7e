"""The round report's DPO section, from manifest records alone."""

from pipeline.report import dpo_section


def test_the_dpo_section_lists_trained_strategies_with_their_held_out_likelihood_changes():
    stages = {
        "dpo/lyrics": {"status": "done", "metrics": {
            "status": "trained", "pairs": {"train": 43, "test": 7}, "eval_rewards/accuracies": 0.5714,
            "held_out_chosen_logp_change": -12.53, "held_out_rejected_logp_change": -18.0, "kl": 3.21}},
        "dpo/prompt": {"status": "done", "metrics": {"status": "trained", "pairs": {"train": 20}, "kl": None}},
        "dpo/joint": {"status": "done", "metrics": {"status": "skipped", "reason": "pairs/joint is empty"}},
        "merge": {"status": "done", "metrics": {"status": "trained"}},
    }
    lines = dpo_section(stages)
    assert lines[1] == "## DPO (held-out pairs)"
    assert "| lyrics | 43 / 7 | 0.57 | -12.5 | -18.0 | 3.2 |" in lines
    assert "| prompt | 20 / — | — | — | — | — |" in lines  # no held-out split: nothing to show, nothing made up
    assert not any(line.startswith(("| joint", "| merge")) for line in lines)


def test_a_round_without_trained_dpo_has_no_dpo_section():
    assert dpo_section({"dpo/lyrics": {"status": "failed", "metrics": {}}, "pairs": {"status": "done"}}) == []
