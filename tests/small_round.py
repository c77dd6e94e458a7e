"""A small real round up to pairs, built once per test session (tests/conftest.py: `round_dir`)."""

import json

from pipeline.config import RoundConfig
from pipeline.manifest import open_round
from flows.stages import run_stage_locally
from pipeline.store import RoundStore

UPSTREAM = ("lyrics", "conditions", "candidates", "scores/per", "scores/similarity", "reward_model", "scores/reward")
# Small round, loose thresholds: every strategy must find pairs among 6 prompts x 3 songs.
RAW = {
    "seed": 5,
    "lyrics": {"count": 6, "generator": {"backend": "template", "min_sentences": 1, "max_sentences": 1, "max_sections": 3}},
    "sampling": {"num_candidates": 3},
    "reward_model": {"crowd": {"annotators": 6, "candidates_per_task": 3, "tasks_per_prompt": 2}},
    "pairs": {"lyrics": {"per_gap": 5}, "prompt": {"thresholds": "quantile", "upper": 0.5, "lower": 0.5, "min_gap": 0.0},
              "musicality": {"reward_margin": 0.0}, "selection": {"test_fraction": 0.3}},
}  # fmt: skip


def config(sections: dict | None = None, **pairs) -> RoundConfig:
    """The round's config; `pairs` keywords replace pair options, `sections` adds top-level keys (dpo, sweep)."""
    raw = json.loads(json.dumps(RAW))
    for key, value in pairs.items():
        raw["pairs"][key] = value
    raw.update(sections or {})
    return RoundConfig.model_validate(raw)


def build_round(root):
    store = RoundStore(str(root))
    open_round(store, config())
    for name in (*UPSTREAM, "pairs"):
        record = run_stage_locally(name, config(), store)
        assert record["status"] == "done", (name, record.get("errors"))
    return root, store
