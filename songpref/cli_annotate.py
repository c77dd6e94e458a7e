"""`songpref annotate`: run the annotation service and administer its database.

`serve` starts the web server; the other commands work on the database directly (the same
database the server uses: `sqlite:///<round>/rankings/annotations.db` unless --db is given).
Plain annotator and admin tokens are printed once, to stdout, and stored nowhere.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

annotate_app = typer.Typer(help="The annotation service: people rank a round's candidate songs.", no_args_is_help=True)
campaign_app = typer.Typer(help="Create and inspect campaigns.", no_args_is_help=True)
annotators_app = typer.Typer(help="Add annotators (prints their tokens once).", no_args_is_help=True)
annotate_app.add_typer(campaign_app, name="campaign")
annotate_app.add_typer(annotators_app, name="annotators")

console = Console(stderr=True)
RoundArg = Annotated[Path, typer.Argument(help="Round directory whose candidates stage is done.")]
DbOpt = Annotated[Optional[str], typer.Option("--db", help="Database URL (sqlite:///... or postgresql+psycopg://...). Default: <round>/rankings/annotations.db.")]
CampaignOpt = Annotated[str, typer.Option("--campaign", help="Campaign name.")]


def _database(round_dir: Path, db: str | None):
    from reward_model.service.db import Database, default_url

    if not round_dir.is_dir():
        console.print(f"[red]round directory {round_dir} does not exist[/red]")
        raise typer.Exit(2)
    return Database(db or default_url(round_dir))


def _fail(message: str) -> None:
    console.print(f"[red]{message}[/red]")
    raise typer.Exit(2)


@annotate_app.command("serve")
def serve(
    round_dir: RoundArg,
    db: DbOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8700,
    max_upload_mb: Annotated[float, typer.Option(help="Largest ranking file accepted, in MB.")] = 5.0,
) -> None:
    """Serve the annotation pages and API (admin token: $SONGPREF_ADMIN_TOKEN, else printed once)."""
    import uvicorn

    from reward_model.service.app import configure_logging, create_app
    from reward_model.service.settings import ServiceSettings

    try:
        settings = ServiceSettings(round_dir, db_url=db, max_upload_bytes=int(max_upload_mb * 1024 * 1024))
    except ValueError as exc:
        _fail(str(exc))
    if settings.admin_token_generated:
        typer.echo(f"admin token (shown once; set SONGPREF_ADMIN_TOKEN to choose it): {settings.admin_token}")
    console.print(f"annotation service for {settings.round_dir} on http://{host}:{port}/ (database {settings.db_url})")
    configure_logging()
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


@annotate_app.command("migrate")
def migrate(round_dir: RoundArg, db: DbOpt = None) -> None:
    """Create or upgrade the database schema to the newest revision."""
    from reward_model.service.db import current_revision

    database = _database(round_dir, db)
    console.print(f"database at revision {current_revision(database.engine)}")
    database.dispose()


@campaign_app.command("create")
def campaign_create(
    round_dir: RoundArg,
    name: Annotated[str, typer.Option("--name", help="Campaign name (letters, digits, - _ .).")],
    db: DbOpt = None,
    prompts: Annotated[str, typer.Option(help="'all' or comma-separated prompt (condition) ids.")] = "all",
    k: Annotated[int, typer.Option("-k", help="Candidates per task.")] = 4,
    overlap: Annotated[int, typer.Option(help="Annotators per task.")] = 3,
    gold: Annotated[Optional[Path], typer.Option(help='JSON file: [{"prompt_id": ..., "answer": ..., "candidate_ids": [...]}].')] = None,
    expires: Annotated[Optional[datetime], typer.Option(help="Expiry time (ISO 8601, UTC if no zone).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of task order and candidate order.")] = 0,
) -> None:
    """Build a campaign's tasks from the round's rendered candidates."""
    from pydantic import ValidationError

    from reward_model.service.campaigns import CampaignError, CampaignSpec, create_campaign

    try:
        spec = CampaignSpec(name=name, prompts="all" if prompts == "all" else [p.strip() for p in prompts.split(",") if p.strip()],
                            k=k, overlap=overlap, seed=seed, expires_at=expires,
                            gold=json.loads(gold.read_text()) if gold else [])  # fmt: skip
        database = _database(round_dir, db)
        with database.write() as session:
            tasks = len(create_campaign(session, spec, round_dir).tasks)
    except (ValidationError, CampaignError, ValueError, OSError) as exc:
        _fail(f"campaign {name!r} not created: {exc}")
    typer.echo(json.dumps({"campaign": name, "tasks": tasks}))


@campaign_app.command("progress")
def campaign_progress(round_dir: RoundArg, campaign: CampaignOpt, db: DbOpt = None) -> None:
    """Submissions against what the campaign wants, per annotator (JSON)."""
    from reward_model.service.campaigns import campaign_by_name, progress

    with _database(round_dir, db).read() as session:
        try:
            typer.echo(json.dumps(progress(session, campaign_by_name(session, campaign)), indent=2))
        except LookupError as exc:
            _fail(str(exc))


@annotators_app.command("add")
def annotators_add(
    round_dir: RoundArg,
    campaign: CampaignOpt,
    names: Annotated[list[str], typer.Argument(help="Annotator names.")],
    db: DbOpt = None,
) -> None:
    """Add annotators; prints `name<TAB>token` per annotator (the only time tokens are shown)."""
    from reward_model.service.campaigns import CampaignError, add_annotators, campaign_by_name

    try:
        with _database(round_dir, db).write() as session:
            tokens = add_annotators(session, campaign_by_name(session, campaign), names)
    except (CampaignError, LookupError) as exc:
        _fail(str(exc))
    for name, token in tokens.items():
        typer.echo(f"{name}\t{token}")


@annotate_app.command("export")
def export(round_dir: RoundArg, campaign: CampaignOpt, db: DbOpt = None) -> None:
    """Write the campaign's rankings into <round>/rankings/<campaign>.parquet and .csv (atomically)."""
    from reward_model.service.campaigns import campaign_by_name
    from reward_model.service.export import rankings_table, write_snapshot

    with _database(round_dir, db).read() as session:
        try:
            table = rankings_table(session, campaign_by_name(session, campaign))
        except LookupError as exc:
            _fail(str(exc))
    paths = write_snapshot(round_dir, campaign, table)
    typer.echo(json.dumps({"rows": table.num_rows, **paths}))
