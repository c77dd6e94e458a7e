"""The oracle ablation: every model asked for the same fresh songs, scored by the embedded world's
ground truth (pipeline.models.tiny.oracle), compared with the policy before DPO pair by pair.

Held-out conditions are new: the round's own lyrics and conditions stages run again into a
scratch folder with a seed derived from the round's, so no prompt was seen in training. Every
model samples the same conditions with the same seeds (common random numbers); a model's
difference from base is the mean over prompts of the per-prompt mean difference, with a 95 %
bootstrap interval over prompts. Tokens only, no audio: hundreds of songs per model in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.digest import derive_seed
from pipeline.models.tiny.oracle import ORACLE_METRICS, oracle_metrics

HELD_OUT_PURPOSE = "oracle-held-out"


def held_out_conditions(config, count: int, scratch: Path) -> list[dict]:
    """`count` fresh conditions from the round's own lyrics and conditions stages, under a derived seed."""
    from pipeline.conditions import round_conditions
    from pipeline.manifest import open_round
    from pipeline.stages.conditions import ConditionsStage
    from pipeline.stages.lyrics import LyricsStage
    from pipeline.stages.runner import run_stage_in_process
    from pipeline.store import RoundStore

    lyrics = config.lyrics.model_copy(update={"count": count, "shard_size": None})
    fresh = config.model_copy(update={"seed": derive_seed(config.seed, HELD_OUT_PURPOSE) % 2**31, "lyrics": lyrics})
    store = RoundStore(str(scratch))
    open_round(store, fresh)
    for stage in (LyricsStage(fresh, store), ConditionsStage(fresh, store)):
        record = run_stage_in_process(stage)
        if record["status"] != "done":
            raise RuntimeError(f"held-out {stage.name}: {record.get('errors')}")
    # named apart from the round's own conditions, whose ids follow the same pattern
    return [dict(c, condition_id=f"held-out-{c['condition_id']}") for c in sorted(round_conditions(store).values(),
                                                                                  key=lambda c: c["condition_id"])]


def sample_oracle(config, checkpoint: Path, conditions: list[dict], seeds: list[int]) -> pd.DataFrame:
    """One row per (prompt, seed): the oracle metrics of the song `checkpoint` samples."""
    from pipeline.models.registry import load_song_model

    if config.model.backend != "tiny":
        raise ValueError(f"the oracle ablation reads the tiny model's tokens; model.backend is {config.model.backend!r}")
    model = load_song_model("tiny", {**config.model.options, "checkpoint": str(checkpoint)}).model
    s = config.sampling
    rows = []
    for condition in conditions:
        songs = model.sample_batch(condition, seeds, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)
        for seed, tokens in zip(seeds, songs):
            rows.append({"prompt_id": condition["condition_id"], "seed": seed, **oracle_metrics(tokens, condition)})
    return pd.DataFrame(rows)


def paired_difference(model: pd.DataFrame, base: pd.DataFrame, metric: str, resamples: int = 2000,
                      seed: int = 0) -> dict:  # fmt: skip
    """Mean of `metric` for the model and its difference from base over the same (prompt, seed)
    songs, with a 95 % bootstrap interval over prompts (songs of one prompt are not independent)."""
    joined = model.merge(base, on=["prompt_id", "seed"], suffixes=("", "_base"))
    per_prompt = (joined[metric] - joined[f"{metric}_base"]).groupby(joined["prompt_id"]).mean().to_numpy()
    rng = np.random.default_rng(seed)
    means = per_prompt[rng.integers(0, len(per_prompt), size=(resamples, len(per_prompt)))].mean(axis=1)
    return {"mean": float(joined[metric].mean()), "diff": float(per_prompt.mean()),
            "low": float(np.quantile(means, 0.025)), "high": float(np.quantile(means, 0.975)), "songs": len(joined)}  # fmt: skip


REPORTED = (*ORACLE_METRICS, "frames")  # frames: the songs' length, to see a policy's length drift


def ablation_frame(songs: dict[str, pd.DataFrame], base: str = "base") -> pd.DataFrame:
    """One row per model and metric (and length): mean, paired difference from base and its interval."""
    rows = []
    for name, frame in songs.items():
        for metric in REPORTED:
            rows.append({"model": name, "metric": metric, **paired_difference(frame, songs[base], metric)})
    return pd.DataFrame(rows)


def ablation_markdown(table: pd.DataFrame, own: dict[str, tuple[str, ...]]) -> str:
    """Markdown: one row per model, per metric its mean and Δ vs base [95 %]; a model's own target
    metrics (`own`: model -> oracle metrics of its preference) in bold."""
    labels = {m: f"{m.replace('_', ' ')} {'↑' if up else '↓'}" for m, up in ORACLE_METRICS.items()} | {"frames": "length (frames)"}
    lines = ["| model | songs | " + " | ".join(labels.values()) + " |", "|---|---|" + "---|" * len(labels)]
    for name, group in table.groupby("model", sort=False):
        cells = []
        for metric, row in group.set_index("metric").loc[list(REPORTED)].iterrows():
            cell = f"{row['mean']:.3g}" if name == "base" else (
                f"{row['mean']:.3g} (Δ {row['diff']:+.3g} [{row['low']:+.3g}, {row['high']:+.3g}])")  # fmt: skip
            cells.append(f"**{cell}**" if metric in own.get(name, ()) else cell)
        lines.append(f"| {name} | {int(group['songs'].iloc[0])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def round_models(config, store) -> dict[str, Path]:
    """The models of a round to compare: base, each trained DPO model, each merged named point."""
    from alignment.merge.stage import trained_models
    from alignment.policy import policy_folder

    models = {"base": Path(policy_folder(config.model.backend, config.model.options, config.dpo.policy))}
    models |= {name: Path(store.path(folder)) for name, folder in trained_models(store).items()}
    models |= {name: Path(store.path("merge", name)) for name in sorted(config.sweep.named)
               if store.exists(f"merge/{name}/config.json")}  # fmt: skip
    return models


def oracle_ablation(config, store, prompts: int, seeds: int, progress=None) -> tuple[pd.DataFrame, str]:
    """Sample every model of the round on `prompts` fresh conditions x `seeds` seeds; writes
    ablation/oracle.parquet (one row per song and model) and ablation/oracle.md; returns the
    per-model table and its markdown."""
    import pyarrow as pa

    from pipeline.preferences import preferences

    conditions = held_out_conditions(config, prompts, Path(store.path("ablation", "held-out")))
    seed_list = [derive_seed(config.seed, "oracle", j) for j in range(seeds)]
    songs = {}
    for name, checkpoint in round_models(config, store).items():
        songs[name] = sample_oracle(config, checkpoint, conditions, seed_list)
        if progress:
            progress(name)
    table = ablation_frame(songs)
    markdown = ablation_markdown(table, {p.name: p.oracles for p in preferences().values()})
    every = pd.concat([frame.assign(model=name) for name, frame in songs.items()], ignore_index=True)
    store.write_table("ablation/oracle.parquet", pa.Table.from_pandas(every, preserve_index=False))
    note = (f"{len(conditions)} fresh held-out prompts x {seeds} seeds = {len(conditions) * seeds} songs per model, the same "
            "songs asked of every model; mean, and Δ vs base with a 95 % bootstrap interval over prompts. Bold: the "
            "model's own preference's target. Oracle metrics read from the songs' tokens (no audio, no ASR).")  # fmt: skip
    store.write_bytes("ablation/oracle.md", f"# Oracle ablation\n\n{markdown}\n\n{note}\n".encode("utf-8"))
    return table, markdown
