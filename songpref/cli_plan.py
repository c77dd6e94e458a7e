"""`songpref round plan`: check a config and say what a round would build and need; run nothing."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from pipeline.stages.names import STAGES
from songpref.common import ConfigOpt, SetOpt, console, fail, load_config_file


def plan_command(
    config: ConfigOpt,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="A round directory: show what it already holds.")] = None,
    until: Annotated[Optional[str], typer.Option(help=f"Last stage, one of: {', '.join(STAGES)}.")] = None,
    set_: SetOpt = None,
) -> None:
    """Check a config (exit 2 on a problem) and list every stage part and shard a round would build and every
    path, endpoint and model it needs and every stage option its model would refuse, all in one listing (exit 1 if
    a path is missing or an option refused). Runs, loads and contacts nothing."""
    from rich.table import Table

    from flows.plan import needs, plan_round
    from pipeline.manifest import read_manifest
    from pipeline.store import RoundStore

    cfg = load_config_file(config, set_)
    manifest = None
    if out:
        try:
            manifest = read_manifest(RoundStore(out))
        except FileNotFoundError:
            manifest = None  # a new round
    try:
        parts = plan_round(cfg, manifest, until)
    except ValueError as exc:
        fail(str(exc))
    table = Table(title=f"round {cfg.name} · config {cfg.digest()[:12]} · seed {cfg.seed}")
    for column in ("stage", "shards", "builds", "recorded" if out else None):
        if column:
            table.add_column(column, overflow="fold")
    for part in parts:
        table.add_row(part.part, str(part.shards), part.builds, *([part.recorded] if out else []))
    console.print(table)
    found = needs(cfg)
    listing = Table(title="paths, endpoints and models the config needs, and options its stages would refuse")
    for column in ("kind", "key", "value", "check"):
        listing.add_column(column, overflow="fold")
    for need in found:
        listing.add_row(need.kind, need.key, need.value, need.note if need.ok else f"[red]{need.note}[/red]")
    console.print(listing if found else "the config needs no paths, endpoints or models beyond what songpref ships")
    missing = [n for n in found if not n.ok and n.kind != "option"]
    refused = [n for n in found if not n.ok and n.kind == "option"]
    problems = ([f"{len(missing)} missing path(s)"] if missing else []) + ([f"{len(refused)} refused option(s)"] if refused else [])
    console.print(f"{sum(p.shards for p in parts)} shards in {len(parts)} stage parts; "
                  + (f"[red]{', '.join(problems)}[/red]" if problems else "every path found, every option accepted"))  # fmt: skip
    raise typer.Exit(1 if problems else 0)
