"""Benchmark: where lyrics DPO moves the likelihood of songs it never trained on.

`dpo_data_scaling.py` trains lyrics DPO variants on oracle-labelled pairs and measures each model's
symbolic WER on fresh prompts. This script reads those runs' result files, rebuilds the same pairs
(the same training prompts, candidates and gap, so the same songs), and for the pairs a run did not
train on measures, per model, the mean change from base of log p(chosen) and log p(rejected), per
stream and for the mixed stream's end-of-song token. It then relates the change on the held-out
chosen songs to the model's WER change (Spearman) and plots one against the other.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/dpo_displacement.py RESULT.json [RESULT.json ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dpo_data_scaling import training_songs, wer_pairs  # noqa: E402

from alignment.policy import load_policy, policy_folder  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.models.registry import load_song_model  # noqa: E402
from pipeline.models.tiny.model import STREAMS  # noqa: E402
from pipeline.models.tiny.preference_text import TokenLayout, completion_text  # noqa: E402
from results_file import load_span, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "dpo_displacement.json"
PLOT = ROOT / "docs" / "dpo_displacement.png"
ZOOM_FROM = -15  # the right panel's left edge, nats
DATA_KEYS = ("train_prompts", "candidates", "gap", "per_prompt")  # with the config's text: what decides a run's pairs


def held_out_pairs(config, settings: dict, scratch: Path) -> tuple[list[dict], list[tuple[int, dict, dict]]]:
    """The run's conditions and its pairs as token dicts (prompt index, chosen, rejected), in its order."""
    layout = TokenLayout.from_config(load_policy("tiny", config.model.options, None)[0].config)
    conditions, songs = training_songs(config, int(settings["train_prompts"]), int(settings["candidates"]), scratch)
    tokens = {completion_text(row.tokens): row.tokens for row in songs.itertuples()}  # a pair row holds texts
    rows = wer_pairs(conditions, songs, layout, float(settings["gap"]), int(settings["per_prompt"]))
    pairs = [(r["prompt_index"], tokens[r["chosen"]], tokens[r["rejected"]]) for r in rows]
    return conditions, pairs


def likelihoods(folder: Path, config, conditions: list[dict], pairs: list) -> pd.DataFrame:
    """Per pair: log p of chosen and rejected under the model at `folder`, per stream and the end-of-song token."""
    model = load_song_model("tiny", {**config.model.options, "checkpoint": str(folder)}).model.eval()
    rows = []
    with torch.no_grad():
        for index, chosen, rejected in pairs:
            lp = model.stream_logprobs([conditions[index]] * 2, [chosen, rejected], per_token=True)
            row = {}
            for k, (side, song) in enumerate((("chosen", chosen), ("rejected", rejected))):
                row |= {f"{side}_{s}": float(lp[s][k].sum()) for s in STREAMS}
                row[f"{side}_eos"] = float(lp["mixed"][k, len(song["mixed"])])
                row[f"{side}_total"] = sum(row[f"{side}_{s}"] for s in STREAMS)
            rows.append(row)
    return pd.DataFrame(rows)


