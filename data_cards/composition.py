"""What is in a dataset, read from its Parquet rows: counts, score summaries, plots, known skews.

One function per card kind returns the `composition` part of the card's context and the plots
to write beside the card (file name -> PNG bytes). Skews are measured, not asserted: a share is
reported as a skew when one value holds more than SKEW_SHARE of the rows.
"""

from __future__ import annotations

from collections import Counter

import math

from data_cards.datasets import Dataset, read_rows, score_kind
from data_cards.plots import histogram_png, panels_png, summary
from pipeline.preferences import preferences
from pipeline.store import RoundStore

SKEW_SHARE = 0.5
PAIR_PLOT = "scores.png"


def counts(values) -> list[dict]:
    """Value counts, largest first then by value, with shares."""
    tally = Counter("null" if v is None else str(v) for v in values)
    total = sum(tally.values()) or 1
    return [{"value": v, "count": n, "share": f"{n / total:.1%}"} for v, n in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))]


def skews_in(name: str, values) -> list[str]:
    rows = counts(values)
    total = sum(r["count"] for r in rows)
    if len(rows) == 1 and total:
        return [f"every row has {name} '{rows[0]['value']}'"]
    return [f"{name} '{r['value']}' holds {r['share']} of rows" for r in rows[:1] if total and r["count"] / total > SKEW_SHARE]


def lyrics(store: RoundStore, ds: Dataset, record: dict) -> tuple[dict, dict, list[str]]:
    table = read_rows(store, ds, ["language", "emotion", "theme", "valid", "errors"]).to_pydict()
    metrics = record.get("metrics") or {}
    comp = {
        "valid": sum(table["valid"]), "invalid": len(table["valid"]) - sum(table["valid"]),
        "duplicates": metrics.get("duplicates", 0),
        "languages": counts(table["language"]), "emotions": counts(table["emotion"]),
        "errors": counts(e.split(":", 1)[0] for errs in table["errors"] for e in errs),
    }  # fmt: skip
    skews = skews_in("language", table["language"]) + skews_in("emotion", table["emotion"])
    if comp["invalid"]:
        skews.append(f"{comp['invalid']} of {len(table['valid'])} lyrics are invalid and get no condition (see the validation errors)")
    return comp, {}, skews


def conditions(store: RoundStore, ds: Dataset, record: dict) -> tuple[dict, dict, list[str]]:
    table = read_rows(store, ds, ["language", "genre", "gender", "tempo", "prompt_audio_path", "auto_prompt_audio_type"]).to_pydict()
    metrics = record.get("metrics") or {}
    comp = {
        "skipped_invalid": metrics.get("skipped_invalid", 0), "skipped_duplicate": metrics.get("skipped_duplicate", 0),
        "with_prompt_clip": sum(p is not None for p in table["prompt_audio_path"]),
        "genres": counts(table["genre"]), "genders": counts(table["gender"]), "tempos": counts(table["tempo"]),
        "auto_prompts": counts(table["auto_prompt_audio_type"]),
    }  # fmt: skip
    skews = skews_in("genre", table["genre"]) + skews_in("gender", table["gender"]) + skews_in("tempo", table["tempo"])
    return comp, {}, skews


def candidates(store: RoundStore, ds: Dataset, record: dict) -> tuple[dict, dict, list[str]]:
    table = read_rows(store, ds, ["condition_id", "duration_seconds", "error"]).to_pydict()
    failed = [e for e in table["error"] if e]
    per_condition = Counter(table["condition_id"])
    comp = {
        "conditions": len(per_condition),
        "per_condition": sorted(set(per_condition.values())),
        "rendered": len(table["error"]) - len(failed),
        "failed": len(failed),
        "failure_reasons": counts(e.split(":", 1)[0] for e in failed),
        "duration": summary([d for d, e in zip(table["duration_seconds"], table["error"]) if not e]),
    }
    skews = [f"{len(failed)} of {len(table['error'])} candidates failed to render and have no audio"] if failed else []
    return comp, {}, skews


