"""Rows packed end to end into one sequence for the tiny model's two Llama stacks (no padding).

A DPO micro-batch holds songs of different lengths: padded to the longest, a batch of 2 pairs of
90-150 s songs spends about an eighth of its matrix products and attention on padding. Packed,
the rows sit one after another in a [1, N, d] sequence, each with its own positions, and attention
stays causal inside each row: on CUDA through PyTorch's variable-length flash attention
(`torch.nn.attention.varlen`), elsewhere (or without it) through SDPA row by row, which gives the
same function.

The stacks keep transformers' Llama blocks: `use_packed_attention` registers an attention
implementation that takes the packed rows from the blocks' keyword arguments and otherwise behaves
as SDPA (so sampling with a cache is unchanged), and `run_stack` runs a stack's blocks over a
packed sequence without building a mask.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.integrations.sdpa_attention import sdpa_attention_forward

IMPLEMENTATION = "tiny_packed"


@dataclass(frozen=True)
class PackedRows:
    """Where each row lies in a packed sequence."""

    cu: torch.Tensor  # [rows + 1] int32 on the device: each row's start, then the total
    bounds: tuple[tuple[int, int], ...]  # the same on the host, (start, end) per row
    max_len: int  # a bound on any row's length (it sizes the variable-length kernel's grid)

    @classmethod
    def of(cls, lengths: list[int], device, max_len: int) -> "PackedRows":
        starts = [0]
        for n in lengths:
            starts.append(starts[-1] + n)
        if lengths and max(lengths) > max_len:
            raise ValueError(f"packed rows: a row of {max(lengths)} positions exceeds the bound {max_len}")
        cu = torch.tensor(starts, dtype=torch.int32, device=device)
        return cls(cu, tuple(zip(starts[:-1], starts[1:])), max_len)


def _varlen():
    """PyTorch's variable-length attention and its keyword for causal rows (the API changed between
    versions: `is_causal=True`, later `window_size=(-1, 0)`), or None where it does not exist."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    if "is_causal" in params:
        return varlen_attn, {"is_causal": True}, "scale" in params
    if "window_size" in params:
        return varlen_attn, {"window_size": (-1, 0)}, "scale" in params
    return None


_VARLEN = _varlen()


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                     packed: PackedRows | None = None, **kwargs):  # fmt: skip
    """The blocks' attention: causal inside each packed row when `packed` is given, else SDPA as usual.
    query/key/value: [1, heads, N, head size]; returns [1, N, heads, head size]."""
    if packed is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if dropout:
        raise ValueError("packed attention: dropout is not supported")
    if _VARLEN is not None and query.is_cuda and query.dtype in (torch.float16, torch.bfloat16):
        varlen_attn, causal, has_scale = _VARLEN
        q, k, v = (x.transpose(1, 2)[0] for x in (query, key, value))  # [N, heads, head size]
        q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
        extra = dict(causal)
        if has_scale and scaling is not None:
            extra["scale"] = scaling
        elif scaling is not None and abs(scaling - q.shape[-1] ** -0.5) > 1e-12:
            raise ValueError("packed attention: this torch's varlen_attn has no scale argument")
        return varlen_attn(q, k, v, packed.cu, packed.cu, packed.max_len, packed.max_len, **extra)[None], None
    out = [F.scaled_dot_product_attention(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, scale=scaling)
           for a, b in packed.bounds]  # fmt: skip
    return torch.cat(out, dim=2).transpose(1, 2), None


def use_packed_attention(stack) -> None:
    """Point a Llama stack's blocks at `packed_attention` (SDPA's masks for the unpacked calls)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(IMPLEMENTATION, packed_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, sdpa_mask)
    stack.config._attn_implementation = IMPLEMENTATION


def run_stack(stack, x: torch.Tensor, positions: torch.Tensor, packed: PackedRows) -> torch.Tensor:
    """A LlamaModel over one packed sequence x [1, N, d] (positions [1, N]: each row from 0): its
    blocks and final norm, as `stack(inputs_embeds=x)` would run them on each row alone."""
    if stack.config._attn_implementation != IMPLEMENTATION:
        raise ValueError("run_stack: the stack's attention is not the packed one (use_packed_attention)")
    embeddings = stack.rotary_emb(x, position_ids=positions)
    for layer in stack.layers[: stack.config.num_hidden_layers]:
        x = layer(x, position_ids=positions, position_embeddings=embeddings, packed=packed)
    return stack.norm(x)
