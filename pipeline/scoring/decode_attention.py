"""Attention of one query row over a key/value cache, split over the keys (flash-decoding), in Triton.

A greedy decoding step attends with one query row per window, so the work is reading the cache:
SDPA's flash kernel computes a tile of query rows and reads the cross-attention cache at about
70 % of an H100's bandwidth; cuDNN's kernel streams it at the copy rate but its output changes
from run to run. This kernel reads each (window, head)'s keys in fixed splits of `SPLIT_KEYS`:
a split keeps its running maximum, sum and weighted values in fp32 and writes them out; a second
pass folds the splits in index order. No atomics and no order that depends on timing, so the same
inputs give the same bits on every run, and two callers that pass the same shapes (the fast
decoder and `whisper.decode`) run the same arithmetic.

Layout: q [B, 1, H·D], k and v [B, T, H·D] with the last dimension contiguous (whisper's own
tensors, heads not split out), out [B, 1, H·D] in q's dtype. Scale 1/sqrt(D), as SDPA's default.

`live` (optional, [B] on the device): rows whose entry is 0 read no keys and get zeros. A batch's
finished windows (and its padding) then cost no cache reads, with no host round trip, inside a
captured graph; a live row's arithmetic is the same as without `live`.
"""

from __future__ import annotations

import os

# Keys per split, keys per loaded block, warps per program, blocks in flight (Triton's software
# pipelining: the next blocks are copied to shared memory while one is reduced). The split and
# block sizes fix how the sums over keys are grouped, so they are constants: the fastest of
# whisper_gpu.py's kernel bench on an H100 (192 windows: one split per window and head), fixed
# here, never chosen at run time.
SPLIT_KEYS = 1536
BLOCK_KEYS = 64
NUM_WARPS = 4
NUM_STAGES = 3

_LOG2E = 1.4426950408889634
_kernels = None


