"""Benchmark: the annotation service's property run, longer than the test suite's.

Runs tests/test_annotate_properties.py (requests generated from the app's OpenAPI schema by
schemathesis, valid and invalid, plus Hypothesis-generated ranking files of every upload format)
on SQLite and on the local PostgreSQL with `--examples` examples per route per backend, and
writes benchmarks/results/annotate_properties.json: the answers per route and status, the
failures (any 5xx, oversized answer or write left behind by a 4xx fails a test), the run time
and the load average.

    PYTHONPATH=. .venv/bin/python benchmarks/annotate_properties.py [--examples 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "annotate_properties.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300, help="Hypothesis examples per route per backend.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "answers.json"
        env = {**os.environ, "SONGPREF_PROPERTY_EXAMPLES": str(args.examples), "SONGPREF_PROPERTY_REPORT": str(report)}
        load_before, started = os.getloadavg(), time.monotonic()
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_annotate_properties.py"],
                             cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
        seconds = time.monotonic() - started
        answers = json.loads(report.read_text()) if report.exists() else {}
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    result = {
        "examples_per_route_per_backend": args.examples,
        "seconds": round(seconds, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "pytest": summary,
        "failures": [line for line in run.stdout.splitlines() if line.startswith("FAILED")],
        "requests": sum(answers.values()),
        "server_errors": sum(n for key, n in answers.items() if key.rsplit(" ", 1)[1].startswith("5")),
        "answers": answers,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "answers"}, indent=1))
    sys.exit(run.returncode)


if __name__ == "__main__":
    main()
