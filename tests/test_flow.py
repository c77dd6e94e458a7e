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