def markdown(rows: list[dict]) -> str:
    lines = ["| run:variant | held-out pair accuracy | Δ log p held-out chosen | Δ log p held-out rejected | "
             "symbolic WER ↓ (Δ vs base, 95 %) | length (Δ frames) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in sorted(rows, key=lambda r: -r["held_out_chosen_total"]):
        accuracy = "—" if r["held_out_accuracy"] is None else f"{r['held_out_accuracy']:.2f}"
        lines.append(f"| {r['name']} | {accuracy} | {r['held_out_chosen_total']:+.1f} | {r['held_out_rejected_total']:+.1f} | "
                     f"{r['wer_diff']:+.1f} [{r['wer_low']:+.1f}, {r['wer_high']:+.1f}] | {r['length_diff']:+.1f} |")  # fmt: skip
    return "\n".join(lines)


def plot(rows: list[dict], out: Path) -> None:
    """Left: every model (symlog x); right: the models that moved the held-out chosen songs least, zoomed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zoom = lambda r: r["held_out_chosen_total"] > ZOOM_FROM  # noqa: E731
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, shown in ((axes[0], rows), (axes[1], [r for r in rows if zoom(r)])):
        ordered = sorted(shown, key=lambda r: r["wer_diff"])
        for i, r in enumerate(ordered):
            x, y = r["held_out_chosen_total"], r["wer_diff"]
            ax.errorbar(x, y, yerr=[[y - r["wer_low"]], [r["wer_high"] - y]], fmt="o", color="tab:blue", capsize=3)
            if ax is axes[1] or not zoom(r):  # each label once; left and right in turn, so neighbours stay legible
                ax.annotate(r["name"], (x, y), textcoords="offset points", xytext=(7 if i % 2 else -7, 2),
                            ha="left" if i % 2 else "right", fontsize=7)  # fmt: skip
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_ylabel("Δ symbolic WER vs base on fresh prompts, points (95 %)")
    axes[0].set_xscale("symlog", linthresh=10)
    axes[0].set_xlabel("Δ log p(held-out chosen songs) vs base, nats (symlog)")
    axes[0].set_title("every variant")
    axes[1].set_xlabel("Δ log p(held-out chosen songs) vs base, nats")
    axes[1].set_title(f"those above {ZOOM_FROM} nats (unlabelled on the left)")
    fig.suptitle("Lyrics DPO variants: none raises the likelihood of unseen prompts' chosen songs; "
                 "the further it falls, the worse they sing")  # fmt: skip
    fig.tight_layout()
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="result files of dpo_data_scaling.py runs")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/dpo-displacement"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args()
    load, started = os.getloadavg(), time.perf_counter()
    runs = [json.loads(p.read_text()) for p in args.results]
    datasets = {(Path(r["settings"]["config"]).read_text(), *(r["settings"][k] for k in DATA_KEYS)) for r in runs}
    if len(datasets) != 1:
        parser.error(f"the runs were trained on different pairs ({len(datasets)} settings of the config and "
                     f"{', '.join(DATA_KEYS)}); compare runs of one dataset")  # fmt: skip
    settings = runs[0]["settings"]
    config = load_config(Path(settings["config"]))
    conditions, pairs = held_out_pairs(config, settings, args.scratch / "train")
    base = likelihoods(policy_folder("tiny", config.model.options, None), config, conditions, pairs)
    rows = []
    for path, run in zip(args.results, runs):
        trained = int(run["settings"]["pairs"])  # each model trained on the first `trained` pairs
        table = pd.DataFrame(run["table"]).set_index(["model", "metric"])
        for name in run["runs"]:
            folder = Path(run["settings"]["scratch"]) / name.replace("/", "-") / "model"
            delta = (likelihoods(folder, config, conditions, pairs) - base).iloc[trained:]
            wer, length = table.loc[(name, "symbolic_wer")], table.loc[(name, "frames")]
            rows.append({"name": f"{path.stem}:{name.split('/')[0]}", "model": str(folder), "held_out_pairs": len(delta),
                         "variant": run["settings"]["variant"], **run["runs"][name],
                         **{f"held_out_{k}": round(float(v), 2) for k, v in delta.mean().items()},
                         "wer_diff": float(wer["diff"]), "wer_low": float(wer["low"]), "wer_high": float(wer["high"]),
                         "length_diff": float(length["diff"])})  # fmt: skip
            print(f"  {rows[-1]['name']}: Δ log p chosen {rows[-1]['held_out_chosen_total']:+.1f}, rejected "
                  f"{rows[-1]['held_out_rejected_total']:+.1f}; Δ WER {rows[-1]['wer_diff']:+.1f}", flush=True)  # fmt: skip
    summary = {"models": len(rows), "raise_held_out_chosen": sum(r["held_out_chosen_total"] > 0 for r in rows)}
    wer = [r["wer_diff"] for r in rows]
    for label, values in (("chosen_logp", [r["held_out_chosen_total"] for r in rows]),
                          ("pair_accuracy", [r["held_out_accuracy"] for r in rows]),
                          ("margin", [r["held_out_chosen_total"] - r["held_out_rejected_total"] for r in rows])):  # fmt: skip
        rho = spearmanr(values, wer)  # which held-out reading would have told the variants apart
        summary[f"spearman_{label}_vs_wer"] = [round(float(rho.statistic), 3), float(rho.pvalue)]
    plot(rows, args.plot)
    report = {"settings": settings, "summary": summary, "rows": rows, "wall_seconds": round(time.perf_counter() - started, 1),
              "load": load_span(load)}  # fmt: skip
    print(json.dumps(summary))
    print(markdown(rows))
    write_results(args.out, report)


if __name__ == "__main__":
    main()
