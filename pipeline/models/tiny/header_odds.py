"""A policy's exact chance of hitting a condition's tempo and mode.

A tiny-model song's tempo and mode are decided by its 3 header tokens alone, sampled before any
frame. So the probability that a song hits the described tempo bucket and mode is a sum over
header sequences, which this module computes from the model's own header distribution under the
round's sampling settings: no sampled songs, hence no song noise (4 songs a prompt read a hit
rate to about ±0.25). Header prefixes whose probability falls under `floor` are not expanded;
their total is returned as `unexplored`: each probability may read low by at most that much.
"""

from __future__ import annotations

import torch

HEADER_HITS = ("tempo_hit", "mode_hit")
HEADER_FLOOR = 1e-5  # leaves about 0.002 of a prompt's mass unexplored, at a third to a sixth of the cost of 1e-7


def header_hits(header: list[int], condition: dict) -> dict[str, float]:
    """The oracle's tempo and mode hit of any song with this header."""
    from pipeline.models.tiny.oracle import decode_candidate, header_metrics

    return header_metrics(decode_candidate({"header": header, "mixed": [], "vocals": [], "accompaniment": []}, condition),
                          condition)  # fmt: skip


@torch.no_grad()
def expected_header_hits(model, condition: dict, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                         floor: float = HEADER_FLOOR) -> dict[str, float]:  # fmt: skip
    """{"tempo_hit", "mode_hit"}: the probability that a song sampled for `condition` hits each,
    and "unexplored": the probability mass of header prefixes under `floor`, left out.

    The prefix runs once; each header step extends every kept branch by one token on a copy of its
    parent's KV cache, as sampling does (a batch of one condition: no padding, the same numerics)."""
    from transformers.cache_utils import DynamicCache

    from pipeline.models.tiny.model import HEADER_KIND, HEADER_LEN, sampling_probs

    cache = DynamicCache(config=model.lm.config)
    state = model.lm(inputs_embeds=model.prefix_embeds(condition)[None], cache=cache, use_cache=True).last_hidden_state
    heads, mass, unexplored = [[]], torch.ones(1, dtype=torch.float64), 0.0
    for step in range(HEADER_LEN):
        joint = mass[:, None] * sampling_probs(model.header_head(state[:, -1]), temperature, top_k, top_p).double().cpu()
        if step == HEADER_LEN - 1:
            break
        parents, tokens = (joint >= floor).nonzero(as_tuple=True)
        unexplored += float(joint.sum() - joint[parents, tokens].sum())
        heads, mass = [heads[p] + [t] for p, t in zip(parents.tolist(), tokens.tolist())], joint[parents, tokens]
        cache.batch_select_indices(parents.to(model.device))
        embeds = model.header_emb(tokens.to(model.device)) + model.kind_emb.weight[HEADER_KIND]
        state = model.lm(inputs_embeds=embeds[:, None], cache=cache, use_cache=True).last_hidden_state
    hits = last_token_hits(heads, joint.shape[1], condition)
    expected = {name: float((joint * hits[..., i]).sum()) for i, name in enumerate(HEADER_HITS)}
    return expected | {"unexplored": unexplored}


def last_token_hits(heads: list[list[int]], vocab: int, condition: dict) -> torch.Tensor:
    """[heads, vocab, 2]: the tempo and mode hit of each head completed by each last token.

    A header's fields are its first token in each field's range (codec.decode_header), so a
    completed header reads as its head's fields with the last token filling those still missing:
    the hits are looked up once per distinct pair of fields, not decoded per header."""
    from pipeline.models.tiny.codec import decode_header

    singles = [decode_header([t]) for t in range(vocab)]
    found: dict[tuple, list[float]] = {}
    rows = []
    for head in heads:
        fields, row = decode_header(head), []
        for t, single in enumerate(singles):
            key = (single["bpm"] if fields["bpm"] is None else fields["bpm"], fields["mode"] or single["mode"])
            if key not in found:
                found[key] = list(header_hits(head + [t], condition).values())
            row.append(found[key])
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)
