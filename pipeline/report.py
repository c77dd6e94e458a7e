"""The round's report.md: every stage's status, rows and build time, the sweep's ablation, then the
ablation stage's tables.

Rewritten whenever a stage finishes (runner.finish_stage), from the manifest alone, so it never
shows a stage as running once the stage is done.
"""

from __future__ import annotations

from pipeline.manifest import in_stage_order, read_manifest
from pipeline.store import RoundStore

REPORT = "report.md"


def round_report(manifest: dict) -> str:
    lines = [f"# Round {manifest['config']['name']}", "",
             f"Config hash {manifest['config_hash'][:12]}, seed {manifest['seed']}, git {str(manifest.get('git_sha'))[:12]}.", "",
             "| stage | status | rows | seconds |", "|---|---|---|---|"]  # fmt: skip
    for name, record in in_stage_order(manifest["stages"]).items():  # manifest.json's keys are sorted by name
        lines.append(f"| {name} | {record.get('status')} | {record.get('rows', '')} | {record.get('seconds', '')} |")
    sweep = manifest["stages"].get("sweep", {})
    if sweep.get("status") == "done" and "ablation" in sweep.get("metrics", {}):
        lines += ["", "## Ablation (held-out prompts)", "", sweep["metrics"]["ablation"], "",
                  f"Chosen DNI point: **{sweep['metrics']['chosen']}** (see sweep/report.md)."]  # fmt: skip
    ablation = manifest["stages"].get("ablation", {})
    if ablation.get("status") == "done" and "report" in ablation.get("metrics", {}):
        lines += ["", "# Ablation on fresh held-out songs (ablation/oracle.md)", "", ablation["metrics"]["report"]]
    return "\n".join(lines) + "\n"


def write_round_report(store: RoundStore) -> None:
    store.write_bytes(REPORT, round_report(read_manifest(store)).encode("utf-8"))
