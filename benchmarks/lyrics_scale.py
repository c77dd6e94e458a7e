"""Benchmark: the template generator writes N valid, distinct lyrics with conditions.

Runs the real CLI (`songpref round run --until conditions`) on configs/tiny.yaml scaled by
one key, so the figure includes Prefect's start-up and every stage's bookkeeping.

    .venv/bin/python benchmarks/lyrics_scale.py --count 20000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=None, help="round directory (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="songpref-bench-")) / "round"
    command = [sys.executable, "-m", "songpref", "round", "run", "--config", str(REPO / "configs/tiny.yaml"),
               "--out", str(out), "--until", "conditions", "--set", f"lyrics.count={args.count}"]
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started

    lyrics = pq.read_table(out / "lyrics").to_pydict()
    conditions = pq.read_table(out / "conditions")
    manifest = json.loads((out / "manifest.json").read_text())
    result = {
        "count": args.count,
        "wall_seconds": round(seconds, 1),
        "lyrics_valid": sum(lyrics["valid"]),
        "lyrics_distinct": len(set(d for d, v in zip(lyrics["norm_digest"], lyrics["valid"]) if v)),
        "conditions": conditions.num_rows,
        "stage_seconds": {k: v["seconds"] for k, v in manifest["stages"].items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
