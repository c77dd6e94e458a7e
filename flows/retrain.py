"""Retraining on new rankings: reward_model -> pairs -> dpo -> merge -> sweep of one round, run
by the `retrain` deployment's trigger when the annotation service announces an accepted upload
for the campaign, once `min_new_rankings` have arrived since the round last trained on it."""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as current_flow_run

from flows.round import alignment_round, without_heartbeats
from flows.stages import stages_until
from pipeline.config import config_with_overrides
from pipeline.manifest import annotate_round, read_manifest
from pipeline.store import RoundStore

RETRAIN_STAGES = ["reward_model", "pairs", "dpo", "merge", "sweep", "ablation"]


def campaign_rankings(round_dir: str, campaign: str, db_url: str | None):
    """The campaign's rankings as the service exports them (RANKINGS_SCHEMA, oldest first)."""
    from sqlalchemy import select

    from reward_model.service.db import Database, default_url
    from reward_model.service.export import rankings_table
    from reward_model.service.models import Campaign

    db = Database(db_url or default_url(round_dir), apply_migrations=False)
    try:
        with db.read() as session:
            found = session.scalar(select(Campaign).where(Campaign.name == campaign))
            if found is None:
                raise LookupError(f"no campaign named {campaign!r} in {db.engine.url.render_as_string(hide_password=True)}")
            return rankings_table(session, found)
    finally:
        db.dispose()


@flow(name="retrain-on-rankings")
def retrain_on_rankings(round_dir: str, campaign: str, min_new_rankings: int = 1, db_url: str | None = None,
                        until: str = "ablation") -> dict:  # fmt: skip
    """Retrain the round on the campaign's rankings when enough are new; else record that it waits."""
    from reward_model.service.export import write_snapshot

    logger = get_run_logger()
    store = RoundStore(round_dir)
    manifest = read_manifest(store)
    table = campaign_rankings(round_dir, campaign, db_url)
    done = manifest.get("retraining", {}).get(campaign, {}).get("rankings", 0)
    new = table.num_rows - done
    if new < min_new_rankings:
        logger.info("campaign %s: %d new rankings of the %d needed; waiting", campaign, new, min_new_rankings)
        return {"status": "waiting", "new_rankings": new, "needed": min_new_rankings}
    snapshot = write_snapshot(round_dir, campaign, table)["parquet"]
    config = config_with_overrides(manifest["config"], [f"reward_model.rankings={snapshot}"], f"{round_dir}/manifest.json")
    logger.info("campaign %s: %d new rankings (%d in all); retraining %s", campaign, new, table.num_rows,
                ", ".join(RETRAIN_STAGES[: RETRAIN_STAGES.index(until) + 1]))  # fmt: skip
    # the new rankings change the config, so every stage reruns: those before reward_model find their shards built
    with without_heartbeats():
        records = alignment_round(round_dir, config.resolved(), stages_until(until))
    record = {"rankings": table.num_rows, "snapshot": snapshot, "flow_run_id": str(current_flow_run.id),
              "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    annotate_round(store, "retraining", {**read_manifest(store).get("retraining", {}), campaign: record})
    return {"status": "retrained", "new_rankings": new, "stages": {k: v["status"] for k, v in records.items()}}
