"""`reward_model.rankings` for real campaigns: a campaign URL of a running annotation service
(a real uvicorn subprocess) and its export file train the reward model of a non-tiny round; the
simulated crowd is refused for it with the reason."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from annotate_helpers import ADMIN_TOKEN, ServerProcess, admin_headers, build_round
from flows.stages import run_stage_locally
from pipeline.config import RoundConfig
from pipeline.manifest import open_round
from pipeline.store import RoundStore
from reward_model.rankings_source import RankingsSourceError, parse_source, read_rankings
from reward_model.stage import CAMPAIGN_SNAPSHOT

STANDIN = Path(__file__).resolve().parent / "levo_standin"
PROMPTS, PER_PROMPT = 2, 3


def with_conditions(root: Path) -> Path:
    """The annotation helpers' round, with a conditions stage the reward model's items read."""
    store = RoundStore(str(root))
    rows = [{"condition_id": f"prompt{p}", "lyric_id": f"l{p}", "lyric": f"[verse] Song number {p}.", "language": "en",
             "description": "female, pop, happy, piano, the bpm is 100."} for p in range(PROMPTS)]  # fmt: skip
    digest = store.write_table("conditions/shard-00000.parquet", pa.Table.from_pylist(rows))
    manifest = store.read_json("manifest.json")
    manifest["stages"]["conditions"] = {"status": "done", "rows": PROMPTS, "outputs": {"shard-00000.parquet": digest}}
    store.write_json("manifest.json", manifest)
    return root


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """A round, a real service on it with campaign `c1` ranked by three annotators (each ranks the
    songs of a task by candidate index: c0 best), and the campaign's URL."""
    root = with_conditions(build_round(tmp_path_factory.mktemp("round"), prompts=PROMPTS, per_prompt=PER_PROMPT))
    server = ServerProcess(root, f"sqlite:///{root / 'annotations.db'}", root / "server.log")
    try:
        spec = {"name": "c1", "k": 3, "overlap": 3, "seed": 7}
        assert httpx.post(f"{server.url}/admin/campaigns", json=spec, headers=admin_headers()).status_code == 201
        people = httpx.post(f"{server.url}/admin/campaigns/c1/annotators", json={"names": ["ann", "bob", "cat"]},
                            headers=admin_headers()).json()["annotators"]  # fmt: skip
        submitted = 0
        for person in people:
            auth = {"Authorization": f"Bearer {person['token']}"}
            while (task := httpx.get(f"{server.url}/api/next", headers=auth).json()["task"]) is not None:
                ids = sorted(c["candidate_id"] for c in task["candidates"])
                answer = {"task_id": task["task_id"], "candidate_ids": ids, "ranks": list(range(1, len(ids) + 1))}
                assert httpx.post(f"{server.url}/api/submit", json=answer, headers=auth).status_code == 201
                submitted += 1
        yield root, f"{server.url}/admin/campaigns/c1", submitted
    finally:
        server.stop()


def levo_config(rankings: str, tmp_path: Path) -> RoundConfig:
    (tmp_path / "ckpt").mkdir(exist_ok=True)
    options = {"repo_dir": str(STANDIN), "checkpoint_dir": str(tmp_path / "ckpt"), "python": sys.executable}
    return RoundConfig.model_validate({"model": {"backend": "levo", "options": options},
                                       "reward_model": {"rankings": rankings, "training": {"num_epochs": 20}}})  # fmt: skip


def test_a_campaign_url_trains_the_reward_model_of_a_levo_round(campaign, tmp_path, monkeypatch):
    root, url, submitted = campaign
    monkeypatch.setenv("SONGPREF_ADMIN_TOKEN", ADMIN_TOKEN)
    config, store = levo_config(url, tmp_path), RoundStore(str(root))
    open_round(store, config)
    record = run_stage_locally("reward_model", config, store)
    assert record["status"] == "done", record
    metrics = record["metrics"]
    assert metrics["simulated"] is False and metrics["rankings"] == submitted >= PROMPTS
    assert metrics["pairs_train"] + metrics["pairs_test"] > 0
    snapshot = read_rankings(parse_source(str(root / CAMPAIGN_SNAPSHOT)))
    assert len(snapshot) == submitted and set(snapshot["annotator_id"]) == {"ann", "bob", "cat"}
    assert all(ids == sorted(ids) for ids in snapshot["candidate_ids"])  # c0 ranked first, as submitted


def test_the_export_file_gives_the_same_rankings_as_the_url(campaign, tmp_path, monkeypatch):
    root, url, submitted = campaign
    monkeypatch.setenv("SONGPREF_ADMIN_TOKEN", ADMIN_TOKEN)
    from_url = read_rankings(parse_source(url))
    for fmt in ("parquet", "csv"):
        export = tmp_path / f"c1.{fmt}"
        export.write_bytes(httpx.get(f"{url}/export", params={"format": fmt}, headers=admin_headers()).content)
        from_file = read_rankings(parse_source(str(export)))
        columns = ["annotator_id", "task_id", "prompt_id", "candidate_ids", "ranks", "tied"]
        assert from_file[columns].to_dict("records") == from_url[columns].to_dict("records"), fmt
    assert len(from_url) == submitted


def test_campaign_url_problems_are_named(campaign, monkeypatch):
    _, url, _ = campaign
    monkeypatch.delenv("SONGPREF_ADMIN_TOKEN", raising=False)
    with pytest.raises(RankingsSourceError, match=r"\$SONGPREF_ADMIN_TOKEN, which is not set"):
        read_rankings(parse_source(url))
    monkeypatch.setenv("SONGPREF_ADMIN_TOKEN", "not-the-admin-token-at-all")
    with pytest.raises(RankingsSourceError, match="answered 403"):
        read_rankings(parse_source(url))
    monkeypatch.setenv("SONGPREF_ADMIN_TOKEN", ADMIN_TOKEN)
    with pytest.raises(RankingsSourceError, match="answered 404"):
        read_rankings(parse_source(url.replace("/c1", "/no-such-campaign")))
    with pytest.raises(RankingsSourceError, match="not a campaign URL"):
        parse_source(url.replace("/admin/campaigns/c1", "/somewhere"))


def test_the_simulated_crowd_is_refused_for_a_levo_round_with_the_reason(campaign, tmp_path):
    root, _, _ = campaign
    config = levo_config("simulated", tmp_path)
    assert levo_config("simulated", tmp_path).reward_model.rankings == RoundConfig().reward_model.rankings  # the default
    from reward_model.stage import RewardModelStage

    with pytest.raises(ValueError, match="model.backend 'levo' needs the rankings of a real campaign"):
        RewardModelStage(config, RoundStore(str(root))).plan()
