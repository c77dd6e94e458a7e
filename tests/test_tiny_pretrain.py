"""Tiny-LeLM pretraining: deterministic two-stage runs, checkpoint + training.json, spread metrics."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.lyrics.format import validate_lyrics
from pipeline.models.tiny.model import TinyLeLM
from pipeline.models.tiny.pretrain import (
    PretrainConfig,
    decoder_losses,
    evaluate_spread,
    lm_losses,
    lm_states,
    pretrain,
    synthetic_conditions,
    synthetic_corpus,
)

TINY = dict(n_songs=12, hidden_size=16, lm_layers=1, decoder_layers=1, num_heads=2, intermediate_size=32,
            max_prefix=128, tag_buckets=32, word_buckets=128, batch_size=4, stage2_batch_size=4,
            stage1_steps=3, stage2_steps=3, log_every=1, warmup_steps=1, max_minutes=2.0)  # fmt: skip


@pytest.fixture(scope="module")
def corpus():
    return synthetic_corpus(PretrainConfig(**TINY))


def test_corpus_is_short_valid_and_seeded(corpus):
    cfg = PretrainConfig(**TINY)
    assert len(corpus) == cfg.n_songs
    for cond, tokens in corpus:
        assert validate_lyrics(cond["lyric"]) == []
        assert 0 < len(tokens["mixed"]) <= cfg.max_frames
        assert {len(tokens[s]) for s in ("mixed", "vocals", "accompaniment")} == {len(tokens["mixed"])}
    again = synthetic_corpus(cfg)
    assert [c["lyric"] for c, _ in again] == [c["lyric"] for c, _ in corpus]
    assert [t for _, t in again] == [t for _, t in corpus]
    held_out = synthetic_conditions(cfg, 3, cfg.seed + 1_000_003)
    assert not {c["lyric"] for c in held_out} & {c["lyric"] for c, _ in corpus}


def test_fast_stage_losses_equal_model_forward(corpus):
    torch.manual_seed(0)
    model = TinyLeLM(PretrainConfig(**TINY).model_config()).eval()
    conds, toks = [c for c, _ in corpus[:3]], [t for _, t in corpus[:3]]
    with torch.no_grad():
        ref = model(conds, toks, training_stage=0).losses
        fast = lm_losses(model, conds, toks) | decoder_losses(model, lm_states(model, corpus[:3], 2), toks)
    for s in ("header", "mixed", "vocals", "accompaniment"):
        assert fast[s].item() == pytest.approx(ref[s].item(), rel=1e-5, abs=1e-6)


def test_pretrain_is_deterministic_saves_and_reloads(tmp_path, corpus):
    cfg = PretrainConfig(**TINY)
    a = pretrain(cfg, tmp_path / "a", log=lambda m: None, corpus=corpus)
    b = pretrain(cfg, tmp_path / "b", log=lambda m: None, corpus=corpus)
    for stage in ("stage1", "stage2"):
        assert a[stage]["steps"] == 3 and not a[stage]["stopped_early"]
        assert [r["loss"] for r in a[stage]["losses"]] == [r["loss"] for r in b[stage]["losses"]]
    assert a["final_losses"] == b["final_losses"]
    saved = json.loads((tmp_path / "a" / "training.json").read_text())
    assert saved["config"] == a["config"] and saved["final_losses"] == a["final_losses"]
    assert set(saved["seconds"]) == {"corpus", "stage1", "stage2"}
    model = TinyLeLM.from_pretrained(tmp_path / "a").eval()
    ref = TinyLeLM.from_pretrained(tmp_path / "b").eval()
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), ref.state_dict().values()))
    spread = evaluate_spread(model, [c for c, _ in corpus[:2]], n_candidates=2, seed=1, max_frames=40)
    keys = {"wer_below_10", "wer_above_40", "tempo_hit", "mode_hit", "mean_in_key"}
    assert keys <= set(spread) and spread["candidates"] == 4
    assert all(0.0 <= spread[k] <= 1.0 for k in keys)
    assert evaluate_spread(model, [c for c, _ in corpus[:2]], n_candidates=2, seed=1, max_frames=40) == spread