def scores(store: RoundStore, ds: Dataset, record: dict) -> tuple[dict, dict, list[str]]:
    kind = score_kind(ds.name)
    column, meaning, plot = kind.column, kind.meaning, f"{kind.column}_hist.png"
    table = read_rows(store, ds, [column, "error"]).to_pydict()
    values = table[column]
    failed = [e for e in table["error"] if e]
    comp = {
        "column": column, "meaning": meaning, "summary": summary(values), "failed": len(failed),
        "failure_reasons": counts(e.split(":", 1)[0] for e in failed), "plot": plot,
    }  # fmt: skip
    plots = {plot: histogram_png({column: values}, f"{ds.name}: {column}", meaning)}
    skews = [f"{len(failed)} of {len(values)} candidates have no {column} (scoring failed)"] if failed else []
    skews += kind.skews([v for v in values if v is not None and math.isfinite(v)])
    return comp, plots, skews


def pairs(store: RoundStore, ds: Dataset, record: dict) -> tuple[dict, dict, list[str]]:
    strategy = ds.name.split("/", 1)[1]
    every = (record.get("metrics") or {}).get("strategies") or {}
    info = every.get(strategy)
    if not info:
        raise ValueError(f"manifest.json: stages.pairs.metrics.strategies has no entry for '{strategy}'")
    table = read_rows(store, ds, ["prompt_id", "chosen_id", "rejected_id", "chosen_score", "rejected_score", "gap",
                                  "genre", "language", "split", "strategy"]).to_pydict()  # fmt: skip
    # The joint strategy's rows keep the part that chose them; scores of different parts are on different scales.
    parts = {part: {col: [v for v, p in zip(table[col], table["strategy"]) if p == part] for col in ("chosen_score", "rejected_score", "gap")}
             for part in sorted(set(table["strategy"]))}  # fmt: skip
    uses = Counter(table["chosen_id"] + table["rejected_id"])
    comp = {
        "strategy": strategy,
        "rule": info.get("rule", "not recorded"),
        "counts": {k: info.get(k, 0) for k in ("pairs", "train", "test", "prompts", "candidates_in")},
        "dropped": dict(sorted((info.get("dropped") or {}).items())),
        "after_each_rule": [{"part": part, "rule": rule, "pairs": n} for part, rules in sorted((info.get("after_each_rule") or {}).items())
                            for rule, n in rules.items()],  # fmt: skip
        "by_part": [{"part": part, **{k: summary(v) for k, v in cols.items()}} for part, cols in parts.items()],
        "genres": counts(table["genre"]), "languages": counts(table["language"]), "splits": counts(table["split"]),
        "max_candidate_uses": max(uses.values(), default=0),
        # The round's other rules too, empty ones included: a reviewer compares strategies side by side.
        "all_strategies": [{"strategy": name, "status": every[name].get("status", "not recorded"), "pairs": every[name].get("pairs", 0),
                            "rule": every[name].get("rule", "not recorded")} for name in sorted(every)],
        "plot": PAIR_PLOT,
    }  # fmt: skip
    labels = {name: p.score_label for name, p in preferences().items()}
    panels = [(f"pairs/{strategy}: {part}", labels.get(part, f"{part} score"),
               {"chosen": cols["chosen_score"], "rejected": cols["rejected_score"]}) for part, cols in parts.items()]  # fmt: skip
    plots = {PAIR_PLOT: panels_png(panels or [(f"pairs/{strategy}", "score", {})])}
    skews = skews_in("genre", table["genre"]) + skews_in("language", table["language"])
    if table["split"] and "test" not in table["split"]:
        skews.append("no test split: every prompt landed in train")
    return comp, plots, skews


BY_KIND = {"lyrics": lyrics, "conditions": conditions, "candidates": candidates, "scores": scores, "pairs": pairs}
