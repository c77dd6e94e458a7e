"""Benchmark: one round up to `--until` with the thread runner and with prefect-ray's RayTaskRunner
on a local Ray head (started here, stopped by its pid): wall time of each and whether every output
file (shards, audio, models) is byte-identical.

    python benchmarks/ray_vs_threads.py --until pairs --set lyrics.count=8
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")


def files(root: Path) -> dict[str, str]:
    """sha256 of every output file (the manifest and reports, which hold times and paths, aside)."""
    skip = {"manifest.json", "report.md"}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in skip and "rankings" not in p.parts}  # fmt: skip


def run(out: Path, config: Path, until: str, sets: list[str], env: dict) -> float:
    command = [sys.executable, "-m", "songpref", "round", "run", "--config", str(config), "--out", str(out), "--until", until]
    command += [f"--set={s}" for s in sets]
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return round(time.perf_counter() - started, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs/tiny.yaml")
    parser.add_argument("--until", default="pairs")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks/results/ray_vs_threads.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="songpref-ray-bench-"))
    env = {**{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}, "PYTHONPATH": str(REPO),
           "PREFECT_HOME": str(work / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    head = subprocess.Popen([str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                             "--include-dashboard=false", "--disable-usage-stats", "--block"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        time.sleep(15)  # the head's start-up, outside both timings
        load = os.getloadavg()[0]
        threads = run(work / "threads", args.config, args.until, args.sets, env)
        ray = run(work / "ray", args.config, args.until,
                  [*args.sets, "orchestration.task_runner=ray", f"orchestration.ray.address=127.0.0.1:{port}"], env)  # fmt: skip
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        time.sleep(5)
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()
    a, b = files(work / "threads"), files(work / "ray")
    result = {"until": args.until, "sets": args.sets, "cpus": os.cpu_count(), "load_before": round(load, 2),
              "load_after": round(os.getloadavg()[0], 2), "thread_seconds": threads, "ray_seconds": ray, "files": len(a),
              "identical": a == b, "differing": sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))[:20],
              "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    print(json.dumps(result, indent=2))
    history = json.loads(args.results.read_text()) if args.results.is_file() else []
    args.results.write_text(json.dumps([*history, result], indent=2) + "\n")


if __name__ == "__main__":
    main()
