"""`songpref`: the command line over the flows and the layers.

Parsing and display only; the work happens in pipeline/ and flows/. Prefect is imported
only by the commands that run flows, so `songpref lyrics validate` starts instantly.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from pipeline.config import STAGES, ConfigError, RoundConfig, load_config
from songpref.cli_align import dpo_command, sweep_command
from songpref.cli_annotate import annotate_app
from songpref.cli_cards import cards_app
from songpref.cli_merge import merge_command

# Project defaults, before Prefect is imported: no analytics, quiet logs, time for a cold start.
for _key, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}.items():
    os.environ.setdefault(_key, _value)

app = typer.Typer(help="songpref: multi-preference alignment data and training for song-generation models.", no_args_is_help=True)
round_app = typer.Typer(help="Run and inspect alignment rounds.", no_args_is_help=True)
config_app = typer.Typer(help="Show and check round configurations.", no_args_is_help=True)
lyrics_app = typer.Typer(help="LeVo-format lyrics: validate and convert.", no_args_is_help=True)
conditions_app = typer.Typer(help="Conditions: export for song models.", no_args_is_help=True)
app.add_typer(round_app, name="round")
app.add_typer(config_app, name="config")
app.add_typer(lyrics_app, name="lyrics")
app.add_typer(conditions_app, name="conditions")
app.add_typer(cards_app, name="cards")
app.add_typer(annotate_app, name="annotate")
app.command("merge")(merge_command)
app.command("dpo")(dpo_command)
app.command("sweep")(sweep_command)

console = Console(stderr=True)
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Round config YAML, e.g. configs/tiny.yaml.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a key: --set lyrics.count=20000 (repeatable).")]


def _load(config: Path, overrides: list[str] | None) -> RoundConfig:
    try:
        return load_config(config, overrides or [])
    except ConfigError as exc:
        console.print(f"[red]config error[/red]\n{exc}", highlight=False)
        raise typer.Exit(2) from None


@round_app.command("run")
def round_run(
    config: ConfigOpt,
    out: Annotated[str, typer.Option("--out", "-o", help="Round directory: a local path or an fsspec URL.")],
    until: Annotated[Optional[str], typer.Option(help=f"Last stage to run, one of: {', '.join(STAGES)}. Default: every built stage.")] = None,
    only: Annotated[Optional[str], typer.Option(help="Run just this stage or stage part, e.g. scores/per (its inputs must be done).")] = None,
    set_: SetOpt = None,
) -> None:
    """Run a round's stages in order; finished shards are skipped, so a rerun resumes."""
    from pipeline.stages.runner import stage_class, stage_parts, stages_until

    cfg = _load(config, set_)
    try:
        stages = stage_parts(only) if only else stages_until(until)
        for name in stages:
            stage_class(name)  # checks the name and that it is built
    except (ValueError, NotImplementedError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    run_stages(out, cfg, stages)


SCORERS = ("per", "similarity", "reward")


@app.command("score")
def score(
    round_dir: Annotated[str, typer.Argument(help="Round directory whose candidates stage is done.")],
    scorer: Annotated[str, typer.Option("--scorer", help=f"One of: {', '.join(SCORERS)}.")],
) -> None:
    """Score a round's candidates with one scorer, under the round's own config (scores/<scorer>/).
    `reward` needs the round's reward_model stage done."""
    from pipeline.manifest import read_manifest
    from pipeline.store import RoundStore

    if scorer not in SCORERS:
        console.print(f"[red]--scorer {scorer!r}: not a scorer; scorers are: {', '.join(SCORERS)}[/red]")
        raise typer.Exit(2)
    try:
        cfg = RoundConfig.model_validate(read_manifest(RoundStore(round_dir))["config"])
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    run_stages(round_dir, cfg, [f"scores/{scorer}"])


def run_stages(out: str, cfg: RoundConfig, stages: list[str]) -> None:
    """Run stages (or parts) of a round through the flow, with progress and the status table after."""
    from flows.round import run_round
    from songpref.progress import RoundProgress

    with RoundProgress(console) as progress:
        try:
            records = run_round(out, cfg, stages, reporter=progress.report)
        except Exception as exc:
            console.print(f"[red]round failed:[/red] {exc}")
            _print_status(out)
            raise typer.Exit(1) from None
    _print_status(out)
    console.print(f"[green]done[/green]: {', '.join(records)} in {out}")


@round_app.command("status")
def round_status(round_dir: Annotated[str, typer.Argument(help="Round directory or URL.")]) -> None:
    """Show each stage's status, rows, time and key metrics from manifest.json."""
    _print_status(round_dir)


def _print_status(round_dir: str) -> None:
    from pipeline.manifest import read_manifest
    from pipeline.store import RoundStore

    try:
        manifest = read_manifest(RoundStore(round_dir))
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    table = Table(title=f"round {manifest['config']['name']} · config {manifest['config_hash'][:12]} · seed {manifest['seed']}")
    for column in ("stage", "status", "rows", "seconds", "metrics"):
        table.add_column(column)
    from pipeline.stages.runner import stage_parts

    for name in (part for stage in STAGES for part in stage_parts(stage)):
        record = manifest["stages"].get(name)
        if record is None:
            table.add_row(name, "[dim]not run[/dim]", "", "", "")
            continue
        metrics = ", ".join(f"{k}={v}" for k, v in record.get("metrics", {}).items() if isinstance(v, (int, float)))
        table.add_row(name, record["status"], str(record.get("rows", "")), str(record.get("seconds", "")), metrics)
    Console().print(table)


@config_app.command("show")
def config_show(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Print the resolved config (defaults filled in) as YAML, with its hash."""
    import yaml

    cfg = _load(config, set_)
    typer.echo(f"# config hash: {cfg.digest()}")
    typer.echo(yaml.safe_dump(cfg.resolved(), sort_keys=False))


@config_app.command("schema")
def config_schema() -> None:
    """Print the config's JSON schema (every key, type, default and description)."""
    typer.echo(json.dumps(RoundConfig.model_json_schema(), indent=2))


@lyrics_app.command("validate")
def lyrics_validate(
    file: Annotated[Path, typer.Argument(help="LeVo jsonl: one record a line with idx and gt_lyric.")],
    max_tokens: Annotated[int, typer.Option(help="Lyric token limit (LeVo: 300).")] = 300,
) -> None:
    """Check every record against LeVo's lyric rules; print each invalid record's idx and errors. Exit 1 if any is invalid."""
    from pipeline.lyrics.format import validate_lyrics

    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        console.print(f"[red]{file}: cannot read: {exc}[/red]")
        raise typer.Exit(2) from None
    invalid = total = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        total += 1
        idx, problems = f"line {number}", []
        try:
            record = json.loads(line)
            idx = str(record.get("idx", idx)) if isinstance(record, dict) else idx
            lyric = record.get("gt_lyric") if isinstance(record, dict) else None
            if not isinstance(lyric, str):
                problems = ["record has no gt_lyric string"]
            else:
                problems = [f"{p.code}: {p.message}" for p in validate_lyrics(lyric, max_tokens=max_tokens)]
        except json.JSONDecodeError as exc:
            problems = [f"not JSON: {exc}"]
        if problems:
            invalid += 1
            typer.echo(f"idx {idx} (line {number}):")
            for problem in problems:
                typer.echo(f"  - {problem}")
    typer.echo(f"{invalid} of {total} records invalid")
    raise typer.Exit(1 if invalid else 0)


@lyrics_app.command("to-yue")
def lyrics_to_yue(file: Annotated[Path, typer.Argument(help="LeVo jsonl with gt_lyric.")]) -> None:
    """Print the records with gt_lyric converted to YuE's format (blank-line sections)."""
    from pipeline.lyrics.format import to_yue

    for line in file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            record["gt_lyric"] = to_yue(record["gt_lyric"])
            typer.echo(json.dumps(record, ensure_ascii=False))


@conditions_app.command("export")
def conditions_export(
    round_dir: Annotated[str, typer.Argument(help="Round directory or URL.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output jsonl for LeVo's generate.py.")],
) -> None:
    """Write the round's conditions as LeVo jsonl (idx, gt_lyric, descriptions, one prompt field)."""
    from pipeline.conditions import to_levo_record
    from pipeline.manifest import finished_outputs
    from pipeline.store import RoundStore

    store = RoundStore(round_dir)
    lines = [
        json.dumps(to_levo_record(row), ensure_ascii=False)
        for relpath in finished_outputs(store, "conditions")
        for row in store.read_table(relpath).to_pylist()
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(out)
    console.print(f"wrote {len(lines)} records to {out}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
