"""A fourth preference registered from this module alone (an entry point on sys.path, as a plugin
package would declare it) runs through config, pairs, DPO, merge, sweep and the CLI; no other
file knows about it.

"tempo": prefer the song whose measured tempo agrees better with its description's, read from
the attributes scorer's per-attribute agreement in scores/similarity.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import Field

from pipeline.preferences.base import Preference, RuleOptions

pytestmark = pytest.mark.timeout(900)
REPO = Path(__file__).resolve().parents[1]


class TempoOptions(RuleOptions):
    min_gap: float = Field(0.0, ge=0, description="Chosen minus rejected tempo agreement must exceed this.")


def _tempo_agreement(details: str) -> float:
    return json.loads(details).get("agreement", {}).get("tempo", np.nan)


TEMPO = Preference(
    name="tempo", table="similarity", column="details", score="tempo_hit", extract=_tempo_agreement,
    higher_is_better=True, options_class=TempoOptions, rule=lambda cands, pairs, o: pairs.gap > o.min_gap,
    describe_rule=lambda o: f"tempo agreement gap > {o.min_gap}", score_label="tempo agreement",
    metric_label="tempo hit ↑", card="Tempo: the chosen song's tempo matches the description's better.",
    streams=("header", "mixed", "accompaniment"), order=40,
)  # fmt: skip


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """A distribution's metadata that registers TEMPO, on sys.path (and PYTHONPATH for subprocesses)."""
    dist = tmp_path / "site" / "songpref_tempo-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: songpref-tempo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[songpref.preferences]\ntempo = {__name__}:TEMPO\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "site"), str(Path(__file__).parent)]))
    return tmp_path / "site"


def test_a_fourth_preference_runs_pairs_dpo_merge_and_sweep(round_dir, plugin_path, tmp_path):
    from flows.stages import run_stage_locally, stage_parts
    from pipeline.config import config_schema
    from pipeline.preferences import strategy_names
    from pipeline.store import RoundStore
    from small_round import config

    assert strategy_names() == ["lyrics", "prompt", "musicality", "tempo", "joint"]
    assert "dpo/tempo" in stage_parts("dpo")
    assert "tempo" in config_schema()["$defs"]["PairOptions"]["properties"]

    root = tmp_path / "round"
    shutil.copytree(round_dir[0], root)
    store = RoundStore(str(root))
    cfg = config({"dpo": {"defaults": {"max_steps": 1, "batch_size": 2, "save_steps": 1}, "kl_samples": 0},
                  "sweep": {"step": 1.0, "prompts": 1, "seeds": 1}})  # fmt: skip
    assert cfg.pairs.tempo.min_gap == 0.0 and cfg.sweep.named["dni"]["tempo"] == 0.25
    for part in ("pairs", *stage_parts("dpo"), "merge", "sweep"):
        record = run_stage_locally(part, cfg, store)
        assert record["status"] == "done", (part, record.get("errors"))

    stages = json.loads((root / "manifest.json").read_text())["stages"]
    tempo = stages["pairs"]["metrics"]["strategies"]["tempo"]
    assert tempo["status"] == "written" and tempo["rule"].startswith("tempo agreement gap > 0.0")
    assert "tempo" in stages["pairs"]["metrics"]["strategies"]["joint"]["after_each_rule"]
    pairs = pd.read_parquet(root / "pairs/tempo/data/train-00000-of-00001.parquet")
    assert (pairs["chosen_tempo_hit"] > pairs["rejected_tempo_hit"]).all() and (pairs["strategy"] == "tempo").all()
    assert stages["dpo/tempo"]["metrics"]["status"] == "trained"
    assert (root / "dpo/tempo/model/model.safetensors").is_file()

    merged = json.loads((root / "merge/dni/merge_manifest.json").read_text())
    assert merged["weights"] == [0.25] * 4
    results = pd.read_parquet(root / "sweep/results.parquet")
    assert {"w_tempo", "tempo_hit"} <= set(results.columns)
    assert "lyrics0.00-prompt0.00-musicality0.00-tempo1.00" in set(results["point"])
    table = stages["sweep"]["metrics"]["ablation"]
    assert "tempo hit ↑" in table.splitlines()[0] and "| tempo only |" in table

    # the CLI sees the plugin through the same entry point
    plan = subprocess.run([sys.executable, "-m", "songpref", "round", "plan", "--config", str(REPO / "configs/tiny.yaml"),
                           "--set", "pairs.tempo.min_gap=0.1"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert "dpo/tempo" in plan.stderr and "tempo" in plan.stderr
