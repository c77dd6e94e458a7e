"""Several runs of one strategy, averaged into its model: the dpo option `replicates`.

One DPO run's effect on its preference's own metric varied between runs about as much as the
effect itself (README, alignment science). Replicates train on the same pairs, each with its own
seed and so its own order of pairs; the strategy's model is the uniform average of their weights
(a model soup, as WARP averages RL policies trained from one start): what the runs learn in common
stays, the noise each adds on its own averages out. Each run's model is kept too, so the spread
over runs can be measured.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from pipeline.digest import derive_seed
from pipeline.stages.base import ShardSpec


def replicate_spec(spec: ShardSpec, index: int) -> ShardSpec:
    """The shard of replicate `index`: the first is the shard itself (so one replicate is the plain run),
    every other its own seed and so its own run folder (the key names it) and checkpoints."""
    if index == 0:
        return spec
    seed = derive_seed(spec.params["seed"], "replicate", index) % 2**32
    return dataclasses.replace(spec, params={**spec.params, "seed": seed, "replicate": index})


def average_runs(folders: list[Path], out: Path) -> None:
    """Write the uniform average of the runs' saved models to `out` (DNI's merge at equal weights:
    streamed tensor by tensor, the folder replaced only when complete)."""
    from alignment.merge.config import MergeOptions
    from alignment.merge.dni import merge

    merge(folders, [1 / len(folders)] * len(folders), out, options=MergeOptions(overwrite=True))


def combined_metrics(runs: list[dict]) -> dict:
    """The metrics of several replicate runs as one run's: the training logs end to end (each row names
    its replicate), each eval metric's mean over the runs, and every run's own under `replicates`."""
    evals = [run.get("eval") or {} for run in runs]
    keys = sorted({k for e in evals for k, v in e.items() if isinstance(v, (int, float))})
    mean_eval = {}
    for key in keys:
        values = [e[key] for e in evals if isinstance(e.get(key), (int, float)) and math.isfinite(e[key])]
        mean_eval[key] = sum(values) / len(values) if values else None
    return {"log": [{**row, "replicate": i} for i, run in enumerate(runs) for row in run["log"]],
            "eval": mean_eval, "eval_is": f"the mean over {len(runs)} replicate runs (each run's own under replicates)",
            "replicates": [{k: run.get(k) for k in ("seed", "train", "eval", "resumed_from")} for run in runs],
            "train": runs[-1].get("train"), "distributed": runs[-1].get("distributed")}  # fmt: skip
