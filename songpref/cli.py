"""`songpref`: the command line over the flows and the layers.

Parsing and display only; the work happens in pipeline/ and flows/. The layers are imported
inside the commands that use them, so `songpref --help` and every subcommand's help answer in
well under a second.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.allocator import keep_freed_memory
from pipeline.registry import registered_names
from pipeline.stages.names import STAGES
from songpref.cli_align import ablation_command, dpo_command, sweep_command
from songpref.cli_annotate import annotate_app
from songpref.cli_cards import cards_app
from songpref.cli_merge import merge_command
from songpref.cli_plan import plan_command
from songpref.cli_deploy import deploy_command, retrain_app, worker_app
from songpref.cli_rounds import rounds_app
from songpref.cli_server import server_app
from songpref.common import ConfigOpt, SetOpt, console, fail, load_config_file, print_status, round_config, run_stages

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
app.add_typer(server_app, name="server")
app.add_typer(worker_app, name="worker")
app.add_typer(rounds_app, name="rounds")
app.add_typer(retrain_app, name="retrain")
app.command("deploy")(deploy_command)
app.command("merge")(merge_command)
app.command("dpo")(dpo_command)
app.command("sweep")(sweep_command)
app.command("ablation")(ablation_command)
round_app.command("plan")(plan_command)


@round_app.command("run")
def round_run(
    config: ConfigOpt,
    out: Annotated[str, typer.Option("--out", "-o", help="Round directory: a local path or an fsspec URL.")],
    until: Annotated[Optional[str], typer.Option(help=f"Last stage to run, one of: {', '.join(STAGES)}. Default: every stage.")] = None,
    only: Annotated[Optional[str], typer.Option(help="Run just this stage or stage part, e.g. scores/per (its inputs must be done).")] = None,
    parent: Annotated[Optional[str], typer.Option(help="Continue this round (semi-online): sample from and start DPO at its chosen policy.")] = None,
    set_: SetOpt = None,
) -> None:
    """Run a round's stages in order; finished shards are skipped, so a rerun resumes."""
    from flows.stages import all_parts, stage_parts, stages_until

    if parent and not Path(parent, "sweep", "chosen", "config.json").is_file():
        fail(f"--parent {parent}: no chosen policy there (sweep/chosen/config.json); run its sweep stage first")
    cfg = load_config_file(config, [*(set_ or []), *([f"parent={parent}"] if parent else [])])
    try:
        stages = stage_parts(only) if only in STAGES else [only] if only else stages_until(until)
        unknown = [name for name in stages if name not in all_parts()]
        if unknown:
            raise ValueError(f"--only {unknown[0]!r}: unknown stage; stages and parts are: {', '.join(all_parts())}")
    except ValueError as exc:
        fail(str(exc))
    run_stages(out, cfg, stages)


@app.command("score")
def score(
    round_dir: Annotated[str, typer.Argument(help="Round directory whose candidates stage is done.")],
    scorer: Annotated[str, typer.Option("--scorer", help=f"A score kind: {', '.join(registered_names('songpref.scorers'))}.")],
) -> None:
    """Score a round's candidates with one score kind, under the round's own config (scores/<kind>/).
    A kind trained in the round (reward) needs its reward_model stage done."""
    from pipeline.scoring.registry import score_kinds

    if scorer not in score_kinds():
        fail(f"--scorer {scorer!r}: not a scorer; scorers are: {', '.join(score_kinds())}")
    run_stages(round_dir, round_config(round_dir), [f"scores/{scorer}"])


@round_app.command("status")
def round_status(round_dir: Annotated[str, typer.Argument(help="Round directory or URL.")]) -> None:
    """Show each stage's status, rows, time and key metrics from manifest.json; with PREFECT_API_URL
    set, also the server's state of the round's latest flow run and of each stage's run."""
    print_status(round_dir, with_server=True)


@config_app.command("show")
def config_show(config: ConfigOpt, set_: SetOpt = None) -> None:
    """Print the resolved config (defaults filled in) as YAML, with its hash."""
    import yaml

    cfg = load_config_file(config, set_)
    typer.echo(f"# config hash: {cfg.digest()}")
    typer.echo(yaml.safe_dump(cfg.resolved(), sort_keys=False))


@config_app.command("schema")
def config_schema() -> None:
    """Print the config's JSON schema (every key, registered sections included: type, default, description)."""
    from pipeline.config import config_schema

    typer.echo(json.dumps(config_schema(), indent=2))


@lyrics_app.command("validate")
def lyrics_validate(
    file: Annotated[Path, typer.Argument(help="LeVo jsonl: one record a line with idx and gt_lyric.")],
    max_tokens: Annotated[int, typer.Option(help="Lyric token limit (LeVo: 300).")] = 300,
    fixed: Annotated[Optional[Path], typer.Option(help="Write the usable records here, warnings repaired (records with errors left out).")] = None,
) -> None:
    """Check every record against LeVo's lyric rules; print each record's errors (LeVo cannot take the lyric: excluded)
    and warnings (a style LeVo accepts: repaired, kept). Exit 1 if any record has an error."""
    from pipeline.lyrics.format import fix_style, validate_lyrics

    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{file}: cannot read: {exc}")
    invalid = warned = total = 0
    usable = []
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
                problems = [("error", "record has no gt_lyric string")]
            else:
                problems = [(p.severity, f"{p.code}: {p.message}") for p in validate_lyrics(lyric, max_tokens=max_tokens)]
        except json.JSONDecodeError as exc:
            problems = [("error", f"not JSON: {exc}")]
        errors = sum(severity == "error" for severity, _ in problems)
        invalid, warned = invalid + bool(errors), warned + bool(problems and not errors)
        if not errors:
            usable.append({**record, "gt_lyric": fix_style(lyric)} if problems else record)
        if problems:
            typer.echo(f"idx {idx} (line {number}): {errors} error(s), {len(problems) - errors} warning(s)")
            for severity, problem in problems:
                typer.echo(f"  - {severity} {problem}")
    typer.echo(f"{invalid} of {total} records invalid (errors: excluded); {warned} with warnings only (repaired, kept)")
    if fixed is not None:
        _write_text_atomically(fixed, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in usable))
        typer.echo(f"wrote {len(usable)} usable records to {fixed}")
    raise typer.Exit(1 if invalid else 0)


def _write_text_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


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
    _write_text_atomically(out, "\n".join(lines) + "\n")
    console.print(f"wrote {len(lines)} records to {out}")


def main() -> None:
    keep_freed_memory()  # every command that trains or samples runs several times faster on the CPU
    app()


if __name__ == "__main__":
    sys.exit(main())
