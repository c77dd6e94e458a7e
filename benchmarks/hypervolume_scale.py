"""Benchmark: hypervolume and Pareto front of a 3-D front, moocore against the earlier grid-cell enumeration.

The points lie on the positive octant of the unit sphere (every point non-dominated: the hardest
case for both), seeded. The earlier exact method summed the cells of the coordinate grid that some
point dominates: O(n³) cells, each checked against every point, so it runs only at the small sizes
(`--old-max`); where both run, their volumes must agree to 1e-9 relative, or the script fails.
The earlier Pareto mask (a pairwise comparison per point) runs at every size beside moocore's.
Each timing is the median of `--repeat` runs; the load average before and after goes into
benchmarks/results/hypervolume_cpu.json.

    .venv/bin/python benchmarks/hypervolume_scale.py [--sizes 10 30 100 1000 10000] [--old-max 100]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import moocore
import numpy as np

from alignment.sweep.grid import hypervolume, pareto_mask

RESULTS = Path(__file__).with_name("results") / "hypervolume_cpu.json"


def grid_cell_hypervolume(values: np.ndarray, reference: np.ndarray) -> float:
    """The earlier implementation (kept here as the anchor): sum every grid cell some point dominates."""
    points = values[(values > reference).all(axis=1)]
    axes = [np.unique(np.concatenate([[reference[d]], points[:, d]])) for d in range(values.shape[1])]
    total = 0.0
    for cell in itertools.product(*(range(len(a) - 1) for a in axes)):
        upper = np.array([axes[d][i + 1] for d, i in enumerate(cell)])
        if (points >= upper).all(axis=1).any():
            total += float(np.prod([axes[d][i + 1] - axes[d][i] for d, i in enumerate(cell)]))
    return total


def pairwise_pareto_mask(values: np.ndarray) -> np.ndarray:
    """The earlier Pareto mask: for each point, does any other dominate it."""
    mask = np.ones(len(values), dtype=bool)
    for i in range(len(values)):
        mask[i] = not ((values >= values[i]).all(axis=1) & (values > values[i]).any(axis=1)).any()
    return mask


def sphere_front(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = np.abs(rng.normal(size=(n, 3)))
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 30, 100, 1000, 10000])
    parser.add_argument("--old-max", type=int, default=100, help="largest size the grid-cell enumeration runs at")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    reference = np.zeros(3)
    load_before = os.getloadavg()
    rows = []
    for n in args.sizes:
        values = sphere_front(n, args.seed)
        new_s, volume = timed(lambda: hypervolume(values, reference), args.repeat)
        front_s, front = timed(lambda: pareto_mask(values), args.repeat)
        old_front_s, old_front = timed(lambda: pairwise_pareto_mask(values), 1)
        if not np.array_equal(front, old_front):
            raise SystemExit(f"n={n}: the Pareto masks differ")
        row = {"points": n, "moocore_hypervolume_s": new_s, "hypervolume": volume,
               "moocore_pareto_s": front_s, "pairwise_pareto_s": old_front_s}  # fmt: skip
        if n <= args.old_max:
            old_s, old_volume = timed(lambda: grid_cell_hypervolume(values, reference), 1)
            if abs(old_volume - volume) > 1e-9 * abs(old_volume):
                raise SystemExit(f"n={n}: grid cells give {old_volume!r}, moocore {volume!r}")
            row |= {"grid_cell_hypervolume_s": old_s, "speedup": old_s / new_s}
        rows.append(row)
        print({k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    result = {"rows": rows, "seed": args.seed, "repeat": args.repeat, "moocore": moocore.__version__,
              "numpy": np.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
              "load_before": [round(x, 2) for x in load_before],
              "load_after": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(RESULTS)
    print(f"load {result['load_before']} -> {result['load_after']}; wrote {RESULTS}")


if __name__ == "__main__":
    main()
