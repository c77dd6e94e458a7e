"""Sampling TinyLeLM songs for many conditions in one batch.

Every song draws from its own seeded torch.Generator, so what a song is depends on its condition,
its seed and the sampling settings only. Songs of one condition share their conditioning prefix;
songs of different conditions have prefixes of different lengths, which are left-padded and
masked, each row keeping its own positions. One batch over many conditions costs about what one
condition's batch costs: the per-step overhead of the small model dominates its arithmetic.

Numerics: a batch of one condition takes exactly the unpadded path (no mask), so its songs are
bit-identical to sampling that condition alone. A padded batch computes the same functions, but
masked attention rounds differently in the last bits of the logits; a draw can change only when
its uniform variate falls within that rounding of a boundary between two tokens.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache


def _padded_prefixes(model, conditions: list[dict]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Left-padded prefix embeddings [B, L, d], the attention mask (None when no row is padded)
    and each row's prefix length."""
    once = {id(c): c for c in conditions}  # sample_batch repeats one condition: embed it once
    embedded = {key: model.prefix_embeds(c) for key, c in once.items()}
    prefixes = [embedded[id(c)] for c in conditions]
    lengths = torch.tensor([len(p) for p in prefixes], device=model.device)
    longest = int(lengths.max())
    if bool((lengths == longest).all()):
        return torch.stack(prefixes), None, lengths
    d = prefixes[0].shape[-1]
    padded = torch.stack([torch.cat([p.new_zeros(longest - len(p), d), p]) for p in prefixes])
    mask = (torch.arange(longest, device=model.device)[None] >= (longest - lengths)[:, None]).long()
    return padded, mask, lengths


@torch.no_grad()
def sample_songs(model, conditions: list[dict], seeds: list[int], temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, max_frames: int | None = None) -> list[dict[str, list[int]]]:  # fmt: skip
    """One song per (condition, seed) row. The LM runs first with a KV cache (header, then mixed
    until EOS or max_frames), then the AR decoder with a KV cache over the delayed LM states: the
    same distribution as interleaving them, as the LM never reads the dual-track tokens."""
    from pipeline.models.tiny.model import HEADER_KIND, HEADER_LEN, MIXED_KIND, STREAMS

    if len(conditions) != len(seeds):
        raise ValueError(f"sample_songs: {len(conditions)} conditions for {len(seeds)} seeds")
    c, k, b = model.config, model.config.delay, len(seeds)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    draw = lambda logits, on=None: model._draw(logits, gens, temperature, top_k, top_p, on)  # noqa: E731
    max_frames = min(max_frames or c.max_frames, c.max_frames)
    prefix, mask, prefix_lengths = _padded_prefixes(model, conditions)
    cache = DynamicCache(config=model.lm.config)
    position = prefix_lengths.clone()  # the next token's position in each row (pads take none)

    def lm_step(x: torch.Tensor) -> torch.Tensor:
        nonlocal mask, position
        extra = {}
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
            extra = {"attention_mask": mask, "position_ids": position[:, None]}
        position = position + 1
        return model.lm(inputs_embeds=x[:, None], cache=cache, use_cache=True, **extra).last_hidden_state[:, -1]

    if mask is None:
        h = model.lm(inputs_embeds=prefix, cache=cache, use_cache=True).last_hidden_state[:, -1]
    else:
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        h = model.lm(inputs_embeds=prefix, attention_mask=mask, position_ids=positions, cache=cache,
                     use_cache=True).last_hidden_state[:, -1]  # fmt: skip
    header = []
    for _ in range(HEADER_LEN):
        header.append(draw(model.header_head(h)))
        h = lm_step(model.header_emb(header[-1]) + model.kind_emb.weight[HEADER_KIND])
    mixed, frames = [], []
    length = torch.full((b,), max_frames, dtype=torch.long, device=model.device)
    done = torch.zeros(b, dtype=torch.bool, device=model.device)
    for t in range(max_frames):
        logits = model.mixed_head(h)
        if t == 0:
            logits[:, c.mixed_eos] = float("-inf")  # no empty songs
        tok = draw(logits, ~done)
        ended = (tok == c.mixed_eos) & ~done
        length[ended], done = t, done | ended
        if bool(done.all()):
            break
        mixed.append(tok.masked_fill(done, 0))
        h = lm_step(model.mixed_emb(mixed[-1]) + model.kind_emb.weight[MIXED_KIND])
        frames.append(h)
    cache = DynamicCache(config=model.decoder.config)
    step = lambda x: model.decoder(inputs_embeds=x[:, None], cache=cache, use_cache=True).last_hidden_state[:, -1]  # noqa
    prev = model.dual_bos.expand(b, -1)
    vocals, accompaniment = [], []
    for t in range(int(length.max())):
        state = model.cond_proj(frames[t + k]) if t + k < len(frames) else model.end_pad.expand(b, -1)
        state = torch.where((t + k < length)[:, None], state, model.end_pad)
        out = step(state + prev)
        vocals.append(draw(model.vocals_head(out), t < length))
        accompaniment.append(draw(model.accompaniment_head(out), t < length))
        prev = model.vocals_emb(vocals[-1]) + model.accompaniment_emb(accompaniment[-1])
    stack = lambda xs: torch.stack(xs, 1).tolist() if xs else [[] for _ in range(b)]  # noqa: E731
    streams = dict(zip(STREAMS, map(stack, (header, mixed, vocals, accompaniment))))
    cut = [int(n) for n in length]
    return [{s: streams[s][i][: HEADER_LEN if s == "header" else cut[i]] for s in STREAMS} for i in range(b)]
