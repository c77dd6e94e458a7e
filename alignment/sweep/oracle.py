"""The oracle ablation: every model asked for the same fresh songs, scored by the embedded world's
ground truth (pipeline.models.tiny.oracle), compared with the policy before DPO pair by pair.

Held-out conditions are new: the round's own lyrics and conditions stages run again into a
scratch folder with a seed derived from the round's, so no prompt was seen in training. Every
model samples the same conditions with the same seeds (common random numbers), each prompt its own
seeds (so its songs are independent of other prompts' and an interval over prompts is honest); a model's
difference from base is the mean over prompts of the per-prompt mean difference, with a 95 %
bootstrap interval over prompts. Tokens only, no audio: hundreds of songs per model in seconds.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.digest import derive_seed
from alignment.sweep.paired import paired_difference
from pipeline.models.tiny.oracle import ORACLE_METRICS, oracle_metrics

# Two disjoint sets of fresh prompts: "test" is what the ablation reports; "validation" is for
# choosing options (learning rates, losses) without looking at the test prompts.
SPLIT_PURPOSES = {"test": "oracle-held-out", "validation": "oracle-validation"}
SPLIT_PREFIXES = {"test": "held-out", "validation": "validation"}


def split_prefix(split: str) -> str:
    """The condition-id prefix (and scratch folder) of a split; ValueError naming an unknown one."""
    if split not in SPLIT_PURPOSES:
        raise ValueError(f"split: {split!r} is not one of {sorted(SPLIT_PURPOSES)}")
    return SPLIT_PREFIXES[split]


def held_out_conditions(config, count: int, scratch: Path, split: str = "test") -> list[dict]:
    """`count` fresh conditions from the round's own lyrics and conditions stages, under a seed
    derived for `split` ("test" or "validation")."""
    from pipeline.conditions import round_conditions
    from pipeline.manifest import open_round
    from pipeline.stages.conditions import ConditionsStage
    from pipeline.stages.lyrics import LyricsStage
    from pipeline.stages.runner import run_stage_in_process
    from pipeline.store import RoundStore

    prefix = split_prefix(split)
    lyrics = config.lyrics.model_copy(update={"count": count, "shard_size": None})
    fresh = config.model_copy(update={"seed": derive_seed(config.seed, SPLIT_PURPOSES[split]) % 2**31, "lyrics": lyrics})
    store = RoundStore(str(scratch))
    open_round(store, fresh)
    for stage in (LyricsStage(fresh, store), ConditionsStage(fresh, store)):
        record = run_stage_in_process(stage)
        if record["status"] != "done":
            raise RuntimeError(f"held-out {stage.name}: {record.get('errors')}")
    # named apart from the round's own conditions, whose ids follow the same pattern
    return [dict(c, condition_id=f"{prefix}-{c['condition_id']}") for c in sorted(round_conditions(store).values(),
                                                                                key=lambda c: c["condition_id"])]


def sample_oracle(config, checkpoint: Path, conditions: list[dict], seeds: int) -> pd.DataFrame:
    """One row per (prompt, seed): the oracle metrics of the songs `checkpoint` samples, `seeds` per
    prompt with the evaluator's seeds (alignment.sweep.evaluate.evaluation_seeds)."""
    from alignment.sweep.evaluate import evaluation_seeds
    from pipeline.models.registry import load_song_model
    from pipeline.models.tiny.sampling import sample_songs
    from pipeline.models.tiny.song_model import SAMPLING_BATCH

    if config.model.backend != "tiny":
        raise ValueError(f"the oracle ablation reads the tiny model's tokens; model.backend is {config.model.backend!r}")
    song_model = load_song_model("tiny", {**config.model.options, "checkpoint": str(checkpoint)})
    s = config.sampling
    requests = [(condition, seed) for condition in conditions
                for seed in evaluation_seeds(config.seed, condition["condition_id"], seeds)]  # fmt: skip
    rows = []
    for start in range(0, len(requests), SAMPLING_BATCH):  # batched as TinySongModel.sample batches them
        batch = requests[start : start + SAMPLING_BATCH]
        songs = sample_songs(song_model.model, [c for c, _ in batch], [seed for _, seed in batch], temperature=s.temperature,
                             top_k=s.top_k, top_p=s.top_p, max_frames=song_model.options.max_frames)  # fmt: skip
        for (condition, seed), tokens in zip(batch, songs):
            rows.append({"prompt_id": condition["condition_id"], "seed": seed, **oracle_metrics(tokens, condition)})
    return pd.DataFrame(rows)


