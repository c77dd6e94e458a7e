"""Compare two round directories file by file: every Parquet shard and dataset of the stages up to
`--until` (default pairs), by name and sha256. Used to show that a refactor leaves a round's
outputs byte-identical (same config, same seed, two versions of songpref).

    .venv/bin/python benchmarks/compare_rounds.py ROUND_A ROUND_B [--until pairs]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from pipeline.stages.names import STAGES


def digests(root: Path, folders: list[str]) -> dict[str, str]:
    """Round-relative path -> sha256 of every Parquet file under the given stage folders."""
    found = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.parquet")):
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--until", default="pairs", choices=STAGES)
    args = parser.parse_args()
    folders = ["scores" if s == "scores" else s for s in STAGES[: STAGES.index(args.until) + 1] if s != "reward_model"]
    folders += ["reward_model"] if STAGES.index(args.until) >= STAGES.index("reward_model") else []
    a, b = digests(args.a, folders), digests(args.b, folders)
    print("| folder | files | identical | differ | only in A | only in B |\n|---|---|---|---|---|---|")
    for folder in folders:
        mine = {k for k in a if k.startswith(folder + "/")}
        theirs = {k for k in b if k.startswith(folder + "/")}
        same = sum(a[k] == b[k] for k in mine & theirs)
        print(f"| {folder} | {len(mine | theirs)} | {same} | {len(mine & theirs) - same} | {len(mine - theirs)} | {len(theirs - mine)} |")
    equal = a == b
    print(f"\n{len(a)} files in A, {len(b)} in B: {'byte-identical' if equal else 'DIFFERENT'}")
    sys.exit(0 if equal else 1)


if __name__ == "__main__":
    main()
