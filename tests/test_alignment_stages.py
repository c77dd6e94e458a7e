"""The dpo, merge and sweep stages on the session's small round: models, metrics, resuming after a
kill, DNI merges with manifests, the sweep's table, front, plots and report."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from pipeline.manifest import read_manifest
from flows.stages import make_stage, run_stage_locally
from pipeline.store import RoundStore
from small_round import config

pytestmark = pytest.mark.timeout(900)
DPO = {"defaults": {"max_steps": 2, "batch_size": 2, "save_steps": 1, "learning_rate": 1e-4}, "kl_samples": 1}
SWEEP = {"step": 0.5, "prompts": 1, "seeds": 1}
CONFIG = config({"dpo": DPO, "sweep": SWEEP})


@pytest.fixture(scope="module")
def trained(round_dir):
    root, store = round_dir
    records = {s: run_stage_locally(f"dpo/{s}", CONFIG, store) for s in ("lyrics", "prompt", "musicality", "joint")}
    return root, store, records


def test_each_strategy_trains_a_model_with_metrics(trained):
    root, _, records = trained
    for strategy, record in records.items():
        assert record["status"] == "done", record.get("errors")
        assert record["metrics"]["status"] == "trained" and record["rows"] == 2  # one log row per step
        metrics = json.loads((root / "dpo" / strategy / "metrics.json").read_text())
        assert metrics["pairs"]["train"] > 0 and metrics["kl"]["samples"] == 1
        assert (root / "dpo" / strategy / "model" / "model.safetensors").is_file()
        assert (root / "dpo" / strategy / "model" / "tokenizer_config.json").is_file()
        assert record["metrics"]["pairs"] == metrics["pairs"]
        if "test" in metrics["pairs"]:
            assert 0 <= metrics["eval"]["eval_rewards/accuracies"] <= 1
            # TRL's eval rewards are beta (0.1 by default) times the log-likelihood change from the reference
            for side in ("chosen", "rejected"):
                change = record["metrics"][f"held_out_{side}_logp_change"]
                assert change == pytest.approx(metrics["eval"][f"eval_rewards/{side}"] / 0.1) and change != 0
    report = (root / "report.md").read_text()
    assert "## DPO (held-out pairs)" in report
    for strategy, record in records.items():
        pairs = record["metrics"]["pairs"]
        assert f"| {strategy} | {pairs['train']} / {pairs.get('test', '—')} | " in report
    again = run_stage_locally("dpo/lyrics", CONFIG, trained[1])
    assert again["metrics"]["shards_built"] == 0 and again["metrics"]["status"] == "trained"


def test_replicates_average_their_runs_and_the_first_is_the_plain_run(trained, tmp_path):
    """Two runs on the same pairs with their own seeds; the strategy's model is their weights' mean."""
    root = tmp_path / "round"  # a copy: the module's other tests read the round's own dpo/musicality
    shutil.copytree(trained[0], root, symlinks=True)
    two = config({"dpo": {**DPO, "per_strategy": {"musicality": {"replicates": 2}}}, "sweep": SWEEP})
    record = run_stage_locally("dpo/musicality", two, RoundStore(str(root)))
    assert record["status"] == "done", record.get("errors")
    assert record["rows"] == 4  # two log rows (steps) per replicate
    metrics = json.loads((root / "dpo/musicality/metrics.json").read_text())
    runs = metrics["replicates"]
    assert len(runs) == 2 and runs[0]["seed"] != runs[1]["seed"]
    if "test" in metrics["pairs"]:
        accuracies = [run["eval"]["eval_rewards/accuracies"] for run in runs]
        assert metrics["eval"]["eval_rewards/accuracies"] == pytest.approx(sum(accuracies) / 2)
    weights = {name: load_file(root / "dpo/musicality" / name / "model.safetensors")
               for name in ("replicates/0", "replicates/1", "model")}  # fmt: skip
    plain = load_file(trained[0] / "dpo/musicality/model/model.safetensors")  # replicates: 1, the same seed
    assert all(torch.equal(plain[k], weights["replicates/0"][k]) for k in plain)
    assert any(not torch.equal(weights["replicates/0"][k], weights["replicates/1"][k]) for k in plain)
    for key, value in weights["model"].items():
        mean = (weights["replicates/0"][key].float() + weights["replicates/1"][key].float()) / 2
        torch.testing.assert_close(value.float(), mean, atol=1e-8, rtol=1e-6)  # the runs differ by ~1e-4: a tight check
    # Back to one run: its shard is on disk from before, but the model is the replicates' mean, so it is rebuilt.
    one = run_stage_locally("dpo/musicality", CONFIG, RoundStore(str(root)))
    assert one["status"] == "done" and one["metrics"]["shards_built"] == 1
    assert not (root / "dpo/musicality/replicates").exists()
    again = load_file(root / "dpo/musicality/model/model.safetensors")
    assert all(torch.equal(plain[k], again[k]) for k in plain)


def test_a_killed_run_resumes_from_its_last_checkpoint(round_dir, tmp_path):
    """SIGKILL mid-training, as an operator would; the rerun picks up at the newest checkpoint."""
    root, store = round_dir
    slow = config({"dpo": {**DPO, "defaults": {**DPO["defaults"], "max_steps": 6}}, "sweep": SWEEP})
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from small_round import config\nfrom flows.stages import make_stage, run_stage_locally\n"
              "from pipeline.store import RoundStore\n"
              f"run_stage_locally('dpo/prompt', config({json.dumps({'dpo': {**DPO, 'defaults': {**DPO['defaults'], 'max_steps': 6}}, 'sweep': SWEEP})}), RoundStore({str(root)!r}))\n")  # fmt: skip
    run_dir = root / "dpo/prompt" / f"run-{make_stage('dpo/prompt', slow, store).plan()[0].key[:16]}"
    child = subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 600
        while time.time() < deadline and not (run_dir / "checkpoint-2/trainer_state.json").exists():
            assert child.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    record = run_stage_locally("dpo/prompt", slow, store)
    assert record["status"] == "done", record.get("errors")
    metrics = json.loads((root / "dpo/prompt/metrics.json").read_text())
    resumed = int(metrics["resumed_from"].split("-")[1])
    assert resumed >= 2 and [r["step"] for r in metrics["log"] if "loss" in r][-1] == 6
    run_stage_locally("dpo/prompt", CONFIG, store)  # back to the module's settings


def test_merge_and_sweep_write_models_table_front_and_plots(trained):
    root, store, _ = trained
    merged = run_stage_locally("merge", CONFIG, store)
    assert merged["status"] == "done", merged.get("errors")
    manifest = json.loads((root / "merge/dni/merge_manifest.json").read_text())
    assert [round(w, 6) for w in manifest["weights"]] == [round(1 / 3, 6)] * 3
    record = run_stage_locally("sweep", CONFIG, store)
    assert record["status"] == "done", record.get("errors")
    results = pd.read_parquet(root / "sweep/results.parquet")
    assert len(results) == 6 + 3 and {"base", "dni", "joint"} <= set(results["point"])  # grid + named + baselines
    assert results["pareto"].any() and record["metrics"]["chosen"] in set(results["point"])
    assert record["metrics"]["hypervolume"] >= 0
    by_point = results.set_index("point")  # dni is kept unless a point beats it clear of zero
    assert by_point.loc["dni", "utility_vs_kept"] == 0
    assert record["metrics"]["chosen"] == "dni" or by_point.loc[record["metrics"]["chosen"], "utility_vs_kept_low"] > 0
    for name in ("pareto.png", "simplex.png", "report.md"):
        assert (root / "sweep" / name).stat().st_size > 0
    table = record["metrics"]["ablation"]
    for row in ("w/o DPO", "lyrics only", "prompt only", "musicality only", "joint", "DNI"):
        assert f"| {row} |" in table
    assert "## Ablation" in (root / "report.md").read_text()
    again = run_stage_locally("sweep", CONFIG, store)
    assert again["metrics"]["shards_built"] == 0 and again["metrics"]["chosen"] == record["metrics"]["chosen"]
    assert read_manifest(store)["stages"]["sweep"]["status"] == "done"
    chosen = json.loads((root / "sweep/chosen/chosen.json").read_text())  # saved: the next round can start from it
    assert chosen["point"] == record["metrics"]["chosen"] and (root / "sweep/chosen/model.safetensors").is_file()


def test_oracle_ablation_asks_every_model_for_the_same_fresh_songs(trained):
    from alignment.sweep.oracle import oracle_ablation

    root, store, _ = trained
    table, markdown = oracle_ablation(CONFIG, store, prompts=3, seeds=2, edge_step=0.5)
    songs = pd.read_parquet(root / "ablation/oracle.parquet")
    assert {"base", "lyrics", "prompt", "musicality", "joint"} <= set(songs["model"])
    per_model = songs.groupby("model")[["prompt_id", "seed"]].apply(lambda f: sorted(map(tuple, f.to_numpy())))
    assert all(keys == per_model["base"] for keys in per_model) and len(per_model["base"]) == 6
    fresh = pd.concat([pd.read_parquet(p) for p in (root / "ablation/held-out/conditions").glob("shard-*.parquet")])
    ours = pd.concat([pd.read_parquet(p) for p in (root / "conditions").glob("shard-*.parquet")])
    assert songs["prompt_id"].str.startswith("held-out-").all() and set(fresh["lyric"]).isdisjoint(ours["lyric"])
    base = table[table["model"] == "base"]
    assert (base["diff"] == 0).all() and songs["symbolic_wer"].between(0, 100).all() and songs["utility"].between(0, 1).all()
    assert "**" in markdown and (root / "ablation/oracle.md").is_file()
    # the simplex edges on the same songs: 3 edges x 3 points = 6 distinct models (vertices shared)
    edges = pd.read_parquet(root / "ablation/controllability.parquet")
    assert edges["point"].nunique() == 6 and len(edges) == 6 * 6
    assert edges.groupby("point")[["prompt_id", "seed"]].apply(lambda f: sorted(map(tuple, f.to_numpy()))).map(
        lambda keys: keys == per_model["base"]).all()  # fmt: skip
    vertex = edges[edges["point"] == "lyrics1.00-prompt0.00-musicality0.00"].drop(columns=["point", "w_lyrics", "w_prompt", "w_musicality"])
    assert vertex.reset_index(drop=True).equals(songs[songs["model"] == "lyrics"].drop(columns="model").reset_index(drop=True))
    assert "Spearman" in markdown and (root / "ablation/controllability.png").stat().st_size > 10_000


def test_the_ablation_stage_reports_oracle_and_audio_columns_in_the_round_report(trained):
    root, store, _ = trained
    ablation = config({"dpo": DPO, "sweep": {**SWEEP, "ablation": {"prompts": 2, "seeds": 2, "songs": 2,
                                                                    "header_odds": True}}})  # fmt: skip
    record = run_stage_locally("ablation", ablation, store)
    assert record["status"] == "done", record.get("errors")
    assert record["metrics"]["songs_per_model"] == 4 and record["metrics"]["models"] >= 5
    audio = pd.read_parquet(root / "ablation/audio.parquet")
    oracle = pd.read_parquet(root / "ablation/oracle.parquet")
    for model, songs in audio.groupby("model"):  # the audio columns score the first of the oracle's songs
        first = oracle[oracle["model"] == model].head(len(songs))
        assert list(zip(songs["prompt_id"], songs["seed"])) == list(zip(first["prompt_id"], first["seed"]))
    odds = pd.read_parquet(root / "ablation/header_odds.parquet")  # per model, one row per oracle prompt
    assert all(set(frame["prompt_id"]) == set(oracle["prompt_id"]) and len(frame) == 2 for _, frame in odds.groupby("model"))
    assert odds[["tempo_hit", "mode_hit"]].stack().between(0, 1).all() and (odds["unexplored"] < 0.01).all()
    assert run_stage_locally("ablation", ablation, store)["metrics"]["shards_built"] == 0
    report = (root / "report.md").read_text()
    assert "## Oracle metrics" in report and "## The round's own scorers on the same songs" in report
    assert "## Tempo and mode hit probability (exact" in report
    assert report.count("## Oracle metrics") == 1
    off = config({"dpo": DPO, "sweep": {**SWEEP, "ablation": {"prompts": 0}}})
    skipped = run_stage_locally("ablation", off, store)
    assert skipped["metrics"]["status"] == "skipped" and "prompts is 0" in skipped["metrics"]["reason"]


LATER = ("dpo/lyrics", "dpo/prompt", "dpo/musicality", "dpo/joint", "merge", "sweep", "ablation")


def _plans(cfg, store) -> dict[str, list[str]]:
    return {part: [spec.filename for spec in make_stage(part, cfg, store).plan()] for part in LATER}


def test_later_stage_plans_load_no_model_library_and_follow_their_inputs(trained, tmp_path):
    """Planning dpo, merge, sweep and ablation (what a cached rerun of the whole round does) imports no
    torch, transformers, TRL or Prefect and gives the same shards as in a process that has them; a
    changed option or a retrained DPO model still gives new shard names, so the rerun rebuilds."""
    import shutil

    from pipeline.store import RoundStore

    root, _, _ = trained
    copy = tmp_path / "round"  # what the plans read: the manifest, conditions, pairs, the saved chosen point
    for folder in ("conditions", "pairs"):
        shutil.copytree(root / folder, copy / folder)
    shutil.copy(root / "manifest.json", copy / "manifest.json")
    if (root / "sweep/chosen/chosen.json").is_file():
        (copy / "sweep/chosen").mkdir(parents=True)
        shutil.copy(root / "sweep/chosen/chosen.json", copy / "sweep/chosen/chosen.json")
    script = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from small_round import config\nfrom flows.stages import make_stage\nfrom pipeline.store import RoundStore\n"
              f"cfg, store = config({json.dumps({'dpo': DPO, 'sweep': SWEEP})}), RoundStore({str(copy)!r})\n"
              f"plans = {{part: [s.filename for s in make_stage(part, cfg, store).plan()] for part in {LATER!r}}}\n"
              "heavy = sorted({'torch', 'transformers', 'trl', 'peft', 'datasets', 'prefect'} & set(sys.modules))\n"
              "print(json.dumps({'plans': plans, 'heavy': heavy}))\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    store = RoundStore(str(copy))
    assert found["heavy"] == [] and found["plans"] == _plans(CONFIG, store) and all(found["plans"].values())

    longer = _plans(config({"dpo": {**DPO, "defaults": {**DPO["defaults"], "max_steps": 3}}, "sweep": SWEEP}), store)
    changed = {part for part in LATER if longer[part] != found["plans"][part]}
    assert changed == {"dpo/lyrics", "dpo/prompt", "dpo/musicality", "dpo/joint"}  # their run options
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["stages"]["dpo/lyrics"]["outputs"] = {"shard-00000-retrained.parquet": "0" * 64}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    retrained = _plans(CONFIG, store)
    assert {part for part in LATER if retrained[part] != found["plans"][part]} == {"merge", "sweep", "ablation"}


def test_the_ablation_command_adds_the_exact_header_odds_on_request(trained):
    from typer.testing import CliRunner

    from songpref.cli import app

    root, _, _ = trained
    result = CliRunner().invoke(app, ["ablation", str(root), "--prompts", "2", "--seeds", "1", "--header-odds"])
    assert result.exit_code == 0, result.output
    assert "Tempo and mode hit probability (exact" in result.output and (root / "ablation/header_odds.parquet").is_file()
    too_many = CliRunner().invoke(app, ["ablation", str(root), "--prompts", "2", "--seeds", "1", "--songs", "3"])
    assert too_many.exit_code != 0 and "--songs 3" in too_many.output


def test_the_sweep_command_with_a_changed_sweep_option_reuses_every_earlier_shard(trained, tmp_path):
    from typer.testing import CliRunner

    from songpref.cli import app

    root, _, _ = trained
    copy = tmp_path / "round"
    shutil.copytree(root, copy)
    # The module's DPO settings, so the first run trains nothing; a sweep of the vertices, one song a point.
    as_trained = ["--set", f"dpo={json.dumps(DPO)}", "--set", f"sweep={json.dumps({**SWEEP, 'step': 1.0})}"]
    first = CliRunner().invoke(app, ["sweep", str(copy), *as_trained])  # every stage up to the sweep, under one config
    assert first.exit_code == 0, first.output
    built = {name: r["metrics"].get("shards_built", 0) for name, r in read_manifest(RoundStore(str(copy)))["stages"].items()}
    assert all(built[f"dpo/{s}"] == 0 for s in ("lyrics", "prompt", "musicality", "joint")), built
    prompts = set(pd.read_parquet(copy / "sweep/results.parquet")["songs"] // SWEEP["seeds"])
    seeds = SWEEP["seeds"] + 1
    result = CliRunner().invoke(app, ["sweep", str(copy), *as_trained, "--set", f"sweep.seeds={seeds}"])  # turns them stale
    assert result.exit_code == 0, result.output
    stages = read_manifest(RoundStore(str(copy)))["stages"]
    earlier = {name: (r["status"], r["metrics"].get("shards_built", 0)) for name, r in stages.items() if name not in ("sweep", "ablation")}
    assert set(earlier.values()) == {("done", 0)}, earlier
    songs = pd.read_parquet(copy / "sweep/results.parquet")["songs"]
    assert stages["sweep"]["status"] == "done" and set(songs) == {p * seeds for p in prompts}
