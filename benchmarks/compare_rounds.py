"""Compare two round directories shard by shard: every Parquet file of the stages up to `--until`
(default pairs) — its name, its bytes, its rows and schema, and its footer's metrics without the
wall-clock ones. Used to show that a change leaves a round's outputs the same (same config and
seed, two versions of songpref, or two runs of one).

Shards are matched by stage and index (`shard-00003-*`), datasets by path, so a shard whose key
changed (its inputs' digests did) is still compared by content.

    .venv/bin/python benchmarks/compare_rounds.py ROUND_A ROUND_B [--until pairs]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.stages.base import METRICS_KEY
from pipeline.stages.names import STAGES

WALL_CLOCK = ("sampling_seconds", "scoring_seconds")  # timings older versions stored in shard footers
SHARD = re.compile(r"shard-(\d{5})-[0-9a-f]+\.parquet$")


def files(root: Path, folders: list[str]) -> dict[str, Path]:
    """Match key -> file: `folder/shard-00003` for shards, the round-relative path for datasets."""
    found = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.parquet")):
            relative = str(path.relative_to(root))
            match = SHARD.search(path.name)
            found[f"{path.parent.relative_to(root)}/shard-{match.group(1)}" if match else relative] = path
    return found


def compare(a: Path, b: Path) -> dict[str, bool]:
    ta, tb = pq.read_table(a), pq.read_table(b)
    metrics = [json.loads((t.schema.metadata or {}).get(METRICS_KEY, b"{}")) for t in (ta, tb)]
    metrics = [{k: v for k, v in m.items() if k not in WALL_CLOCK} for m in metrics]
    return {"name": a.name == b.name, "bytes": hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest(),
            "rows": ta.schema.equals(tb.schema, check_metadata=False) and ta.equals(tb), "footer": metrics[0] == metrics[1]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--until", default="pairs", choices=STAGES)
    args = parser.parse_args()
    folders = [s for s in STAGES[: STAGES.index(args.until) + 1]]
    a, b = files(args.a, folders), files(args.b, folders)
    print("| folder | files | same name | same bytes | same rows and schema | same footer (wall clock aside) |")
    print("|---|---|---|---|---|---|")
    verdict = set(a) == set(b)
    for folder in folders:
        keys = sorted(k for k in a.keys() & b.keys() if k.split("/")[0] == folder)
        results = [compare(a[k], b[k]) for k in keys]
        missing = len({k for k in a.keys() ^ b.keys() if k.split("/")[0] == folder})
        counts = {field: sum(r[field] for r in results) for field in ("name", "bytes", "rows", "footer")}
        verdict &= counts["rows"] == counts["footer"] == len(results)
        print(f"| {folder} | {len(keys)}{f' (+{missing} unmatched)' if missing else ''} | {counts['name']} | {counts['bytes']} "
              f"| {counts['rows']} | {counts['footer']} |")  # fmt: skip
    print(f"\n{'the same data' if verdict else 'DIFFERENT data'} ({len(a)} files in A, {len(b)} in B)")
    sys.exit(0 if verdict else 1)


if __name__ == "__main__":
    main()
