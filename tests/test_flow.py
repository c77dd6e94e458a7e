"""The Prefect flow in-process: subflows per stage, one task per shard, a summary artifact."""

import asyncio

from prefect.client.orchestration import get_client

from flows.round import run_round
from pipeline.config import RoundConfig


def test_round_flow_runs_stages_as_subflows_with_artifacts(tmp_path, prefect_api_url):
    events = []
    config = RoundConfig.model_validate({"seed": 3, "lyrics": {"count": 24, "shard_size": 8}})
    records = run_round(str(tmp_path), config, ["lyrics", "conditions"], reporter=lambda *e: events.append(e[:2]))
    assert records["lyrics"]["rows"] == 24 and records["conditions"]["status"] == "done"
    assert events.count(("shard", "lyrics")) == 3 and events[0] == ("start", "lyrics")

    async def runs_and_artifacts():
        async with get_client() as client:
            flow_runs = await client.read_flow_runs()
            artifacts = await client.read_artifacts()
        return {run.name for run in flow_runs}, {a.key for a in artifacts}

    names, keys = asyncio.run(runs_and_artifacts())
    assert {"lyrics", "conditions"} <= names
    assert {"lyrics-summary", "conditions-summary"} <= keys


def test_a_finished_round_is_rerun_in_process_and_an_unfinished_one_is_left_to_the_flow(tmp_path):
    from flows.stages import run_if_cached, run_stage_locally
    from pipeline.manifest import open_round, read_manifest
    from pipeline.store import RoundStore

    config = RoundConfig.model_validate({"seed": 4, "lyrics": {"count": 16, "shard_size": 8}})
    store = RoundStore(str(tmp_path))
    assert run_if_cached(["lyrics"], config, store) is None  # no round yet
    open_round(store, config)
    run_stage_locally("lyrics", config, store)
    before = read_manifest(store)
    assert run_if_cached(["lyrics", "conditions"], config, store) is None  # conditions not run
    assert read_manifest(store) == before  # and nothing was written
    events = []
    records = run_if_cached(["lyrics"], config, store, lambda *e: events.append(e[:2]))
    assert records["lyrics"]["rerun"]["shards_skipped"] == 2 and records["lyrics"]["seconds"] == before["stages"]["lyrics"]["seconds"]
    assert events == [("start", "lyrics"), ("shard", "lyrics"), ("shard", "lyrics"), ("finish", "lyrics")]
    next(tmp_path.glob("lyrics/shard-00001-*.parquet")).unlink()
    assert run_if_cached(["lyrics"], config, store) is None
    other = RoundConfig.model_validate({"seed": 5, "lyrics": {"count": 16, "shard_size": 8}})
    assert run_if_cached(["lyrics"], other, store) is None


def test_a_finished_round_rerun_against_a_server_is_one_flow_run_with_one_artifact(tmp_path, prefect_api_url):
    config = RoundConfig.model_validate({"seed": 6, "lyrics": {"count": 8, "shard_size": 4}})
    built = run_round(str(tmp_path), config, ["lyrics"])
    assert built["lyrics"]["metrics"]["shards_built"] == 2

    async def counts():
        async with get_client() as client:
            runs = await client.read_flow_runs()
            artifacts = await client.read_artifacts()
        return sum(r.name == "lyrics" for r in runs), len(runs), [a for a in artifacts if a.key == "round-rerun"]

    lyrics_runs, all_runs, _ = asyncio.run(counts())
    rerun = run_round(str(tmp_path), config, ["lyrics"])
    assert rerun["lyrics"]["rerun"]["shards_skipped"] == 2 and rerun["lyrics"]["seconds"] == built["lyrics"]["seconds"]
    lyrics_after, all_after, artifacts = asyncio.run(counts())
    assert (lyrics_after, all_after) == (lyrics_runs, all_runs + 1)  # the round's run only: no stage subflow
    assert any("| lyrics | 8 |" in a.data for a in artifacts)