REPORTED = (*ORACLE_METRICS, "frames")  # frames: the songs' length, to see a policy's length drift
ORACLE_LABELS = {m: f"{m.replace('_', ' ')} {'↑' if up else '↓'}" for m, up in ORACLE_METRICS.items()} | {
    "frames": "length (frames)"}


def ablation_frame(songs: dict[str, pd.DataFrame], metrics=REPORTED, base: str = "base") -> pd.DataFrame:
    """One row per model and metric: mean, paired difference from base and its interval."""
    rows = []
    for name, frame in songs.items():
        for metric in metrics:
            rows.append({"model": name, "metric": metric, **paired_difference(frame, songs[base], metric)})
    return pd.DataFrame(rows)


def ablation_markdown(table: pd.DataFrame, own: dict[str, tuple[str, ...]], labels: dict[str, str] = ORACLE_LABELS,
                      failed: dict[str, int] | None = None, reference: str = "base") -> str:  # fmt: skip
    """Markdown: one row per model, per metric its mean and Δ vs `reference` [95 %]; a model's own
    target metrics (`own`: model -> metrics of its preference) in bold; `failed`: songs a scorer
    could not score, per model (those songs are left out of that metric's pairs)."""
    extra = ["failed"] if failed is not None else []
    lines = ["| model | songs | " + " | ".join([*extra, *labels.values()]) + " |",
             "|---|---|" + "---|" * (len(labels) + len(extra))]  # fmt: skip
    for name, group in table.groupby("model", sort=False):
        cells = [str(failed.get(name, 0))] if failed is not None else []
        for metric, row in group.set_index("metric").loc[list(labels)].iterrows():
            cell = f"{row['mean']:.3g}" if name == reference else (
                f"{row['mean']:.3g} (Δ {row['diff']:+.3g} [{row['low']:+.3g}, {row['high']:+.3g}])")  # fmt: skip
            cells.append(f"**{cell}**" if metric in own.get(name, ()) else cell)
        lines.append(f"| {name} | {int(group['songs'].max())} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def round_models(config, store) -> dict[str, Path]:
    """The models of a round to compare: base, each trained DPO model, each merged named point and
    the sweep's chosen point."""
    from alignment.merge.stage import trained_models
    from alignment.policy import policy_folder

    models = {"base": Path(policy_folder(config.model.backend, config.model.options, config.dpo.policy))}
    models |= {name: Path(store.path(folder)) for name, folder in trained_models(store).items()}
    models |= {name: Path(store.path("merge", name)) for name in sorted(config.sweep.named)
               if store.exists(f"merge/{name}/config.json")}  # fmt: skip
    if store.exists("sweep/chosen/config.json"):  # the sweep's pick: what a child round starts from
        models["chosen"] = Path(store.path("sweep", "chosen"))
    return models


def model_identity(folder: Path) -> str:
    """A digest of a model folder's weights and config: equal digests sample equal songs."""
    import hashlib

    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        path = Path(folder) / name
        digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()


def same_model(checkpoint: Path, models: dict[str, Path], done: dict) -> str | None:
    """The first model in `done` with the same weights as `checkpoint` (the sweep's chosen point is a
    copy of one of the round's models): its songs are this model's songs, so they are not sampled twice."""
    identity = model_identity(checkpoint)
    return next((name for name in done if model_identity(models[name]) == identity), None)


def each_model(models: dict[str, Path], measure, done_text: str, progress=None) -> dict[str, pd.DataFrame]:
    """`measure(name, checkpoint)` of every model, once per distinct weights (a twin shares its rows)."""
    results: dict[str, pd.DataFrame] = {}
    for name, checkpoint in models.items():
        twin = same_model(checkpoint, models, results)
        results[name] = results[twin] if twin else measure(name, checkpoint)
        if progress:
            progress(f"{done_text} {name}" + (f" (the same weights as {twin})" if twin else ""))
    return results


def write_model_rows(store, path: str, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every model's rows in one table with a `model` column, written to `path` in the round."""
    import pyarrow as pa

    every = pd.concat([frame.assign(model=name) for name, frame in frames.items()], ignore_index=True)
    store.write_table(path, pa.Table.from_pandas(every, preserve_index=False))
    return every


def oracle_ablation(config, store, prompts: int, seeds: int, progress=None, edge_step: float | None = None,
                    audio_songs: int = 0, split: str = "test", header_odds: bool = False) -> tuple[pd.DataFrame, str]:  # fmt: skip
    """Sample every model of the round on `prompts` fresh conditions (of `split`) x `seeds` seeds; writes
    ablation/oracle.parquet (one row per song and model) and ablation/oracle.md; returns the
    per-model table and the markdown. With `audio_songs`, the first that many of those songs are
    also rendered and scored by the round's own scorers (alignment.sweep.evaluate): the audio
    columns, ablation/audio.parquet. With `edge_step`, the simplex edges at that step on the same
    songs (alignment.sweep.controllability): ablation/controllability.{parquet,md,png}. With
    `header_odds`, each model's exact tempo and mode hit probability on the same prompts
    (pipeline.models.tiny.header_odds): ablation/header_odds.parquet."""
    from pipeline.preferences import preferences

    conditions = held_out_conditions(config, prompts, Path(store.path("ablation", split_prefix(split))), split)
    models = round_models(config, store)
    songs = each_model(models, lambda _, checkpoint: sample_oracle(config, checkpoint, conditions, seeds), "sampled",
                       progress)  # fmt: skip
    own = {p.name: p.oracles for p in preferences().values()}
    table = ablation_frame(songs)
    markdown = ablation_markdown(table, own)
    write_model_rows(store, "ablation/oracle.parquet", songs)
    note = (f"{len(conditions)} fresh {split_prefix(split)} prompts x {seeds} seeds = {len(conditions) * seeds} songs per model, the same "
            "songs asked of every model; mean, and Δ vs base with a 95 % bootstrap interval over prompts. Bold: the "
            "model's own preference's target. Oracle metrics read from the songs' tokens (no audio, no ASR).")  # fmt: skip
    text = f"## Oracle metrics (the embedded world's ground truth)\n\n{markdown}\n\n{note}\n"
    if header_odds:
        text += "\n" + header_odds_report(config, store, models, conditions, progress)
    if audio_songs:
        text += "\n" + audio_report(config, store, models, conditions, seeds, audio_songs, progress)
    if edge_step is not None:
        text += "\n" + edge_report(config, store, conditions, seeds, edge_step, own, songs, progress)
    store.write_bytes("ablation/oracle.md", f"# Ablation\n\n{text}".encode("utf-8"))
    return table, text


def expected_header_hits_frame(config, checkpoint: Path, conditions: list[dict]) -> pd.DataFrame:
    """One row per prompt (seed 0): the model's exact probability of hitting its tempo and mode, and
    the header mass left unexplored (pipeline.models.tiny.header_odds)."""
    from pipeline.models.registry import load_song_model
    from pipeline.models.tiny.header_odds import expected_header_hits

    model = load_song_model("tiny", {**config.model.options, "checkpoint": str(checkpoint)}).model
    s = config.sampling
    return pd.DataFrame([{"prompt_id": c["condition_id"], "seed": 0,
                          **expected_header_hits(model, c, s.temperature, s.top_k, s.top_p)} for c in conditions])  # fmt: skip


def header_odds_report(config, store, models: dict[str, Path], conditions: list[dict], progress=None) -> str:
    """Every model's exact tempo and mode hit probability per prompt, paired against base over the
    prompts. Writes ablation/header_odds.parquet."""
    import time

    from pipeline.models.tiny.header_odds import HEADER_FLOOR, HEADER_HITS
    from pipeline.preferences import preferences

    started = time.perf_counter()
    odds = each_model(models, lambda _, checkpoint: expected_header_hits_frame(config, checkpoint, conditions),
                      "header odds of", progress)  # fmt: skip
    every = write_model_rows(store, "ablation/header_odds.parquet", odds)
    labels = {m: f"P({m.replace('_', ' ')}) ↑" for m in HEADER_HITS}
    own = {p.name: tuple(m for m in p.oracles if m in labels) for p in preferences().values()}
    markdown = ablation_markdown(ablation_frame(odds, HEADER_HITS), own, labels)
    return (f"## Tempo and mode hit probability (exact, from each model's header distribution)\n\n{markdown}\n\n"
            f"The same {len(conditions)} prompts; per prompt, the probability that a sampled song hits its tempo and mode "
            f"(the 3 header tokens decide both), so no song noise: an interval is the prompts' spread alone. 'songs' "
            f"counts prompts. Header prefixes under probability {HEADER_FLOOR:g} are not expanded: at most "
            f"{every['unexplored'].max():.4f} of a prompt's mass, by which a probability may read low. "
            f"{time.perf_counter() - started:.0f} s for {len(models)} models.\n")  # fmt: skip


def audio_songs(config, store, models: dict[str, Path], conditions: list[dict], seeds: int, count: int,
                work_dir: Path, progress=None) -> dict[str, pd.DataFrame]:  # fmt: skip
    """The first `count` of the songs `conditions` x `seeds` of every model, rendered and scored as
    candidates are (by the round's own scorers), once per distinct weights."""
    import math

    from alignment.sweep.evaluate import PolicyEvaluator

    evaluator = PolicyEvaluator(config, store, conditions[: math.ceil(count / seeds)], seeds, config.seed)
    return each_model(models, lambda name, checkpoint: evaluator.evaluate(checkpoint, work_dir / name),
                      "rendered and scored", progress)  # fmt: skip


def audio_table(songs: dict[str, pd.DataFrame], own: dict[str, tuple[str, ...]],
                reference: str = "base") -> tuple[pd.DataFrame, dict[str, int], str]:  # fmt: skip
    """The paired table of each preference's metric against `reference`: rows, each model's songs a
    scorer could not score, and markdown."""
    from alignment.sweep.evaluate import metric_directions
    from alignment.sweep.report import metric_labels

    table = ablation_frame(songs, list(metric_directions()), base=reference)
    failed = {name: int(frame["error"].notna().sum()) for name, frame in songs.items()}
    return table, failed, ablation_markdown(table, own, metric_labels(), failed, reference=reference)


def audio_report(config, store, models: dict[str, Path], conditions: list[dict], seeds: int, count: int,
                 progress=None) -> str:  # fmt: skip
    """The first `count` ablation songs of every model rendered and scored as candidates are; the
    paired table on each preference's own metric. Writes ablation/audio.parquet."""
    import time

    from pipeline.preferences import preferences

    started = time.perf_counter()
    songs = audio_songs(config, store, models, conditions, seeds, count, Path(store.path("ablation", ".audio-work")), progress)
    write_model_rows(store, "ablation/audio.parquet", songs)
    _, _, markdown = audio_table(songs, {p.name: (p.score,) for p in preferences().values()})
    prompts = len(next(iter(songs.values()))["prompt_id"].unique())
    seconds = time.perf_counter() - started
    return (f"## The round's own scorers on the same songs\n\n{markdown}\n\n{prompts} prompts x {seeds} seeds = "
            f"{prompts * seeds} songs per model, the first of the songs above (same prompts, same seeds), rendered "
            f"and scored as candidates are; failed: songs a scorer could not score (e.g. too short), left out of the "
            f"pairs. {seconds:.0f} s for {len(models)} models.\n")  # fmt: skip


def edge_report(config, store, conditions: list[dict], seeds: int, step: float,
                own: dict[str, tuple[str, ...]], sampled: dict[str, pd.DataFrame], progress=None) -> str:  # fmt: skip
    """The controllability table on the ablation's songs; writes ablation/controllability.{parquet,png}."""
    import pyarrow as pa

    from alignment.sweep import controllability as edges

    songs = edges.sample_edges(config, store, conditions, seeds, step, Path(store.path("ablation", ".work")), sampled,
                               progress)  # fmt: skip
    axes = [c.removeprefix("w_") for c in songs.columns if c.startswith("w_")]
    table = edges.edge_table(songs, axes, step, own)
    markdown = edges.edge_markdown(table)
    store.write_table("ablation/controllability.parquet", pa.Table.from_pandas(songs, preserve_index=False))
    store.write_bytes("ablation/controllability.png", edges.edge_png(songs, table, axes, step, own))
    note = (f"Every simplex edge at step {step}, on the ablation's songs ({len(conditions)} prompts x {seeds} seeds "
            "per point). Spearman's ρ between a preference's weight and its own metric (oriented: +1 = better at every "
            "step). Plot: ablation/controllability.png.")  # fmt: skip
    return f"## Controllability along the simplex edges\n\n{markdown}\n\n{note}\n"
