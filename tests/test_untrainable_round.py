"""A round whose model has no trainable-policy plugin (LeVo, through the stand-in generate.py of
tests/levo_standin) runs through reward_model and stops before pairs: one line naming the
backend, exit code 0, and the manifest's `stopped` saying why."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hfcodec_fixtures import write_rankings
from pipeline.models.registry import NotTrainable, is_trainable, trainable_policy

REPO = Path(__file__).resolve().parents[1]
STANDIN = REPO / "tests" / "levo_standin"


def test_levo_is_not_trainable_and_says_so_by_name():
    assert is_trainable("tiny") and not is_trainable("levo")
    with pytest.raises(NotTrainable, match="model.backend 'levo' is not trainable here"):
        trainable_policy("levo", {"repo_dir": str(STANDIN), "checkpoint_dir": str(STANDIN)})


def test_a_levo_round_stops_before_pairs_with_a_one_line_reason(tmp_path):
    """The stages run in this process first (runnable_parts cuts the round where the flow does);
    then `songpref round run` finds them finished, reruns them in-process (no Prefect server)
    and stops with the reason."""
    from flows.plan import plan_round
    from flows.stages import run_stage_locally, runnable_parts, stages_until
    from pipeline.config import load_config
    from pipeline.manifest import open_round
    from pipeline.store import RoundStore

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.yaml").write_text("max_dur: 150\n")
    rankings, root = tmp_path / "rankings.parquet", tmp_path / "round"
    config = {
        "seed": 2,
        "lyrics": {"count": 2, "generator": {"backend": "template", "min_sentences": 1, "max_sentences": 1, "max_sections": 2}},
        "model": {"backend": "levo", "options": {"repo_dir": str(STANDIN), "checkpoint_dir": str(ckpt), "python": sys.executable,
                  "command": ["{python}", "generate.py", "{checkpoint_dir}", "{input_jsonl}", "{save_dir}", "--separate"],
                  "timeout_s": 60}},
        "sampling": {"num_candidates": 2},
        "scoring": {"similarity": {"backend": "attributes", "min_seconds": 1.0}},  # the stand-in's songs last 2 s
        "reward_model": {"rankings": str(rankings)},
    }  # fmt: skip
    path = tmp_path / "levo.yaml"
    path.write_text(yaml.safe_dump(config))
    cfg, store = load_config(path), RoundStore(str(root))
    parts, stop = runnable_parts(stages_until(None), cfg)
    assert parts[-1] == "scores/reward" and stop["before"] == "pairs"
    planned = {p.part: p for p in plan_round(cfg)}  # `songpref round plan` says so before anything runs
    assert planned["scores/reward"].shards == 1 and planned["sweep"].shards == 0
    assert "model.backend 'levo' is not trainable" in planned["pairs"].builds
    open_round(store, cfg)
    for part in parts:
        if part == "reward_model":
            write_rankings(root, rankings, annotators=2)
        assert run_stage_locally(part, cfg, store)["status"] == "done", part

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    songpref = [sys.executable, "-m", "songpref", "round", "run", "--config", str(path), "--out", str(root)]
    run = subprocess.run(songpref, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    reason = [line for line in run.stderr.splitlines() if "stopped before" in line]
    assert reason == ["stopped before pairs: model.backend 'levo' is not trainable here: it has no trainable-policy plugin "
                      "(TrainablePolicy, see README), so pairs, dpo, merge and sweep cannot run on its songs"], run.stderr  # fmt: skip
    assert "Traceback" not in run.stderr

    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["stopped"]["before"] == "pairs" and manifest["stopped"]["backend"] == "levo"
    assert manifest["stopped"]["reason"] == reason[0]
    stages = manifest["stages"]
    assert all(stages[p]["status"] == "done" for p in ("candidates", "scores/per", "reward_model", "scores/reward"))
    assert not any(p.split("/")[0] in ("pairs", "dpo", "merge", "sweep", "ablation") for p in stages)
    assert stages["candidates"]["metrics"]["candidates"] == 4 and "rerun" in stages["reward_model"]
