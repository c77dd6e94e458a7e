"""What a round would do, without doing it: every stage part and its shards, every path and
endpoint the config needs. `songpref round plan` prints it; nothing is run, loaded or contacted.

Shard counts follow the stages' own plans: lyrics by `lyrics.shard_size`, then one conditions,
candidates and score shard per lyrics shard, one pairs shard and one DPO run per strategy, one
merge per named point and one sweep shard per point. With a round directory, each part's
recorded status and shards are shown beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from flows.stages import runnable_parts, stages_until
from pipeline.config import RoundConfig
from pipeline.preferences import JOINT, preferences, strategy_names


@dataclass(frozen=True)
class PlannedPart:
    part: str
    shards: int
    builds: str  # what its shards are
    recorded: str = "not run"  # its status in the round's manifest, when a round is given


@dataclass(frozen=True)
class Need:
    kind: str  # path | endpoint | model | option (a stage option the model cannot take)
    key: str  # the config key, e.g. lyrics.generator.base_url
    value: str
    ok: bool
    note: str


def plan_round(config: RoundConfig, manifest: dict | None = None, until: str | None = None) -> list[PlannedPart]:
    """Every part up to `until` with its shard count; `manifest` adds each part's recorded status."""
    from alignment.sweep.grid import simplex_grid

    lyrics = math.ceil(config.lyrics.count / config.lyrics.effective_shard_size)
    trained = [s for s in strategy_names() if config.dpo.trains(s)]
    axes = [p for p in preferences() if p in trained]
    grid = len(simplex_grid(axes, config.sweep.step)) if len(axes) >= 2 else 0
    points = grid + len(config.sweep.named) + 1 + (JOINT in trained)
    per_stage = {
        "lyrics": (lyrics, f"{config.lyrics.count} lyrics ({config.lyrics.generator.backend})"),
        "conditions": (lyrics, "a description and an audio prompt per valid lyric"),
        "candidates": (lyrics, f"{config.sampling.num_candidates} songs per condition ({config.model.backend})"),
        "reward_model": (1, "rankings -> quality control -> Bradley-Terry reward model"),
        "pairs": (len(strategy_names()), f"one dataset per strategy: {', '.join(strategy_names())}"),
        "merge": (len(config.sweep.named), f"DNI at {', '.join(sorted(config.sweep.named))}"),
        "sweep": (points, f"{grid} grid points (step {config.sweep.step}), named points, base, joint; "
                          f"{config.sweep.prompts} prompts x {config.sweep.seeds} seeds each"),
        "ablation": (1, _ablation_text(config)),
    }  # fmt: skip
    stages = (manifest or {}).get("stages", {})
    runnable, stop = runnable_parts(stages_until(until), config)
    planned = []
    for part in stages_until(until):
        stage, _, sub = part.partition("/")
        if stage == "scores":
            shards, builds = lyrics, f"{sub} for every candidate"
        elif stage == "dpo":
            shards, builds = 1, f"DPO on pairs/{sub}" + ("" if sub in trained else " (skipped: not in dpo.strategies)")
        else:
            shards, builds = per_stage[part]
        if part not in runnable:
            shards, builds = 0, f"not run: model.backend {stop['backend']!r} is not trainable (the round stops before {stop['before']})"
        record = stages.get(part)
        recorded = f"{record['status']}, {len(record.get('outputs') or {})} shards" if record else "not run"
        planned.append(PlannedPart(part, shards, builds, recorded))
    return planned


def _ablation_text(config: RoundConfig) -> str:
    a = config.sweep.ablation
    if a.prompts == 0 or config.model.backend != "tiny":
        return "skipped (" + ("sweep.ablation.prompts is 0" if a.prompts == 0 else f"no oracle for {config.model.backend}") + ")"
    audio = f", {a.songs} of them rendered and scored" if a.songs else ""
    edges = f", simplex edges at step {a.edges}" if a.edges else ""
    return f"oracle metrics of every model on {a.prompts} fresh prompts x {a.seeds} seeds{audio}{edges}"


def needs(config: RoundConfig) -> list[Need]:
    """Every path, endpoint and named model the config refers to (fields of type Path, or marked
    `needs` in their schema), paths checked for existence relative to the working directory; then
    every stage option the config's model cannot take (`option_problems`). One listing, every problem."""
    from pipeline.models.registry import song_model_class

    found: list[Need] = []
    _walk(config, "", found)
    model_options = song_model_class(config.model.backend).options_class.model_validate(config.model.options)
    _walk(model_options, "model.options", found)
    return found + option_problems(config, found)


def option_problems(config: RoundConfig, found: list[Need] = ()) -> list[Need]:
    """Options the stages would refuse for this model, found without running, loading or contacting
    anything: the model's own checks of its folders, the rankings source, the sampling values,
    sampling from merged weights. `found`: the listing so far (a missing folder is not said twice)."""
    from pipeline.models.base import SamplingParams
    from pipeline.models.checkpoint import NoCheckpointOption, checkpoint_option
    from pipeline.models.registry import song_model_class
    from reward_model.rankings_source import source_problem

    backend, problems = config.model.backend, []
    if problem := source_problem(config.reward_model.rankings, backend):
        problems.append(Need("option", "reward_model.rankings", config.reward_model.rankings, False, problem))
    cls = song_model_class(backend)
    if hasattr(cls, "check_sampling"):
        s = config.sampling
        params = SamplingParams(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, cfg_coef=s.cfg_coef)
        model = None
        try:
            model = cls(cls.options_class.model_validate(config.model.options))
        except (OSError, ValueError, RuntimeError) as exc:  # e.g. a checkout without generate.py
            if not any(n.key.startswith("model.options.") and not n.ok for n in found):
                problems.append(Need("option", "model.options", backend, False, str(exc)))
        try:
            if model is not None:
                model.check_sampling(params)
        except ValueError as exc:
            problems.append(Need("option", "sampling", backend, False, str(exc)))
    try:
        checkpoint_option(backend)
    except NoCheckpointOption as exc:
        problems.append(Need("option", "sweep", backend, False, str(exc)))
    return problems


def _walk(node: BaseModel, prefix: str, found: list[Need]) -> None:
    fields = type(node).model_fields
    for name, value in node:
        extra = fields[name].json_schema_extra if name in fields else None
        need = extra.get("needs") if isinstance(extra, dict) else None
        key = f"{prefix}.{name}" if prefix else name
        if name == "options" and prefix == "model":
            continue  # checked through the plugin's own options class
        if value is None:
            continue
        if isinstance(value, BaseModel):
            _walk(value, key, found)
        elif need == "endpoint" or (need == "source" and str(value).startswith(("http://", "https://"))):
            found.append(Need("endpoint", key, str(value), True, "not contacted here; checked when its stage starts"))
        elif need == "source" and str(value) in extra.get("keywords", ()):
            continue  # a built-in source (e.g. the simulated crowd), not a path
        elif need == "model" and not _looks_like_path(str(value)):
            found.append(Need("model", key, str(value), True, "a model name: the backend loads it by name"))
        elif isinstance(value, Path) or need in ("path", "model", "source"):
            path = Path(value)
            found.append(Need("path", key, str(value), path.exists(), "found" if path.exists() else "missing"))


def _looks_like_path(value: str) -> bool:
    return "/" in value or value.endswith((".pt", ".pth", ".safetensors"))
