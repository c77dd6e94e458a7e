"""`songpref deploy` and `songpref worker start`: scheduled rounds on a Prefect server's process pool."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.stages.names import STAGES
from songpref.common import ConfigOpt, SetOpt, console, fail, load_config_file

worker_app = typer.Typer(help="A Prefect worker that runs deployed rounds.", no_args_is_help=True)
PoolOpt = Annotated[str, typer.Option("--pool", "-p", help="The process work pool (created by deploy if missing).")]


def _server_url() -> str:
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        fail("PREFECT_API_URL is not set: deployments live on a running server (`songpref server start` prints the export line)")
    return url


def deploy_command(
    config: ConfigOpt,
    pool: PoolOpt = "songpref",
    cron: Annotated[Optional[str], typer.Option(help='Cron schedule, e.g. "0 3 * * *" (UTC).')] = None,
    interval: Annotated[Optional[float], typer.Option(help="Or: run every this many seconds.")] = None,
    until: Annotated[Optional[str], typer.Option(help=f"Last stage of each run, one of: {', '.join(STAGES)}.")] = None,
    parent: Annotated[Optional[str], typer.Option(help="Parent round of the first run (later runs chain with rounds.chain).")] = None,
    name: Annotated[str, typer.Option(help="Deployment name; rounds are <rounds.directory>/<name>-<iteration>.")] = "alignment-round",
    set_: SetOpt = None,
) -> None:
    """Register the `alignment-round` deployment on a process work pool, with an optional schedule.
    Each run writes a new round folder; with `rounds.chain: true` each starts from the one before."""
    if cron and interval:
        fail("--cron and --interval: give one schedule, not both")
    if until is not None and until not in STAGES:
        fail(f"--until {until!r}: not a stage; stages are: {', '.join(STAGES)}")
    api = _server_url()
    cfg = load_config_file(config, set_)
    raw = cfg.resolved()
    raw["rounds"]["directory"] = str(Path(cfg.rounds.directory).resolve())  # runs start in the checkout's folder
    if parent:
        raw["parent"] = str(Path(parent).resolve())
    from flows.deployments import register

    try:
        deployment_id = register(raw, pool, cron=cron, interval=interval, until=until, name=name)
    except Exception as exc:  # the server's refusal (bad cron, pool of another type) as one line
        fail(f"deploy failed: {exc}")
    schedule = f"cron {cron!r}" if cron else f"every {interval:g} s" if interval else "no schedule (run it with `prefect deployment run`)"
    console.print(f"deployment scheduled-round/{name} ({deployment_id}) on pool {pool!r}: {schedule}; server {api}", highlight=False)
    console.print(f"rounds go to {raw['rounds']['directory']}/{name}-NNNN; chain: {cfg.rounds.chain}", highlight=False)
    console.print(f"start a worker: songpref worker start --pool {pool}", highlight=False)


@worker_app.command("start")
def worker_start(
    pool: PoolOpt = "songpref",
    limit: Annotated[Optional[int], typer.Option(help="Most flow runs at once.")] = None,
    run_once: Annotated[bool, typer.Option("--run-once", help="Take the runs due now, then exit.")] = False,
) -> None:
    """Run a Prefect process worker on the pool (in the foreground until stopped; this process becomes the worker).
    First, the pool's round runs left Running by a killed worker on this host are marked Crashed (retry one to resume its round)."""
    _server_url()
    from flows.run_record import mark_lost_runs

    try:
        lost = mark_lost_runs(pool)
    except Exception as exc:  # the worker still starts, and says for itself what is wrong with the server
        console.print(f"could not look for lost runs of pool {pool!r}: {type(exc).__name__}: {exc}", style="yellow", markup=False)
        lost = []
    for run_id in lost:
        console.print(f"flow run {run_id}: its process on this host is gone (a killed worker?): marked Crashed; "
                      "Retry it to resume its round from the finished shards", highlight=False)  # fmt: skip
    sys.argv = ["prefect", "worker", "start", "--pool", pool, "--type", "process"]
    sys.argv += ["--limit", str(limit)] if limit else []
    sys.argv += ["--run-once"] if run_once else []
    from prefect.cli import app

    # Prefect's own CLI, as the `prefect` command runs it, in this process (Prefect is loaded already):
    # the worker keeps this pid, so a supervisor stops it by that pid
    app()


retrain_app = typer.Typer(help="Retraining when new rankings arrive at the annotation service.", no_args_is_help=True)


@retrain_app.command("deploy")
def retrain_deploy(
    round_dir: Annotated[Path, typer.Argument(help="The round to retrain (its candidates are the campaign's).")],
    campaign: Annotated[str, typer.Option(help="The annotation campaign whose uploads trigger retraining.")],
    min_rankings: Annotated[int, typer.Option(min=1, help="New rankings needed since the round last trained on the campaign.")] = 100,
    pool: PoolOpt = "songpref",
    db_url: Annotated[Optional[str], typer.Option("--db-url", help="The service's database; default the round's SQLite file.")] = None,
    until: Annotated[str, typer.Option(help="Last stage retrained: reward_model, pairs, dpo, merge, sweep or ablation.")] = "ablation",
) -> None:
    """Register `retrain-on-rankings` for a round: every accepted upload to the campaign (an event from
    `songpref annotate serve` running with PREFECT_API_URL set) starts a run, which retrains reward_model ->
    pairs -> dpo -> merge -> sweep on the campaign's rankings once enough are new, and otherwise waits."""
    from flows.retrain import RETRAIN_STAGES

    if until not in RETRAIN_STAGES:
        fail(f"--until {until!r}: retraining runs {', '.join(RETRAIN_STAGES)}")
    if not (round_dir / "manifest.json").is_file():
        fail(f"{round_dir}: not a round (no manifest.json)")
    api = _server_url()
    from flows.deployments import register_retraining

    try:
        name, deployment_id = register_retraining(str(round_dir.resolve()), campaign, pool, min_rankings, db_url, until)
    except Exception as exc:
        fail(f"deploy failed: {exc}")
    console.print(f"deployment retrain-on-rankings/{name} ({deployment_id}) on pool {pool!r}, server {api}: "
                  f"retrains {round_dir} to {until} after {min_rankings} new rankings in campaign {campaign!r}", highlight=False)  # fmt: skip
