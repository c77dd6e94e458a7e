"""Pretraining the tiny LeLM on composer songs: LeVo's modular progressive training in miniature.

LeVo trains its LM first (stage 1: the mixed tokens), then freezes it and trains the AR
decoder for the dual-track tokens (stage 2). Here both stages run on a synthetic corpus:
template lyrics (short, so songs are ~100-250 frames), a condition for each, and the rule-based
composer's song for it, encoded with the symbolic codec. Everything is seeded, so the same
config gives the same losses on the same machine (unless the minutes budget cuts a stage).

`evaluate_spread` samples candidates the way the preference stage does (temperature 1.0) and
reports how they spread: word error rate, tempo bucket, mode and in-key vocal notes. A model
worth aligning is *imperfect in a graded way*: some candidates near-perfect, some far off.

    python -m pipeline.models.tiny.pretrain --out DIR [--minutes M]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from pipeline.conditions import make_condition
from pipeline.lyrics.base import LyricRequest
from pipeline.lyrics.format import validate_lyrics
from pipeline.lyrics.template import THEMES, TemplateGenerator, TemplateOptions, mood_family
from pipeline.models.tiny.card import write_model_card
from pipeline.models.tiny.codec import SymbolicCodec, lyric_words, word_error_rate
from pipeline.models.tiny.composer import SCALES, compose, mode_for
from pipeline.models.tiny.oracle import oracle_metrics
from pipeline.models.tiny.model import HEADER_LEN, TinyLeLM, TinyLeLMConfig
from pipeline.vocab import load_vocabulary, tempo_bucket

CODEC = SymbolicCodec()
HELD_OUT_SALT = 1_000_003  # held-out conditions use seed + this salt: disjoint from training draws


@dataclass
class PretrainConfig:
    """Everything that decides a pretraining run; `training.json` records it."""

    seed: int = 0  # seeds the corpus (lyrics, conditions, songs), the init, batch order and dropout-free training
    n_songs: int = 4096  # synthetic training songs (lyric + condition + composed song)
    min_sentences: int = 1  # template lyrics: fewest sentences per vocal section (LeVo's test set: 4)
    max_sentences: int = 2  # template lyrics: most sentences per vocal section (LeVo's test set: 7)
    max_sections: int | None = 5  # keep only the first K sections of a template form (None: whole form)
    tempo_noise: float = 0.1  # share of training songs composed off their described tempo bucket (tag noise)
    mode_noise: float = 0.1  # share composed in the other mode than their emotion asks for (tag noise)
    max_frames: int = 320  # songs longer than this are skipped; also the model's and the sampler's frame cap
    hidden_size: int = 128  # model width (LM and AR decoder)
    lm_layers: int = 3  # Llama blocks of the LM
    decoder_layers: int = 1  # Llama blocks of the AR decoder
    num_heads: int = 4  # attention heads per block
    intermediate_size: int = 256  # MLP width per block
    delay: int = 2  # the AR decoder at frame t sees LM states up to t + delay
    max_prefix: int = 256  # conditioning prefix cap (description tags + lyric words)
    tag_buckets: int = 512  # hash buckets of description tags
    word_buckets: int = 4096  # hash buckets of lyric words
    batch_size: int = 16  # songs per stage-1 (LM) optimizer step
    stage2_batch_size: int = 16  # songs per stage-2 (AR decoder) step: its 18946-way vocals head is the cost
    lr: float = 2e-3  # Adam learning rate, both stages (linear warm-up, then constant)
    warmup_steps: int = 30  # linear warm-up steps at the start of each stage
    stage1_steps: int = 500  # LM steps (header + mixed tokens)
    stage2_steps: int = 870  # AR-decoder steps (vocals + accompaniment), LM frozen
    log_every: int = 25  # log (and record) the loss every N steps
    max_minutes: float = 10.0  # wall-clock budget for both stages; a stage past its share stops early
    stage1_share: float = 0.3  # stage 1's share of the budget (stage 2 also gets what stage 1 leaves)
    threads: int = 2  # torch.set_num_threads
    save_dtype: str = "float16"  # dtype of the saved weights (float16 halves the shipped file; loads as float32)

    def model_config(self) -> TinyLeLMConfig:
        return TinyLeLMConfig(hidden_size=self.hidden_size, lm_layers=self.lm_layers,
                              decoder_layers=self.decoder_layers, num_heads=self.num_heads,
                              intermediate_size=self.intermediate_size, delay=self.delay,
                              max_prefix=self.max_prefix, max_frames=self.max_frames,
                              tag_buckets=self.tag_buckets, word_buckets=self.word_buckets)  # fmt: skip


def synthetic_conditions(cfg: PretrainConfig, n: int, seed: int) -> list[dict]:
    """n conditions for short template lyrics, all drawn from `seed` (valid LeVo lyrics only)."""
    rng = random.Random(seed)
    vocab = load_vocabulary()
    generator = TemplateGenerator(TemplateOptions(min_sentences=cfg.min_sentences, max_sentences=cfg.max_sentences,
                                                  max_sections=cfg.max_sections))  # fmt: skip
    conditions: list[dict] = []
    i = 0
    while len(conditions) < n:
        emotion = rng.choice(vocab.emotions)
        theme = rng.choice(THEMES.get(mood_family(emotion)) or [""])
        request = LyricRequest(f"s{seed}-{i}", rng.randrange(2**31), "en", emotion, theme)
        i += 1
        text = generator.generate([request])[0].text
        if not text or validate_lyrics(text):
            continue
        row = {"lyric_id": request.lyric_id, "text": text, "language": "en", "emotion": emotion}
        conditions.append(make_condition(row, rng, vocab, min_instruments=2, max_instruments=3, library=None,
                                         library_share=0.0, auto_prompt="genre"))  # fmt: skip
    return conditions


def synthetic_corpus(cfg: PretrainConfig, n: int | None = None, seed: int | None = None) -> list[tuple[dict, dict]]:
    """(condition, tokens) pairs: a composer song per condition, encoded; songs over max_frames skipped."""
    seed = cfg.seed if seed is None else seed
    n = cfg.n_songs if n is None else n
    rng = random.Random(seed * 7919 + 1)
    corpus = []
    for cond in synthetic_conditions(cfg, n, seed):
        song = compose(_with_tag_noise(cond, cfg, rng), rng)
        tokens = CODEC.encode(song, lyric_words(cond["lyric"]))
        if len(tokens["mixed"]) <= cfg.max_frames:
            corpus.append((cond, tokens))
    return corpus


def _with_tag_noise(condition: dict, cfg: PretrainConfig, rng: random.Random) -> dict:
    """The condition the composer follows: usually the described one; with the noise rates,
    another tempo bucket or the other mode. Real training data's tags are noisy too, and the
    model learns the rate: at temperature 1 some candidates miss the described tempo or key."""
    target = dict(condition)
    if rng.random() < cfg.tempo_noise:
        described = tempo_bucket(condition["bpm"])
        target["bpm"] = rng.choice([b for b in range(60, 201) if tempo_bucket(b) != described])
    if rng.random() < cfg.mode_noise:
        target["mode"] = "major" if mode_for(condition.get("emotion", "")) == "minor" else "minor"
    return target


def _batches(n: int, size: int, rng: random.Random):
    """Endless index batches: a fresh shuffle each epoch."""
    while True:
        order = list(range(n))
        rng.shuffle(order)
        for i in range(0, n - size + 1 if n >= size else 1, size):
            yield order[i : i + size]


def _lm_pass(model: TinyLeLM, conditions: list[dict], tokens: list[dict]):
    """The LM over [prefix ; header ; mixed] for a right-padded batch: (hidden, prefix lengths)."""
    seqs, plens = zip(*(model.lm_input(cond, tok) for cond, tok in zip(conditions, tokens)))
    return model.lm(inputs_embeds=pad_sequence(seqs, batch_first=True)).last_hidden_state, plens


def lm_losses(model: TinyLeLM, conditions: list[dict], tokens: list[dict]) -> dict[str, torch.Tensor]:
    """Stage 1's losses (header, mixed incl. EOS), equal to model.forward's, without the dual-track
    heads that forward also evaluates (its 18946-way vocals head dominates a CPU step)."""
    hidden, plens = _lm_pass(model, conditions, tokens)
    eos = model.config.mixed_eos
    h_rows, m_rows, h_tgt, m_tgt = [], [], [], []
    for i, (p, tok) in enumerate(zip(plens, tokens)):
        n = len(tok["mixed"])
        h_rows.append(hidden[i, p - 1 : p - 1 + HEADER_LEN])
        m_rows.append(hidden[i, p + HEADER_LEN - 1 : p + HEADER_LEN + n])
        h_tgt += list(tok["header"])
        m_tgt += list(tok["mixed"]) + [eos]
    target = lambda xs: torch.as_tensor(xs, dtype=torch.long, device=model.device)  # noqa: E731
    return {"header": F.cross_entropy(model.header_head(torch.cat(h_rows)), target(h_tgt)),
            "mixed": F.cross_entropy(model.mixed_head(torch.cat(m_rows)), target(m_tgt))}  # fmt: skip


@torch.no_grad()
def lm_states(model: TinyLeLM, corpus, batch_size: int = 16) -> list[torch.Tensor]:
    """Per song, the frozen LM's state at each mixed token [n, d]: stage 2 reads them every step,
    so they are computed once (the LM does not change in stage 2)."""
    states = []
    for i in range(0, len(corpus), batch_size):
        chunk = corpus[i : i + batch_size]
        hidden, plens = _lm_pass(model, [c for c, _ in chunk], [t for _, t in chunk])
        for j, (p, (_, tok)) in enumerate(zip(plens, chunk)):
            states.append(hidden[j, p + HEADER_LEN : p + HEADER_LEN + len(tok["mixed"])].clone())
    return states


def decoder_losses(model: TinyLeLM, states: list[torch.Tensor], tokens: list[dict]) -> dict[str, torch.Tensor]:
    """Stage 2's losses (vocals, accompaniment), equal to model.forward's, from cached LM states:
    frame t reads cond_proj(h_{t+delay}) inside the song and end_pad past it."""
    k, d = model.config.delay, model.config.hidden_size
    lengths = [len(s) for s in states]
    tmax = max(lengths)
    frames = torch.zeros(len(states), tmax, d, device=model.device)
    inside = torch.zeros(len(states), tmax, 1, dtype=torch.bool, device=model.device)
    for i, s in enumerate(states):
        frames[i, : max(len(s) - k, 0)] = s[k:]
        inside[i, : max(len(s) - k, 0)] = True
    cond = torch.where(inside, model.cond_proj(frames), model.end_pad)
    targets = {s: pad_sequence([torch.as_tensor(t[s], dtype=torch.long, device=model.device) for t in tokens],
                               batch_first=True, padding_value=-100) for s in ("vocals", "accompaniment")}  # fmt: skip
    logits = model.dual_track_logits(cond, targets["vocals"].clamp(min=0), targets["accompaniment"].clamp(min=0))
    return {s: F.cross_entropy(logits[s].flatten(0, 1), targets[s].flatten(), ignore_index=-100) for s in targets}


def _train_stage(model: TinyLeLM, stage: int, corpus, cfg: PretrainConfig, steps: int, budget_s: float,
                 rng: random.Random, log: Callable) -> dict:  # fmt: skip
    start = time.perf_counter()
    model.set_training_stage(stage).eval()  # eval: nothing stochastic, and states cached in stage 2
    states = lm_states(model, corpus) if stage == 2 else None
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(cfg.warmup_steps, 1)))
    batches = _batches(len(corpus), cfg.batch_size if stage == 1 else cfg.stage2_batch_size, rng)
    losses, window, done = [], [], 0
    for step in range(1, steps + 1):
        idx = next(batches)
        if stage == 1:
            parts = lm_losses(model, [corpus[i][0] for i in idx], [corpus[i][1] for i in idx])
        else:
            parts = decoder_losses(model, [states[i] for i in idx], [corpus[i][1] for i in idx])
        loss = sum(parts.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        window.append({s: v.item() for s, v in parts.items()} | {"loss": loss.item()})
        done = step
        elapsed = time.perf_counter() - start
        if step % cfg.log_every == 0 or step == steps or elapsed > budget_s:
            mean = {key: sum(w[key] for w in window) / len(window) for key in window[0]}
            losses.append({"step": step, **{key: round(v, 5) for key, v in mean.items()}})
            log(f"stage {stage} step {step}/{steps} loss {mean['loss']:.4f} "
                + " ".join(f"{key} {v:.3f}" for key, v in mean.items() if key != "loss") + f" ({elapsed:.0f}s)")  # fmt: skip
            window = []
        if elapsed > budget_s:
            log(f"stage {stage}: time budget {budget_s:.0f}s spent after {step} steps")
            break
    model.eval()
    return {"steps": done, "stopped_early": done < steps, "seconds": round(time.perf_counter() - start, 2),
            "losses": losses, "final_loss": losses[-1]["loss"] if losses else None}  # fmt: skip


def pretrain(cfg: PretrainConfig, out_dir: str | Path, log: Callable = print, corpus=None) -> dict:
    """Stage 1 (LM) then stage 2 (AR decoder, LM frozen), Adam; saves the checkpoint and training.json.

    Returns the training.json dict: config, corpus stats, per stage steps/seconds/losses
    (means over each log window), final losses and seconds per stage."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    corpus = synthetic_corpus(cfg) if corpus is None else corpus
    frames = [len(t["mixed"]) for _, t in corpus]
    corpus_s = time.perf_counter() - t0
    log(f"corpus: {len(corpus)} songs, frames min {min(frames)} mean {sum(frames) / len(frames):.0f} "
        f"max {max(frames)} ({corpus_s:.1f}s)")  # fmt: skip
    torch.manual_seed(cfg.seed)
    model = TinyLeLM(cfg.model_config())
    rng = random.Random(cfg.seed)
    budget = cfg.max_minutes * 60 - corpus_s
    stage1 = _train_stage(model, 1, corpus, cfg, cfg.stage1_steps, budget * cfg.stage1_share, rng, log)
    stage2 = _train_stage(model, 2, corpus, cfg, cfg.stage2_steps, budget - stage1["seconds"], rng, log)
    model.set_training_stage(0).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(getattr(torch, cfg.save_dtype)).save_pretrained(out_dir)
    report = {"config": asdict(cfg), "corpus": {"songs": len(corpus), "frames_min": min(frames),
              "frames_mean": sum(frames) / len(frames), "frames_max": max(frames), "seconds": round(corpus_s, 2)},
              "stage1": stage1, "stage2": stage2,
              "final_losses": {"stage1": stage1["final_loss"], "stage2": stage2["final_loss"]},
              "seconds": {"corpus": round(corpus_s, 2), "stage1": stage1["seconds"], "stage2": stage2["seconds"]}}  # fmt: skip
    (out_dir / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def in_key_share(score) -> float | None:
    """Fraction of sung notes whose pitch class is in the score's (decoded) key and mode; None if none sung."""
    if not score.vocals:
        return None
    scale = {(score.key + d) % 12 for d in SCALES.get(score.mode, SCALES["major"])}
    return sum(w.pitch % 12 in scale for w in score.vocals) / len(score.vocals)


@torch.no_grad()
def evaluate_spread(model: TinyLeLM, conditions: list[dict], n_candidates: int = 4, seed: int = 0,
                    max_frames: int | None = None) -> dict:  # fmt: skip
    """Samples n_candidates per condition at temperature 1.0 and measures each one.

    Returns fractions over all candidates: wer_below_10 (WER < 0.10), wer_above_40 (> 0.40),
    tempo_hit (decoded bpm's tempo bucket == the described one), mode_hit (decoded mode ==
    composer.mode_for(emotion)), mean_in_key (mean share of sung notes in the decoded key's
    scale; a candidate singing nothing counts 0), plus mean_wer and the candidate count."""
    model.eval()
    rows = []
    for i, cond in enumerate(conditions):
        words = lyric_words(cond["lyric"])
        seeds = [seed * 100_003 + i * n_candidates + j for j in range(n_candidates)]
        for tokens in model.sample_batch(cond, seeds, temperature=1.0, max_frames=max_frames):
            score = CODEC.decode(tokens, cond, words)
            share = in_key_share(score)
            oracle = oracle_metrics(tokens, cond, score=score)
            rows.append({"wer": word_error_rate(score, words), "tempo": oracle["tempo_hit"] == 1.0,
                         "mode": oracle["mode_hit"] == 1.0,
                         "in_key": 0.0 if share is None else share, "frames": len(tokens["mixed"])})  # fmt: skip
    n = max(len(rows), 1)
    mean = lambda f: sum(f(r) for r in rows) / n  # noqa: E731
    return {"candidates": len(rows), "n_candidates": n_candidates, "wer_below_10": mean(lambda r: r["wer"] < 0.10),
            "wer_above_40": mean(lambda r: r["wer"] > 0.40), "tempo_hit": mean(lambda r: r["tempo"]),
            "mode_hit": mean(lambda r: r["mode"]), "mean_in_key": mean(lambda r: r["in_key"]),
            "mean_wer": mean(lambda r: r["wer"]), "mean_frames": mean(lambda r: r["frames"])}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="checkpoint folder (save_pretrained + training.json)")
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock budget for training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--held-out", type=int, default=48, help="held-out conditions to evaluate")
    parser.add_argument("--candidates", type=int, default=4)
    args = parser.parse_args(argv)
    cfg = PretrainConfig(seed=args.seed)
    if args.minutes is not None:
        cfg.max_minutes = args.minutes
    report = pretrain(cfg, args.out, log=lambda m: print(m, flush=True))
    print(json.dumps({"seconds": report["seconds"], "final_losses": report["final_losses"]}), flush=True)
    model = TinyLeLM.from_pretrained(args.out, torch_dtype=torch.float32).eval()  # as songpref loads it
    t = time.perf_counter()
    held_out = synthetic_conditions(cfg, args.held_out, cfg.seed + HELD_OUT_SALT)
    spread = evaluate_spread(model, held_out, args.candidates, seed=cfg.seed)
    spread["seconds"] = round(time.perf_counter() - t, 1)
    (Path(args.out) / "spread.json").write_text(json.dumps(spread, indent=2) + "\n")
    parameters = sum(p.numel() for p in model.parameters())
    write_model_card(args.out, report, spread, parameters, cfg.save_dtype)
    print(json.dumps(spread, indent=2), flush=True)


if __name__ == "__main__":
    main()
