"""What the CLI's commands share: the console, config loading with one-line errors, running
stages through the flow with progress, and the round's status table.

Only typer and rich are imported here; the layers are imported inside the functions that use
them, so every `--help` answers without loading torch, pandas or Prefect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)  # a config error stays one line per problem
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Round config YAML, e.g. configs/tiny.yaml.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a key: --set lyrics.count=20000 (repeatable).")]


def fail(message: str, code: int = 2):
    """Print `message` (as it is: no markup) and exit."""
    console.print(message, style="red", markup=False, highlight=False)
    raise typer.Exit(code)


def load_config_file(config: Path, overrides: list[str] | None):
    """The validated config, or exit 2 with one line per problem."""
    from pipeline.config import ConfigError, load_config

    try:
        return load_config(config, overrides or [])
    except ConfigError as exc:
        console.print(f"[red]config error[/red]\n{exc}", highlight=False)
        raise typer.Exit(2) from None


def round_config(round_dir: str, overrides: list[str] | None = None):
    """The config a round recorded, with `--set` overrides, validated; exit 2 on a problem."""
    from pipeline.config import ConfigError, config_with_overrides
    from pipeline.manifest import read_manifest
    from pipeline.store import RoundStore

    try:
        recorded = read_manifest(RoundStore(round_dir))["config"]
        return config_with_overrides(recorded, overrides or [], f"{round_dir}/manifest.json")
    except FileNotFoundError as exc:
        fail(str(exc))
    except ConfigError as exc:
        console.print(f"[red]config error[/red]\n{exc}", highlight=False)
        raise typer.Exit(2) from None


def run_stages(out: str, cfg, stages: list[str]) -> None:
    """Run stages (or parts) of a round through the flow, with progress and the status table after."""
    from flows.round import run_round
    from songpref.progress import RoundProgress

    with RoundProgress(console) as progress:
        try:
            records = run_round(out, cfg, stages, reporter=progress.report)
        except Exception as exc:
            console.print(f"[red]round failed:[/red] {exc}")
            print_status(out)
            raise typer.Exit(1) from None
    print_status(out)
    console.print(f"[green]done[/green]: {', '.join(records)} in {out}")


def print_status(round_dir: str) -> None:
    from rich.table import Table

    from flows.stages import all_parts
    from pipeline.manifest import read_manifest
    from pipeline.store import RoundStore

    try:
        manifest = read_manifest(RoundStore(round_dir))
    except FileNotFoundError as exc:
        fail(str(exc))
    table = Table(title=f"round {manifest['config']['name']} · config {manifest['config_hash'][:12]} · seed {manifest['seed']}")
    for column in ("stage", "status", "rows", "seconds", "metrics"):
        table.add_column(column)
    for name in all_parts():
        record = manifest["stages"].get(name)
        if record is None:
            table.add_row(name, "[dim]not run[/dim]", "", "", "")
            continue
        metrics = ", ".join(f"{k}={v}" for k, v in record.get("metrics", {}).items() if isinstance(v, (int, float)))
        table.add_row(name, record["status"], str(record.get("rows", "")), str(record.get("seconds", "")), metrics)
    Console().print(table)
    if manifest.get("stopped"):
        console.print(manifest["stopped"]["reason"], style="yellow", markup=False, highlight=False)
