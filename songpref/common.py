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
    from songpref.progress import RoundProgress

    with RoundProgress(console) as progress:
        try:
            records = _rerun_in_process(out, cfg, stages, progress.report)
            if records is None:
                from flows.round import run_round

                records = run_round(out, cfg, stages, reporter=progress.report)
        except Exception as exc:
            console.print(f"[red]round failed:[/red] {exc}")
            print_status(out)
            raise typer.Exit(1) from None
    print_status(out)
    console.print(f"[green]done[/green]: {', '.join(records)} in {out}")


def _rerun_in_process(out: str, cfg, stages: list[str], report):
    """A finished round's rerun, recorded without importing Prefect (that alone costs seconds): in
    this process, and with PREFECT_API_URL in the environment on that server over its REST API
    (`flows/rest_record.py`); None when there is work, or a server only Prefect's settings name."""
    from flows.api_probe import may_have_api_url
    from flows.rest_record import usable_api_url

    api_url = usable_api_url()
    if may_have_api_url() and api_url is None:
        return None  # a server Prefect's own settings name: the flow records the run
    from flows.stages import run_if_cached
    from pipeline.store import RoundStore

    store = RoundStore(out)
    records = run_if_cached(stages, cfg, store, report)
    if records is not None and api_url is not None:  # the server records it as the flow would, without Prefect's import
        from flows.rest_record import record_cached_rerun, rerun_markdown

        record_cached_rerun(api_url, store, stages, rerun_markdown(records))
    return records


def print_status(round_dir: str, with_server: bool = False) -> None:
    from rich.table import Table

    from flows.stages import all_parts
    from pipeline.manifest import read_manifest
    from pipeline.store import RoundStore

    try:
        manifest = read_manifest(RoundStore(round_dir))
    except FileNotFoundError as exc:
        fail(str(exc))
    server = _server_states(manifest) if with_server else None
    table = Table(title=f"round {manifest['config']['name']} · config {manifest['config_hash'][:12]} · seed {manifest['seed']}")
    for column in ("stage", "status", *(["server"] if server else []), "rows", "seconds", "metrics"):
        table.add_column(column)
    for name in all_parts():
        record = manifest["stages"].get(name)
        state = [server["stages"].get(name, "")] if server else []
        if record is None:
            table.add_row(name, "[dim]not run[/dim]", *state, "", "", "")
            continue
        metrics = ", ".join(f"{k}={v}" for k, v in record.get("metrics", {}).items() if isinstance(v, (int, float)))
        table.add_row(name, record["status"], *state, str(record.get("rows", "")), str(record.get("seconds", "")), metrics)
    Console().print(table)
    if manifest.get("stopped"):
        console.print(manifest["stopped"]["reason"], style="yellow", markup=False, highlight=False)
    if server:
        run_name, state, run_id = server["run"]
        Console(soft_wrap=True).print(f"flow run {run_name} ({run_id}): {state} on {server['url']}", highlight=False)


def _server_states(manifest: dict) -> dict | None:
    """The Prefect server's state of the round's latest run and of its stage runs, when PREFECT_API_URL is set."""
    from flows.api_probe import may_have_api_url

    if not may_have_api_url():
        return None
    from flows.run_record import server_states

    try:
        found = server_states(manifest)
    except Exception as exc:  # the manifest's table still shows; the server's part says why it is missing
        console.print(f"the Prefect server's state is unavailable: {type(exc).__name__}: {exc}", style="yellow", markup=False)
        return None
    return found and {**found, "url": manifest["flow_run"]["server"]}
