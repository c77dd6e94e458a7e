"""Deployments: the `alignment-round` deployment runs `scheduled_round` on a process work pool.

Each run makes a new round folder named by the deployment and its iteration
(`rounds/alignment-round-0003`), records the run in the manifest (`scheduled`), and, when
chained, starts from the deployment's latest finished round. A retried run (Prefect's Retry,
e.g. after its worker was killed) resumes the folder it claimed. `register` creates the work pool
when it is missing and (re)registers the deployment with its schedule.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import deployment as current_deployment
from prefect.runtime import flow_run as current_flow_run

from flows import REPO_ROOT
from flows.chain import claim_round_dir, latest_finished
from flows.processes import process_start
from flows.round import alignment_round, without_heartbeats
from flows.stages import stages_until
from pipeline.config import config_from_dict
from pipeline.manifest import annotate_round, open_round, read_manifest
from pipeline.store import RoundStore


DEPLOYMENT = "alignment-round"
ENTRYPOINT = "flows/deployments.py:scheduled_round"
RETRAIN_ENTRYPOINT = "flows/retrain.py:retrain_on_rankings"


@flow(name="scheduled-round")
def scheduled_round(config: dict, parent: str | None = None, until: str | None = None) -> dict:
    """One deployment run: a new round folder, its parent (the `parent` parameter, or with
    `rounds.chain` the latest finished round of this deployment), every stage up to `until`."""
    deployment, run_id = current_deployment.name or DEPLOYMENT, str(current_flow_run.id)
    checked = config_from_dict(config, source=f"deployment {deployment}: config")
    round_dir, iteration = claim_round_dir(checked.rounds.directory, deployment, run_id)
    resumed = read_manifest(RoundStore(str(round_dir))).get("scheduled") if (round_dir / "manifest.json").is_file() else None
    if resumed:  # a retry of this run: its folder, its parent
        parent = resumed["parent"]
    elif parent is None and checked.rounds.chain:
        found = latest_finished(checked.rounds.directory, deployment, before=iteration)
        parent = str(found) if found else None
    if parent is not None:
        checked = config_from_dict({**config, "parent": parent}, source=f"deployment {deployment}: config")
    stages = stages_until(until)
    if parent is not None and "candidates" in stages and not (Path(parent) / "sweep/chosen/config.json").is_file():
        raise ValueError(f"parent {parent}: no chosen policy there (sweep/chosen/config.json) to sample from")
    get_run_logger().info("round %s (iteration %d%s), parent %s", round_dir, iteration, ", resumed" if resumed else "", parent or "none")
    store = RoundStore(str(round_dir))
    open_round(store, checked)
    pid = os.getpid()  # the run's process, so a worker started later can tell a lost run (`flows.lost_runs`)
    record = {"deployment": deployment, "iteration": iteration, "flow_run_id": run_id, "parent": parent, "finished": False,
              "host": socket.gethostname(), "pid": pid, "process_started": process_start(pid)}  # fmt: skip
    annotate_round(store, "scheduled", record)
    with without_heartbeats():
        records = alignment_round(str(round_dir), checked.resolved(), stages)
    annotate_round(store, "scheduled", {**record, "finished": True})
    return {"round": str(round_dir), "iteration": iteration, "parent": parent, "stages": {k: v["status"] for k, v in records.items()}}


def ensure_process_pool(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            return
        if pool.type != "process":
            raise ValueError(f"work pool {name!r} is of type {pool.type!r}; a process pool is needed")


def _deploy(entrypoint: str, name: str, pool: str, parameters: dict, **options) -> str:
    """Register a flow of this checkout (its folder is the source runs load it from) on a process pool."""
    from prefect import Flow

    ensure_process_pool(pool)
    source = Flow.from_source(source=str(REPO_ROOT), entrypoint=entrypoint)
    deployment_id = source.deploy(
        name=name, work_pool_name=pool, build=False, push=False, print_next_steps=False, parameters=parameters,
        concurrency_limit=1,  # one run of a deployment at a time: a chained round needs the one before it finished
        job_variables={"env": {"PYTHONPATH": str(REPO_ROOT)}}, **options,
    )  # fmt: skip
    return str(deployment_id)


def register(config: dict, pool: str, cron: str | None = None, interval: float | None = None, until: str | None = None,
             parent: str | None = None, name: str = DEPLOYMENT) -> str:  # fmt: skip
    """(Re)register the round deployment on the process pool `pool`, with its schedule; returns its id."""
    return _deploy(ENTRYPOINT, name, pool, {"config": config, "parent": parent, "until": until}, cron=cron, interval=interval)


def register_retraining(round_dir: str, campaign: str, pool: str, min_new_rankings: int, db_url: str | None = None,
                        until: str = "ablation") -> tuple[str, str]:  # fmt: skip
    """(Re)register `retrain-on-rankings` for one round and campaign, triggered by each accepted
    upload to the campaign; returns (deployment name, id)."""
    from prefect.events import DeploymentEventTrigger

    from reward_model.service.events import EVENT, campaign_resource

    name = f"{Path(round_dir).name}-{campaign}"
    trigger = DeploymentEventTrigger(name=f"rankings for {campaign}", expect={EVENT}, match={"prefect.resource.id": campaign_resource(campaign)})
    parameters = {"round_dir": round_dir, "campaign": campaign, "min_new_rankings": min_new_rankings, "db_url": db_url, "until": until}
    return name, _deploy(RETRAIN_ENTRYPOINT, name, pool, parameters, triggers=[trigger])
