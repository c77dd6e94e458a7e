"""What a card says about how its data was made, read from the round's manifest and model folders.

Each card describes only the stages upstream of its dataset, so a card written right after its
stage and one rewritten at the end of the round are the same bytes. Timestamps, wall times and
the round's own path are left out for the same reason: they change between identical reruns.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from data_cards.licences import PROJECT_LICENCE, licence_row
from pipeline.scoring.registry import score_kinds
from pipeline.store import RoundStore

# The manifest records each card reads, by the card's dataset (pairs read every one of them).
UPSTREAM = {"lyrics": ("lyrics",), "conditions": ("lyrics", "conditions"), "candidates": ("lyrics", "conditions", "candidates")}
TINY_CHECKPOINT = Path(__file__).resolve().parents[1] / "pipeline" / "models" / "tiny" / "checkpoint"
REWARD_EVAL = "reward_model/model/eval.json"
MAX_LISTED = 8  # longer lists (e.g. a scorer's unknown words) show their length instead


def upstream(dataset_name: str) -> tuple[str, ...]:
    """A score table reads its kind's own records (a kind trained in the round, its training too);
    pairs read every score table."""
    kinds = score_kinds().values()
    trained = lambda k: ("reward_model",) if k.trained_in_round else ()  # noqa: E731
    for kind in kinds:
        if dataset_name == kind.stage:
            return (*UPSTREAM["candidates"], *trained(kind), kind.stage)
    every = [k.stage for k in kinds if not k.trained_in_round] + ["reward_model"] + [k.stage for k in kinds if k.trained_in_round]
    return UPSTREAM.get(dataset_name, (*UPSTREAM["candidates"], *every, "pairs"))


def records(manifest: dict, dataset_name: str) -> dict:
    """The upstream stage records that are done, by stage name."""
    stages = manifest.get("stages", {})
    return {name: stages[name] for name in upstream(dataset_name) if stages.get(name, {}).get("status") == "done"}


def provenance(manifest: dict) -> dict:
    missing = [key for key in ("config", "config_hash") if not manifest.get(key)]
    if missing:
        raise ValueError(f"manifest.json: missing {', '.join(missing)}; cannot describe the round")
    return {
        "round_name": manifest["config"].get("name", "round"),
        "config_hash": manifest["config_hash"],
        "seed": manifest.get("seed"),
        "git_sha": manifest.get("git_sha") or "not recorded (not run from a git checkout)",
        "versions": {k: (v or "not installed") for k, v in sorted((manifest.get("versions") or {}).items())},
    }


def stage_summary(record: dict) -> dict:
    """A record's row count, shard count and scalar metrics (wall-clock ones left out)."""
    metrics = record.get("metrics") or {}
    scalar = {k: v for k, v in sorted(metrics.items())
              if isinstance(v, (int, float, str, bool)) and not _run_dependent(k)}  # fmt: skip
    return {"rows": record.get("rows", 0), "shards": len(record.get("outputs") or {}), "metrics": scalar}


def _run_dependent(metric: str) -> bool:
    """Wall-clock and skip counts differ between a run and its identical rerun."""
    return "second" in metric or metric.startswith("shards_")


# ---- generation -------------------------------------------------------------------------


def lyrics_generator(config: dict) -> dict:
    """The lyrics backend, its model and its prompt, from the resolved config."""
    options = dict(config["lyrics"]["generator"])
    backend = options.pop("backend")
    info = {"backend": backend, "languages": config["lyrics"]["languages"], "max_tokens": config["lyrics"]["max_tokens"]}
    if backend == "template":
        info["model"] = "none: rule-based template writer over the shipped word banks"
        info["prompt"] = "none (no language model)"
    else:
        from pipeline.lyrics.llm_common import PROMPTS_DIR, prompt_digest

        folder = options.get("template_dir")
        info["model"] = options.get("model") or options.get("model_dir") or "not recorded"
        info["prompt"] = f"{folder or 'shipped prompts (pipeline/lyrics/prompts)'}, digest {prompt_digest(Path(folder) if folder else None)[:16]}"
        info["prompt_files"] = sorted(p.name for p in Path(folder or PROMPTS_DIR).glob("*.txt"))
    info["settings"] = flatten(options)
    return info


def song_model(config: dict, candidates_record: dict) -> dict:
    """Generator checkpoint and sampling settings, from the candidates record and the config."""
    described = dict((candidates_record.get("metrics") or {}).get("model") or {})
    backend = described.get("backend") or config["model"]["backend"]
    described.pop("checkpoint", None)  # an absolute path on the machine that ran it; the digest names it
    info = {"backend": backend, "description": flatten(described), "sampling": flatten(config["sampling"]), "checkpoint": None}
    if backend == "tiny" and not config["model"]["options"].get("checkpoint"):  # the shipped checkpoint: its card applies
        info["checkpoint"] = tiny_checkpoint()
    return info


