"""Render and write data cards: a Hugging Face YAML header plus Datasheets-for-Datasets sections.

`write_stage_card(store, stage)` writes the cards of the datasets one finished stage wrote;
`write_round_cards(store)` rewrites every card of a round. Cards and plots go through the
RoundStore's atomic writes, so local and fsspec rounds behave alike.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from data_cards import collectors, composition
from data_cards.datasets import (Dataset, hf_features, read_rows, round_datasets, schema_of, score_kind, size_category, split_bytes,
                                 split_sizes, stage_datasets)
from pipeline.manifest import read_manifest
from pipeline.scoring.registry import score_kinds
from pipeline.store import RoundStore

TEMPLATES = Path(__file__).with_name("templates")
# Datasets of the stages before scoring; a score table's come from its score kind.
TASKS = {"lyrics": ["text-generation"], "conditions": ["text-to-audio"], "candidates": ["text-to-audio"]}
TITLES = {
    "lyrics": "song lyrics",
    "conditions": "song conditions (description + audio prompt)",
    "candidates": "sampled candidate songs",
}


def _title(name: str) -> str:
    kind = score_kind(name)
    return kind.title if kind else TITLES.get(name) or f"{name.split('/', 1)[1]} preference pairs"


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)  # fmt: skip
    env.filters["cell"] = lambda value: str(value).replace("|", "\\|").replace("\n", " ")  # safe in a table cell
    return env


def build_context(store: RoundStore, manifest: dict, ds: Dataset) -> tuple[dict, dict]:
    """Everything the card's template reads, and the plots to write beside it."""
    config = manifest["config"]
    done = collectors.records(manifest, ds.name)
    record = manifest["stages"][ds.stage]
    comp, plots, skews = composition.BY_KIND[ds.kind](store, ds, record)
    annotators = collectors.annotators(store, config, done)
    facts = _dataset_facts(store, manifest, ds)
    skews = _round_skews(config, done, facts, annotators) + skews
    context = {
        "dataset": facts,
        "provenance": collectors.provenance(manifest),
        "stage": collectors.stage_summary(record),
        "lyrics": collectors.lyrics_generator(config),
        "song_model": collectors.song_model(config, done["candidates"]) if "candidates" in done else None,
        "scorers": {k.stage: collectors.scorer(done[k.stage], store.root) for k in score_kinds().values() if k.stage in done},
        "pairs_options": collectors.flatten((record.get("metrics") or {}).get("options") or config.get("pairs") or {}) if ds.kind == "pairs" else [],
        "annotators": annotators,
        "licences": collectors.licences(config, done),
        "composition": comp,
        "skews": skews,
        "data_licence": collectors.data_licence(config),
    }
    return context, plots


def _round_skews(config: dict, done: dict, facts: dict, annotators: dict | None) -> list[str]:
    """Skews that come from how the round was made rather than from this dataset's columns."""
    skews = ["the dataset has no rows: everything upstream was filtered out (see Composition)"] if not facts["rows"] else []
    if annotators and annotators["simulated"]:
        skews.append("rankings come from a simulated crowd, not people: reward scores reflect the simulator's hidden utility")
    if "scores/per" in done and "zh" in facts["languages"]:
        skews.append("Chinese PER is inflated: espeak-ng reads many Mandarin syllables through its English fallback (see pipeline/scoring/per.py)")
    if "candidates" in done and config["model"]["backend"] == "tiny":
        skews.append("the tiny policy knows only the rule-based composer's styles and sings English template words")
    return skews


def _dataset_facts(store: RoundStore, manifest: dict, ds: Dataset) -> dict:
    splits = split_sizes(store, ds)
    return {
        "languages": _languages(store, manifest, ds), "bytes": split_bytes(store, ds),
        "name": ds.name, "folder": ds.folder, "kind": ds.kind, "splits": splits, "rows": sum(splits.values()),
        "title": _title(ds.name),
        "features": hf_features(schema_of(store, ds)), "data_files": ds.data_files,
    }  # fmt: skip


def yaml_header(ds: Dataset, context: dict) -> dict:
    facts, annotators = context["dataset"], context["annotators"]
    languages = facts["languages"]
    # Only data that depends on the ranking campaign carries its label.
    uses_rankings = annotators is not None and (ds.name == "scores/reward" or ds.kind == "pairs")
    tags = ["songpref", "synthetic", "music", ds.kind] + (["preference", "dpo"] if ds.kind == "pairs" else [])
    tags += ["simulated"] if uses_rankings and annotators["simulated"] else []
    creators = ["machine-generated"] + (["crowdsourced"] if uses_rankings and not annotators["simulated"] else [])
    return {
        "pretty_name": f"songpref {facts['title']} ({context['provenance']['round_name']})",
        "license": context["data_licence"],
        "language": languages,
        "multilinguality": ["multilingual" if len(languages) > 1 else "monolingual"],
        "tags": tags,
        "annotations_creators": creators,
        "language_creators": ["machine-generated"],
        "source_datasets": ["original"],
        "size_categories": [size_category(facts["rows"])],
        "task_categories": list(score_kind(ds.name).tasks) if score_kind(ds.name) else TASKS.get(ds.name, ["text-to-audio"]),
        "configs": [{"config_name": "default",
                     "data_files": [{"split": split, "path": files} for split, files in ds.data_files.items()]}],
        "dataset_info": {"config_name": "default", "features": facts["features"],
                         "splits": [{"name": split, "num_bytes": facts["bytes"][split], "num_examples": n}
                                    for split, n in facts["splits"].items()]},
    }  # fmt: skip


def _languages(store: RoundStore, manifest: dict, ds: Dataset) -> list[str]:
    """Languages of the rows: the dataset's own column, else its conditions' (candidates, scores)."""
    source = ds
    if "language" not in schema_of(store, ds).names or ds.name == "scores/per":  # per's column is the ASR's guess
        found = stage_datasets(store, manifest, "conditions")
        if not found:
            return sorted(manifest["config"]["lyrics"]["languages"])
        source = found[0]
    values = read_rows(store, source, ["language"]).column("language").to_pylist()
    return sorted({v for v in values if v}) or sorted(manifest["config"]["lyrics"]["languages"])


def render_card(store: RoundStore, manifest: dict, ds: Dataset) -> tuple[str, dict]:
    """The card's text and its plots (file name -> bytes)."""
    context, plots = build_context(store, manifest, ds)
    header = yaml.safe_dump(yaml_header(ds, context), sort_keys=False, allow_unicode=True, width=1000)
    body = _environment().get_template(f"{ds.kind}.md.j2").render(**context)
    body = re.sub(r"\n{3,}", "\n\n", body)  # blocks and macros leave runs of blank lines
    return f"---\n{header}---\n\n{body}", plots


def write_card(store: RoundStore, manifest: dict, ds: Dataset) -> str:
    text, plots = render_card(store, manifest, ds)
    for name, data in sorted(plots.items()):
        store.write_bytes(posixpath.join(ds.folder, name), data)  # plots first: the card links them
    store.write_bytes(ds.card_path, text.encode("utf-8"))
    return ds.card_path


def write_stage_card(store: RoundStore, stage: str) -> list[str]:
    """Write the cards of the datasets a finished stage wrote; returns their round-relative paths."""
    manifest = read_manifest(store)
    return [write_card(store, manifest, ds) for ds in stage_datasets(store, manifest, stage)]


def write_round_cards(store: RoundStore) -> list[str]:
    """(Re)write every card of a round from its manifest and data."""
    manifest = read_manifest(store)
    return [write_card(store, manifest, ds) for ds in round_datasets(store, manifest)]
