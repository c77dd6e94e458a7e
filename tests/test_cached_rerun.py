"""A finished round reruns cheaply: the model is described from its files, a rerun without a
server imports neither Prefect nor torch, and a rerun against a server is one flow run."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from pipeline.models.tiny.song_model import CHECKPOINT_DIR, TinySongModel, checkpoint_parameters

REPO = Path(__file__).resolve().parents[1]


def test_describing_the_tiny_model_reads_its_files_and_loads_no_weights():
    probe = ("import sys, json; from pipeline.models.tiny.song_model import TinySongModel; "
             "print(json.dumps(TinySongModel().describe())); print('torch' in sys.modules)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    described, torch_loaded = done.stdout.strip().splitlines()
    assert torch_loaded == "False"
    model = TinySongModel()
    # the same description as the loaded model gives: shard keys of earlier rounds stay valid
    assert json.loads(described)["parameters"] == sum(p.numel() for p in model.model.parameters())
    assert json.loads(described) == model.describe() and checkpoint_parameters(CHECKPOINT_DIR) > 0


def rerun(config: Path, copy: Path, env: dict) -> set[str]:
    """Rerun the round from the CLI; the modules it imported."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "songpref", "round", "run", "--config", str(config),
                           "--out", str(copy), "--until", "pairs"], cwd=copy.parent,
                          env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


def test_a_cached_rerun_imports_neither_prefect_nor_torch_and_a_server_records_it(round_dir, tmp_path, prefect_api_url):
    from small_round import RAW

    source, _ = round_dir
    copy = tmp_path / "round"
    shutil.copytree(source, copy)
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(RAW), encoding="utf-8")
    upstream = ("lyrics", "conditions", "candidates", "scores", "reward_model", "pairs")  # what `--until pairs` reruns
    # the shared round may hold later stages too (other tests train on it): those are not rerun
    before = {n: r for n, r in json.loads((copy / "manifest.json").read_text())["stages"].items() if n.split("/")[0] in upstream}
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    imported = rerun(config, copy, env)
    assert {"pandas", "pyarrow"} <= imported  # the probe sees imports at all
    assert not {"prefect", "torch", "scipy"} & imported
    after = json.loads((copy / "manifest.json").read_text())["stages"]
    assert set(before) <= set(after) and all(after[n]["rerun"]["shards_skipped"] >= 1 for n in before)
    assert all(after[n]["seconds"] == before[n]["seconds"] for n in before)
    assert sum(after[n]["metrics"]["shards_built"] for n in before) == 0

    # against a running server: recorded there as one Completed run with its artifact, still without Prefect
    imported = rerun(config, copy, {**env, "PREFECT_API_URL": prefect_api_url})
    assert "pandas" in imported and not {"prefect", "torch", "scipy"} & imported
    recorded = json.loads((copy / "manifest.json").read_text())["flow_run"]
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(recorded["id"])
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    assert run.state.name == "Completed" and run.name == "rerun-round" and recorded["server"] == prefect_api_url
    assert [a.key for a in artifacts] == ["round-rerun"] and "| pairs |" in artifacts[0].data
