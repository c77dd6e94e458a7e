"""`songpref cards`: write and lint the data cards of a round.

data_cards (and so matplotlib) is imported inside the commands, so other commands start fast.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

cards_app = typer.Typer(help="Data cards: write and lint the README.md card of every dataset in a round.", no_args_is_help=True)
console = Console(stderr=True)


@cards_app.command("lint")
def cards_lint(
    path: Annotated[str, typer.Argument(help="A card file, a dataset folder, or a round folder (lints every card).")],
) -> None:
    """Check cards for missing or empty fields and sections, placeholders, missing plots and data files. Exit 1 on any problem."""
    from data_cards import lint_path

    problems = lint_path(path)
    for problem in problems:
        typer.echo(problem)
    if problems:
        console.print(f"[red]{len(problems)} problem(s)[/red]")
        raise typer.Exit(1)
    console.print("[green]cards ok[/green]")


@cards_app.command("write")
def cards_write(
    round_dir: Annotated[str, typer.Argument(help="Round directory or fsspec URL with a manifest.json.")],
) -> None:
    """(Re)write every dataset card of a round, and its plots, from the manifest and the data."""
    from data_cards import write_round_cards
    from pipeline.store import RoundStore

    try:
        written = write_round_cards(RoundStore(round_dir))
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    for path in written:
        typer.echo(path)
    console.print(f"wrote {len(written)} card(s) in {round_dir}")
