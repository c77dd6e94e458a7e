"""Benchmark: Prefect's scheduling overhead on a round of N shards of trivial work.

The round is the lyrics stage with `lyrics.shard_size: 1`, so each of `--shards` shards writes
one templated lyric (milliseconds of work): what remains is orchestration. It runs three ways,
each on a fresh round folder, all against one Prefect server on the local PostgreSQL (started
here on a free port, stopped after):

- `deployment`: `alignment-round` registered on a process pool, run with `run_deployment`,
  picked up by a `songpref worker start` process (which starts the flow in its own subprocess);
- `thread runner`: the same flow called in a CLI process (`songpref round run`, PREFECT_API_URL set);
- `no Prefect`: the stage run shard after shard in this process (`run_stage_locally`), the floor.

Reported per way: the stage's own seconds (plan, shards, manifest; from the manifest), shards per
second over them, and the wall time from the request to the finished round. Raw numbers go to
`benchmarks/results/scheduling_overhead.json`.

    python benchmarks/scheduling_overhead.py --shards 1000
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(REPO))


def round_config(shards: int, parallelism: int, rounds: Path) -> dict:
    from pipeline.config import config_from_dict

    raw = {"seed": 11, "lyrics": {"count": shards, "shard_size": 1}, "rounds": {"directory": str(rounds)},
           "orchestration": {"shards": {"parallelism": parallelism, "retries": 0}}}  # fmt: skip
    return config_from_dict(raw).resolved()


def stage_figures(round_dir: Path, wall: float, load: float) -> dict:
    record = json.loads((round_dir / "manifest.json").read_text())["stages"]["lyrics"]
    shards = record["metrics"]["shards_built"]
    return {"shards": shards, "stage_seconds": record["seconds"], "shards_per_second": round(shards / record["seconds"], 1),
            "wall_seconds": round(wall, 1), "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=1000)
    parser.add_argument("--parallelism", type=int, default=2, help="shards at once (threads) in the flow ways")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks/results/scheduling_overhead.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="songpref-sched-bench-"))
    from flows.server import ServerSettings, start_server, stop_server

    settings = ServerSettings(port=free_port(), database_url="postgresql+asyncpg://postgres@127.0.0.1:5432/songpref_prefect_sched_bench",
                              home=work / "server")  # fmt: skip
    info = start_server(settings)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_API_URL": info["api_url"], "PREFECT_HOME": str(work / "client-home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "OMP_NUM_THREADS": "1"}  # fmt: skip
    config = round_config(args.shards, args.parallelism, work / "rounds")
    results = {}
    try:
        # no Prefect: the floor
        from flows.stages import run_stage_locally
        from pipeline.config import RoundConfig
        from pipeline.manifest import open_round
        from pipeline.store import RoundStore

        load, started = os.getloadavg()[0], time.perf_counter()
        store = RoundStore(str(work / "local"))
        open_round(store, RoundConfig.model_validate(config))
        run_stage_locally("lyrics", RoundConfig.model_validate(config), store)
        results["no Prefect (in process, one shard after another)"] = stage_figures(work / "local", time.perf_counter() - started, load)

        # the thread runner, in a CLI process
        config_file = work / "round.json"
        config_file.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
        load, started = os.getloadavg()[0], time.perf_counter()
        subprocess.run([sys.executable, "-m", "songpref", "round", "run", "--config", str(config_file), "--out", str(work / "cli"),
                        "--until", "lyrics"], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        results[f"thread runner, CLI process ({args.parallelism} threads)"] = stage_figures(work / "cli", time.perf_counter() - started, load)

        # the deployment, through a process worker
        results[f"deployment, process worker ({args.parallelism} threads)"] = through_deployment(config, env, work)
    finally:
        stop_server(settings.home)
    entry = {"shards": args.shards, "parallelism": args.parallelism, "cpus": os.cpu_count(),
             "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": results}  # fmt: skip
    print(json.dumps(entry, indent=2))
    history = json.loads(args.results.read_text()) if args.results.is_file() else []
    args.results.write_text(json.dumps([*history, entry], indent=2) + "\n")


def through_deployment(config: dict, env: dict, work: Path) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deployments import register

    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        register(config, "bench-pool", until="lyrics", name="bench")
        worker = subprocess.Popen([sys.executable, "-m", "songpref", "worker", "start", "--pool", "bench-pool"], cwd=REPO,
                                  env={**env, "PREFECT_WORKER_QUERY_SECONDS": "1"}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        try:
            time.sleep(10)  # the worker's start-up, outside the timing
            load, started = os.getloadavg()[0], time.perf_counter()
            run = run_deployment("scheduled-round/bench", timeout=0)
            with get_client(sync_client=True) as client:
                while not (state := client.read_flow_run(run.id).state).is_final():
                    time.sleep(0.5)
            wall = time.perf_counter() - started
            if not state.is_completed():
                raise RuntimeError(f"the deployment's run ended {state.name}: {state.message}")
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
    return stage_figures(work / "rounds" / "bench-0001", wall, load)


if __name__ == "__main__":
    main()