def available(device) -> bool:
    """Whether the kernel can run for tensors on `device`: CUDA with Triton, or Triton's CPU
    interpreter (TRITON_INTERPRET=1, how the tests check it without a GPU)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    kind = getattr(device, "type", str(device))
    return kind == "cuda" or (kind == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


def _build():
    import triton
    import triton.language as tl

    @triton.jit
    def partial_kernel(q_ptr, k_ptr, v_ptr, out_ptr, m_ptr, l_ptr, acc_ptr, live_ptr, n_keys, n_splits,
                       sq_b, sk_b, sk_t, sv_b, sv_t, so_b, qk_scale,
                       H: tl.constexpr, D: tl.constexpr, SPLIT: tl.constexpr, BLOCK: tl.constexpr,
                       STAGES: tl.constexpr, ONE_SPLIT: tl.constexpr, HAS_LIVE: tl.constexpr):  # fmt: skip
        bh = tl.program_id(0)
        split = tl.program_id(1)
        b = (bh // H).to(tl.int64)
        h = bh % H
        d = tl.arange(0, D)
        start = split * SPLIT
        stop = tl.minimum(SPLIT, n_keys - start)
        if HAS_LIVE:
            stop = tl.where(tl.load(live_ptr + b) != 0, stop, 0)  # a dead row: no keys, zeros out
        # log2(e)/sqrt(D) folded into q: scores come out in base 2, for exp2.
        q = tl.load(q_ptr + b * sq_b + h * D + d).to(tl.float32) * qk_scale
        m = tl.full((), float("-inf"), tl.float32)
        # Per key slot of a block: partial sums, folded across the block's slots once at the end.
        total = tl.zeros((BLOCK,), tl.float32)
        acc = tl.zeros((BLOCK, D), tl.float32)
        # Only the blocks that hold a live key: a block of dead keys would add exactly nothing.
        for j in tl.range(0, stop, BLOCK, num_stages=STAGES):
            t = start + j + tl.arange(0, BLOCK)
            live = t < n_keys
            rows = t.to(tl.int64)
            k = tl.load(k_ptr + b * sk_b + rows[:, None] * sk_t + h * D + d[None, :], mask=live[:, None], other=0.0)
            s = tl.sum(k.to(tl.float32) * q[None, :], axis=1)
            s = tl.where(live, s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, axis=0))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a block with no live key adds nothing
            alpha = tl.exp2(m - m_safe)
            p = tl.exp2(s - m_safe)
            v = tl.load(v_ptr + b * sv_b + rows[:, None] * sv_t + h * D + d[None, :], mask=live[:, None], other=0.0)
            acc = acc * alpha + p[:, None] * v.to(tl.float32)
            total = total * alpha + p
            m = m_new
        acc = tl.sum(acc, axis=0)
        total = tl.sum(total, axis=0)
        if ONE_SPLIT:
            if HAS_LIVE:
                total = tl.where(stop > 0, total, 1.0)  # a dead row: 0 / 1
            tl.store(out_ptr + b * so_b + h * D + d, (acc / total).to(out_ptr.dtype.element_ty))
        else:
            at = bh * n_splits + split
            tl.store(m_ptr + at, m)
            tl.store(l_ptr + at, total)
            tl.store(acc_ptr + at.to(tl.int64) * D + d, acc)

    @triton.jit
    def combine_kernel(out_ptr, m_ptr, l_ptr, acc_ptr, live_ptr, n_splits, so_b, H: tl.constexpr, D: tl.constexpr,
                       HAS_LIVE: tl.constexpr):  # fmt: skip
        bh = tl.program_id(0)
        b = (bh // H).to(tl.int64)
        h = bh % H
        d = tl.arange(0, D)
        if HAS_LIVE:
            if tl.load(live_ptr + b) == 0:
                tl.store(out_ptr + b * so_b + h * D + d, tl.zeros((D,), tl.float32).to(out_ptr.dtype.element_ty))
                return
        base = bh * n_splits
        top = tl.full((), float("-inf"), tl.float32)
        for s in range(n_splits):
            top = tl.maximum(top, tl.load(m_ptr + base + s))
        total = tl.zeros((), tl.float32)
        acc = tl.zeros((D,), tl.float32)
        for s in range(n_splits):  # in index order: the same sum on every run
            w = tl.exp2(tl.load(m_ptr + base + s) - top)
            total += tl.load(l_ptr + base + s) * w
            acc += tl.load(acc_ptr + (base + s).to(tl.int64) * D + d) * w
        tl.store(out_ptr + b * so_b + h * D + d, (acc / total).to(out_ptr.dtype.element_ty))

    return partial_kernel, combine_kernel


def decode_attention(q, k, v, n_head: int, live=None):
    """softmax(q·kᵀ/sqrt(D))·v per head for one query row per batch entry (see the module docstring);
    rows where `live` is 0 are skipped and get zeros."""
    import torch

    global _kernels
    batch, rows, width = q.shape
    if rows != 1:
        raise ValueError(f"decode_attention: one query row per entry, got {rows}")
    if k.shape != v.shape or k.shape[0] != batch or k.shape[2] != width:
        raise ValueError(f"decode_attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not match")
    if width % n_head:
        raise ValueError(f"decode_attention: width {width} is not a multiple of {n_head} heads")
    head = width // n_head
    if head & (head - 1) or head < 16:
        raise ValueError(f"decode_attention: head size {head} must be a power of two, at least 16")
    if q.stride(2) != 1 or k.stride(2) != 1 or v.stride(2) != 1:
        raise ValueError("decode_attention: the last dimension of q, k and v must be contiguous")
    if live is not None and (live.shape != (batch,) or live.device != q.device):
        raise ValueError(f"decode_attention: live must be one entry per row on {q.device}, got {tuple(live.shape)} "
                         f"on {live.device}")
    n_keys = k.shape[1]
    if n_keys == 0:
        raise ValueError("decode_attention: no keys")
    if _kernels is None:
        _kernels = _build()
    partial_kernel, combine_kernel = _kernels
    splits = -(-n_keys // SPLIT_KEYS)
    out = torch.empty((batch, 1, width), dtype=q.dtype, device=q.device)
    scale = head**-0.5 * _LOG2E
    programs = batch * n_head
    has_live, live = live is not None, out if live is None else live
    if splits == 1:
        partial_kernel[(programs, 1)](q, k, v, out, out, out, out, live, n_keys, 1, q.stride(0), k.stride(0), k.stride(1),
                                      v.stride(0), v.stride(1), out.stride(0), scale, H=n_head, D=head,
                                      SPLIT=SPLIT_KEYS, BLOCK=BLOCK_KEYS, STAGES=NUM_STAGES, ONE_SPLIT=True,
                                      HAS_LIVE=has_live, num_warps=NUM_WARPS)  # fmt: skip
        return out
    m = torch.empty((programs, splits), dtype=torch.float32, device=q.device)
    total = torch.empty_like(m)
    acc = torch.empty((programs, splits, head), dtype=torch.float32, device=q.device)
    partial_kernel[(programs, splits)](q, k, v, out, m, total, acc, live, n_keys, splits, q.stride(0), k.stride(0),
                                       k.stride(1), v.stride(0), v.stride(1), out.stride(0), scale, H=n_head, D=head,
                                       SPLIT=SPLIT_KEYS, BLOCK=BLOCK_KEYS, STAGES=NUM_STAGES, ONE_SPLIT=False,
                                       HAS_LIVE=has_live, num_warps=NUM_WARPS)  # fmt: skip
    combine_kernel[(programs,)](out, m, total, acc, live, splits, out.stride(0), H=n_head, D=head, HAS_LIVE=has_live,
                                num_warps=1)  # fmt: skip
    return out
