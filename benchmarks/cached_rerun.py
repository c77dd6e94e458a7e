"""Benchmark: rerun a finished round whose every shard is built (`make round` a second time).

Times the real CLI (`songpref round run --config C --out ROUND`) `--repeat` times with Prefect's
temporary server as the default, then (with `--server`) against a running Prefect server on the
local PostgreSQL started by `songpref server start`. Checks after each run that no shard was
built, that every stage kept the `seconds` of the run that built it, and that report.md shows
no stage running. With `--code DIR` the same runs use another checkout's code (e.g. a copy of
main, on a copy of the round: that code overwrites the stages' seconds).

    python benchmarks/cached_rerun.py --round rounds/tiny --server
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rerun(round_dir: Path, config: Path, code: Path, env: dict, until: str | None) -> dict:
    before = json.loads((round_dir / "manifest.json").read_text())["stages"]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "songpref", "round", "run", "--config", str(config), "--out", str(round_dir),
                    *(["--until", until] if until else [])],
                   cwd=code, env={**env, "PYTHONPATH": str(code)}, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    seconds = time.perf_counter() - started
    after = json.loads((round_dir / "manifest.json").read_text())["stages"]
    report = (round_dir / "report.md").read_text(encoding="utf-8")
    return {
        "wall_seconds": round(seconds, 2),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "shards_built": sum(r["metrics"].get("shards_built", 0) for r in after.values()),
        "stage_seconds_kept": all(after[n].get("seconds") == before[n].get("seconds") for n in before),
        "report_shows_running": "| running |" in report,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--round", type=Path, required=True, help="a finished round directory")
    parser.add_argument("--config", type=Path, default=REPO / "configs/tiny.yaml")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--until", default=None, help="last stage rerun (default: all)")
    parser.add_argument("--code", type=Path, default=REPO, help="the checkout whose code runs (default: this one)")
    parser.add_argument("--server", action="store_true", help="also time reruns against a running server on PostgreSQL")
    parser.add_argument("--label", default="this branch")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks/results/cached_rerun.json")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=tempfile.mkdtemp(prefix="songpref-bench-home-"), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    config, round_dir = args.config.resolve(), args.round.resolve()
    results = {"temporary server": [rerun(round_dir, config, args.code, env, args.until) for _ in range(args.repeat)]}
    if args.server:
        from flows.server import ServerSettings, start_server, stop_server

        with socket.socket() as sock:  # a free port: never one another run may hold
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        settings = ServerSettings(port=port, database_url="postgresql+asyncpg://postgres@127.0.0.1:5432/songpref_prefect_bench",
                                  home=Path(tempfile.mkdtemp(prefix="songpref-bench-server-")))  # fmt: skip
        info = start_server(settings)
        try:
            served = {**env, "PREFECT_API_URL": info["api_url"]}
            results["running server (PostgreSQL)"] = [rerun(round_dir, config, args.code, served, args.until) for _ in range(args.repeat)]
        finally:
            stop_server(settings.home)
    entry = {"label": args.label, "round": str(round_dir), "until": args.until, "cpus": os.cpu_count(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "runs": results}  # fmt: skip
    print(json.dumps(entry, indent=2))
    history = json.loads(args.results.read_text()) if args.results.is_file() else []
    args.results.write_text(json.dumps([*history, entry], indent=2) + "\n")


if __name__ == "__main__":
    main()
