"""The round's report.md: every stage's status, rows, failed items and build time (with the first
failure's reason, so a stage that lost many items is seen), each trained DPO strategy's held-out
readings, the sweep's ablation, then the ablation stage's tables.

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
             "| stage | status | rows | failed | seconds |", "|---|---|---|---|---|"]  # fmt: skip
    stages = in_stage_order(manifest["stages"])  # manifest.json's keys are sorted by name
    for name, record in stages.items():
        failed = record.get("metrics", {}).get("failed", "")
        lines.append(f"| {name} | {record.get('status')} | {record.get('rows', '')} | {failed} | {record.get('seconds', '')} |")
    lines += failure_lines(stages)
    lines += dpo_section(manifest["stages"])
    sweep = manifest["stages"].get("sweep", {})
    if sweep.get("status") == "done" and "ablation" in sweep.get("metrics", {}):
        lines += ["", "## Ablation (held-out prompts)", "", sweep["metrics"]["ablation"], "",
                  f"Chosen DNI point: **{sweep['metrics']['chosen']}** (see sweep/report.md)."]  # fmt: skip
    ablation = manifest["stages"].get("ablation", {})
    if ablation.get("status") == "done" and "report" in ablation.get("metrics", {}):
        lines += ["", "# Ablation on fresh held-out songs (ablation/oracle.md)", "", ablation["metrics"]["report"]]
    return "\n".join(lines) + "\n"


def failure_lines(stages: dict) -> list[str]:
    """A line per stage with failed items: how many, and the first one's reason."""
    lines = []
    for name, record in stages.items():
        metrics = record.get("metrics", {})
        if metrics.get("failed") and metrics.get("failures"):
            first = metrics["failures"][0]
            lines.append(f"- {name}: {metrics['failed']} failed, e.g. {first.get('candidate_id')}: {first.get('error')}")
    return ["", "Failed items (recorded in their rows; the stage went on):", "", *lines] if lines else []


def dpo_section(stages: dict) -> list[str]:
    """One row per trained DPO strategy: its pairs, and how it treats the held-out pairs' songs."""
    trained = {name.split("/", 1)[1]: record["metrics"] for name, record in stages.items()
               if name.startswith("dpo/") and record.get("metrics", {}).get("status") == "trained"}  # fmt: skip
    if not trained:
        return []

    def number(value, form: str) -> str:
        return "—" if value is None else format(value, form)

    lines = ["", "## DPO (held-out pairs)", "",
             "| strategy | pairs (train / held-out) | held-out pair accuracy | Δ log p, held-out chosen | "
             "Δ log p, held-out rejected | KL (nats) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, m in trained.items():
        pairs = m.get("pairs") or {}
        lines.append(f"| {name} | {pairs.get('train', '—')} / {pairs.get('test', '—')} | "
                     f"{number(m.get('eval_rewards/accuracies'), '.2f')} | {number(m.get('held_out_chosen_logp_change'), '+.1f')} | "
                     f"{number(m.get('held_out_rejected_logp_change'), '+.1f')} | {number(m.get('kl'), '.1f')} |")  # fmt: skip
    return lines + ["", "Δ log p: the trained policy's log-likelihood of a song minus the reference's, over the streams DPO "
                    "compares. A falling held-out chosen likelihood means the policy moves away from songs the "
                    "preference prefers: on one lyrics dataset it flagged the variants that sang worse, which the pair "
                    "accuracy did not; with more prompts a fall also went with better singing (README, alignment "
                    "science)."]  # fmt: skip


def write_round_report(store: RoundStore) -> None:
    store.write_bytes(REPORT, round_report(read_manifest(store)).encode("utf-8"))
