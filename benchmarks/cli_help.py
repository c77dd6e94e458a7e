"""Benchmark: wall time of `songpref --help` and of every subcommand's `--help`, as a user runs them.

Each command runs `--repeat` times in a fresh process (the console script of this venv); the
median and the worst are printed with the load average before and after, since a timing on a
shared machine means little without it.

    .venv/bin/python benchmarks/cli_help.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SONGPREF = str(Path(sys.executable).with_name("songpref"))
COMMANDS = [
    [], ["round"], ["round", "run"], ["round", "plan"], ["round", "status"], ["config", "show"], ["config", "schema"],
    ["score"], ["dpo"], ["merge"], ["sweep"], ["ablation"], ["cards", "write"], ["cards", "lint"], ["annotate", "serve"],
    ["lyrics", "validate"], ["conditions", "export"],
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| command | median s | worst s |\n|---|---|---|")
    worst_overall = 0.0
    for command in COMMANDS:
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            subprocess.run([SONGPREF, *command, "--help"], check=True, capture_output=True)
            times.append(time.perf_counter() - started)
        worst_overall = max(worst_overall, max(times))
        print(f"| songpref {' '.join(command)} --help | {statistics.median(times):.3f} | {max(times):.3f} |")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; worst of all: {worst_overall:.3f} s")


if __name__ == "__main__":
    main()
