"""`songpref merge`: DNI merging from a mergekit-style YAML or from paths and weights on the command line.

    songpref merge --config merge.yaml --out DIR
    songpref merge CKPT1 CKPT2 CKPT3 --weights 0.5,0.3,0.2 [--base B] [--lora] --out DIR

Parsing and display only; the work is `alignment.merge.merge` (imported when the command runs,
so torch does not slow down the rest of the CLI).
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn
from rich.table import Table

console = Console(stderr=True)


def _parse_weights(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        console.print(f"[red]--weights {text!r}: expected comma-separated numbers, e.g. 0.5,0.3,0.2[/red]")
        raise typer.Exit(2) from None


def merge_command(
    checkpoints: Annotated[Optional[list[Path]], typer.Argument(
        help="Checkpoint dirs or .safetensors files (or PEFT adapter dirs with --lora); not with --config.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory; must not exist unless --overwrite.")] = ...,
    config: Annotated[Optional[Path], typer.Option(
        "--config", "-c", help="mergekit-style YAML (linear | task_arithmetic); model paths relative to the YAML's folder.")] = None,
    weights: Annotated[Optional[str], typer.Option(help="Comma-separated αᵢ, one per checkpoint, e.g. 0.5,0.3,0.2.")] = None,
    base: Annotated[Optional[Path], typer.Option(
        help="Base θ₀: task vectors θ₀ + Σ αᵢ(θᵢ − θ₀); with --lora, the dense model the adapters merge into.")] = None,
    lora: Annotated[bool, typer.Option(
        help="Inputs are PEFT LoRA adapters: write the exact stacked adapter (rank Σ rᵢ), or with --base a full model.")] = False,
    allow_extrapolation: Annotated[bool, typer.Option(help="Allow weights that are negative or do not sum to 1.")] = False,
    dtype: Annotated[Optional[str], typer.Option(help="Output dtype: float32, bfloat16, float16, float64. Default: the inputs'.")] = None,
    compute_dtype: Annotated[str, typer.Option(help="Precision of the weighted sum: float32 or float64.")] = "float32",
    max_shard_size: Annotated[str, typer.Option(help="Largest output shard, e.g. 2GB, 500MB.")] = "2GB",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output directory (atomically).")] = False,
) -> None:
    """Merge checkpoints of one architecture: θ = Σ αᵢθᵢ, streamed tensor by tensor, written atomically."""
    from alignment.merge.dense import MergeMismatchError
    from alignment.merge.dni import merge
    from alignment.merge.config import MergeConfigError, MergeOptions, load_merge_config
    from alignment.merge.io import CheckpointError
    from alignment.merge.lora import is_lora_adapter

    try:
        if config is not None:
            if checkpoints or weights or base:
                raise MergeConfigError("give either --config or checkpoints with --weights (and --base), not both")
            cfg = load_merge_config(config)
            paths, alphas, base_path = cfg.checkpoints(config.parent), cfg.resolved_weights(), cfg.base(config.parent)
            dtype, allow_extrapolation = dtype or cfg.dtype, allow_extrapolation or cfg.allow_extrapolation
        else:
            if not checkpoints or weights is None:
                raise MergeConfigError("give checkpoints and --weights, or --config merge.yaml")
            paths, alphas, base_path = list(checkpoints), _parse_weights(weights), base
        if lora:
            not_adapters = [str(p) for p in paths if not is_lora_adapter(p)]
            if not_adapters:
                raise MergeConfigError(f"--lora: not PEFT adapter dirs (adapter_config.json + adapter_model.safetensors): {not_adapters}")
        options = MergeOptions(allow_extrapolation=allow_extrapolation, dtype=dtype, compute_dtype=compute_dtype,
                               max_shard_size=max_shard_size, overwrite=overwrite)
        started = time.perf_counter()
        with _bar() as bar:
            task = bar.add_task("merging", total=None)
            result = merge(paths, alphas, out, base=base_path, options=options,
                           progress=lambda done, total, key: bar.update(task, completed=done, total=total))
    except (MergeConfigError, MergeMismatchError, CheckpointError, FileExistsError) as exc:
        console.print(f"[red]merge refused:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    _summary(result, time.perf_counter() - started)


def _bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


def _summary(result, seconds: float) -> None:
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    table = Table(title=f"merge ({result.manifest['method']}) → {result.out}")
    table.add_column("tensors", justify="right")
    table.add_column("read GB", justify="right")
    table.add_column("written GB", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("read GB/s", justify="right")
    table.add_column("peak RSS GB", justify="right")
    table.add_row(str(result.tensors), f"{result.bytes_read / 1e9:.3f}", f"{result.bytes_written / 1e9:.3f}", f"{seconds:.2f}",
                  f"{result.bytes_read / 1e9 / max(seconds, 1e-9):.2f}", f"{peak_rss / 1e9:.2f}")
    Console().print(table)