def tiny_checkpoint() -> dict:
    """The shipped tiny checkpoint's card header and training summary."""
    readme = (TINY_CHECKPOINT / "README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(readme.split("---")[1]) if readme.startswith("---") else {}
    training = json.loads((TINY_CHECKPOINT / "training.json").read_text(encoding="utf-8"))
    stages = [f"stage {n}: {training[f'stage{n}']['steps']} steps" for n in (1, 2) if f"stage{n}" in training]
    return {
        "name": "TinyLeLM (songpref's embedded song model)",
        "licence": header.get("license", "not recorded"),
        "training": f"{training['corpus']['songs']} synthetic songs, seed {training['config']['seed']}; " + ", ".join(stages),
        "card": "pipeline/models/tiny/checkpoint/README.md",
    }


def scorer(record: dict, round_root: str = "") -> dict:
    described = dict((record.get("metrics") or {}).get("scorer") or {})
    if not described:
        raise ValueError("manifest.json: a scores record has no metrics.scorer (the scorer's describe())")
    return {"backend": described.get("backend", "not recorded"), "description": flatten(_in_round(described, round_root))}


def _in_round(value, round_root: str):
    """Paths inside the round made round-relative, so a moved or copied round gives the same card."""
    if isinstance(value, dict):
        return {k: _in_round(v, round_root) for k, v in value.items()}
    if round_root and isinstance(value, str) and value.startswith(round_root.rstrip("/") + "/"):
        return "<round>/" + value[len(round_root.rstrip("/")) + 1 :]
    return value


def annotators(store: RoundStore, config: dict, done: dict) -> dict | None:
    """The ranking campaign behind the reward model: pool, exclusions, agreement, or 'simulated'."""
    if "reward_model" not in done:
        return None
    metrics = done["reward_model"].get("metrics") or {}
    report = store.read_json(REWARD_EVAL) if store.exists(REWARD_EVAL) else {}
    pool = [("annotators", _show(metrics.get("annotators", "not recorded")))]
    pool += [(f"agreement: {key}", _show(metrics[key])) for key in ("alpha_ordinal", "alpha_ci") if key in metrics]
    crowd = (config.get("reward_model") or {}).get("crowd")
    pool += flatten(crowd, "crowd") if crowd else [("crowd", "the embedded defaults (reward_model.crowd not set)")]
    return {
        "simulated": bool(metrics.get("simulated", report.get("simulated_rankings"))),
        "rankings": metrics.get("rankings", "not recorded"),
        "excluded": metrics.get("annotators_excluded", "not recorded"),
        "pool": pool,
        "pairs_train": metrics.get("pairs_train", "not recorded"),
        "pairs_test": metrics.get("pairs_test", "not recorded"),
        "heldout_accuracy": _show(metrics.get("heldout_accuracy")),
        "ceiling": _show(metrics.get("annotator_ceiling")),
        "calibration_ece": _show(metrics.get("calibration_ece")),
        "eval_file": REWARD_EVAL if report else "not found",
    }


def licences(config: dict, done: dict) -> list[dict]:
    """One row per model or tool whose output went into the dataset."""
    rows = []
    generator = config["lyrics"]["generator"]
    rows.append(licence_row("lyrics", generator.get("model") or generator.get("model_dir") or "template writer", generator["backend"]))
    if "candidates" in done:
        backend = config["model"]["backend"]
        rows.append(licence_row("song model", backend, backend))
        if backend == "tiny":
            rows.append(licence_row("singing voice (tiny renderer)", "flite", "flite"))
    for kind in score_kinds().values():  # a kind with backends; a model trained in the round is listed below
        if kind.config_key and kind.stage in done:
            backend = scorer(done[kind.stage])["backend"]
            rows.append(licence_row(kind.role, backend, backend))
    if "scores/per" in done:
        rows += [licence_row("phonemes (PER)", "phonemizer", "phonemizer"), licence_row("phonemes (PER)", "espeak-ng", "espeak-ng")]
    if "reward_model" in done:
        rows.append({"role": "reward model", "model": "Bradley-Terry head trained in this round", "licence": PROJECT_LICENCE,
                     "source": REWARD_EVAL})  # fmt: skip
        embedding = ((config.get("reward_model") or {}).get("embedding") or {}).get("backend", "features")
        rows.append(licence_row("reward-model embeddings", embedding, embedding))
    return rows


def data_licence(config: dict) -> str:
    """The card's `license`: the project's for data the embedded models made; 'other' otherwise."""
    return PROJECT_LICENCE if config["model"]["backend"] == "tiny" else "other"


# ---- display helpers ---------------------------------------------------------------------


def flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    """A nested dict as (dotted key, shown value) rows, long lists summarised."""
    if not isinstance(value, dict):
        return [(prefix, _show(value))]
    if not value:
        return [(prefix, "{}")] if prefix else []
    return [row for key in sorted(value) for row in flatten(value[key], f"{prefix}.{key}" if prefix else str(key))]


def _show(value) -> str:
    if isinstance(value, str) and value.startswith("/"):  # machine-specific absolute path: keep its tail
        return "…/" + "/".join(value.rstrip("/").split("/")[-3:])
    if isinstance(value, list) and len(value) > MAX_LISTED:
        return f"[{len(value)} items]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else (value or '""')
