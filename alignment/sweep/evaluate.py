"""Held-out evaluation of a policy checkpoint: sample songs, render them, score them three ways.

Every policy is asked for the same songs: the same held-out conditions and the same seeds, so
differences between policies are not differences in luck (common random numbers). Scores come
from the round's own scorers (PER from its transcriber, its similarity scorer, its reward model),
so an evaluated song is judged exactly as a candidate was.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.digest import derive_seed
from pipeline.models.base import CandidateRequest, SamplingParams
from pipeline.models.registry import load_song_model
from pipeline.scoring.base import ScoringItem
from pipeline.scoring.registry import build_scorer
from pipeline.stages.scores import score_per, score_similarity
from reward_model.scorer import RewardScorer

METRICS = {"per": False, "similarity": True, "reward": True}  # metric -> higher is better


class PolicyEvaluator:
    """Scores policies on `conditions` x `seeds_per_prompt` songs with the round's scorers."""

    def __init__(self, config, reward_model_dir: Path, conditions: list[dict], seeds_per_prompt: int, seed: int):
        self.config = config
        self.conditions = sorted(conditions, key=lambda c: c["condition_id"])
        self.seeds = [derive_seed(seed, "evaluate", j) for j in range(seeds_per_prompt)]
        self.transcriber = build_scorer("transcriber", config.scoring.transcriber)
        self.similarity = build_scorer("similarity", config.scoring.similarity)
        self.reward = RewardScorer(reward_model_dir)

    def requests(self) -> list[CandidateRequest]:
        return [CandidateRequest(f"{c['condition_id']}-s{j}", c, seed)
                for c in self.conditions for j, seed in enumerate(self.seeds)]  # fmt: skip

    def evaluate(self, checkpoint: Path, work_dir: Path, keep_audio: bool = False) -> pd.DataFrame:
        """One row per song: candidate_id, prompt_id, seed, per, similarity, reward, error."""
        options = {**self.config.model.options, "checkpoint": str(checkpoint)}
        model = load_song_model(self.config.model.backend, options)
        s = self.config.sampling
        params = SamplingParams(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, cfg_coef=s.cfg_coef)
        work_dir.mkdir(parents=True, exist_ok=True)
        requests = self.requests()
        results = model.sample(requests, params, work_dir)
        by_id = {r.candidate_id: r for r in requests}
        rows, items = [], []
        for result in results:
            request = by_id[result.candidate_id]
            rows.append({"candidate_id": result.candidate_id, "prompt_id": request.condition["condition_id"],
                         "seed": request.seed, "error": result.error})  # fmt: skip
            if result.error is None:
                items.append(_item(result, request.condition))
        scores = self._score(items)
        for row in rows:
            row.update(scores.get(row["candidate_id"], {}))
            if row["error"] is None and any(row.get(m) is None for m in METRICS):
                row["error"] = "; ".join(row.pop("errors", []) or ["a score is missing"])
            row.pop("errors", None)
        if not keep_audio:
            shutil.rmtree(work_dir, ignore_errors=True)
        frame = pd.DataFrame(rows)
        for metric in METRICS:
            frame[metric] = pd.to_numeric(frame.get(metric), errors="coerce") if metric in frame else math.nan
        return frame[["candidate_id", "prompt_id", "seed", *METRICS, "error"]]

    def _score(self, items: list[ScoringItem]) -> dict[str, dict]:
        out = {item.candidate_id: {"errors": []} for item in items}
        lyrics = sorted({c["lyric"] for c in self.conditions})
        vocals = [_with_audio(i, i.stems.get("vocals", i.audio_path)) for i in items]  # ASR hears the voice alone
        tables = {"per": score_per(self.transcriber, vocals, lyrics), "similarity": score_similarity(self.similarity, items),
                  "reward": self.reward.score(items)}  # fmt: skip
        for metric, rows in tables.items():
            for item, row in zip(items, rows):
                if row.get("error"):
                    out[item.candidate_id]["errors"].append(f"{metric}: {row['error']}")
                else:
                    out[item.candidate_id][metric] = row[metric]
        return out


def _item(result, condition: dict) -> ScoringItem:
    tags = {k: condition.get(k) for k in ("gender", "genre", "emotion", "instruments", "bpm", "tempo")}
    stems = {k: Path(v) for k, v in result.audio.items()}
    return ScoringItem(result.candidate_id, stems["mix"], condition["lyric"], condition["language"],
                       condition["description"], tags, stems)  # fmt: skip


def _with_audio(item: ScoringItem, path: Path) -> ScoringItem:
    return ScoringItem(item.candidate_id, Path(path), item.lyric, item.language, item.description, item.tags, item.stems)


def summarize(frame: pd.DataFrame, resamples: int = 2000, seed: int = 0) -> dict:
    """Per metric: mean and a 95 % bootstrap interval over the songs scored; failures counted."""
    rng = np.random.default_rng(seed)
    out = {"songs": int(len(frame)), "failed": int(frame["error"].notna().sum())}
    for metric in METRICS:
        values = frame[metric].dropna().to_numpy(dtype=float)
        if len(values) == 0:
            out[metric] = {"mean": None, "low": None, "high": None}
            continue
        means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
        out[metric] = {"mean": float(values.mean()), "low": float(np.quantile(means, 0.025)),
                       "high": float(np.quantile(means, 0.975))}  # fmt: skip
    return out
