"""Greedy Whisper decoding with a static KV cache, token for token equal to `whisper.decode`.

openai-whisper's decoder spends most of a step on overhead rather than on the GPU work a step
needs: it casts every fp32 weight to fp16 on each call, grows the self-attention cache with
`torch.cat`, and launches about a thousand small kernels from Python. Here the weights are cast
once, the caches are preallocated, and on CUDA each step replays captured CUDA graphs.

The output must stay *identical* to the reference (the phoneme error rate, and so the preference
pairs, must not depend on which decoder ran), so every operation mirrors the one in
`whisper.model` with the same shapes and dtypes: the same kernels run on the same values. The one
operation that cannot be captured with static shapes is self-attention over the tokens so far:
the reference attends over exactly `t` keys, and attention over a padded, masked cache would
reduce in another order. So a step is `n_layer + 1` graph segments with the self-attention,
eager, between them: each segment runs the rest of one layer and the projections of the next.
Graph sets are kept per batch size (a full batch and a padded partial one), over caches shared
by all sizes.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import OrderedDict
from dataclasses import dataclass

# The plan is built from whisper's own DecodingTask, so the initial tokens, the suppressed
# tokens and the length limit are whatever the reference would use for the same options.


@dataclass(frozen=True)
class GreedyPlan:
    initial_tokens: tuple[int, ...]  # the sot sequence, e.g. <|startoftranscript|><|en|><|transcribe|><|notimestamps|>
    sot_index: int
    steps: int  # tokens sampled at most: the reference's sample_len, capped by the text context
    eot: int
    suppress_tokens: tuple[int, ...]  # suppressed at every step (SuppressTokens)
    blank_tokens: tuple[int, ...]  # suppressed at the first sampled step only (SuppressBlank)


def greedy_plan(model, options) -> GreedyPlan:
    """The decoding rules the reference applies for `options` (a `whisper.DecodingOptions`)."""
    from whisper.decoding import DecodingTask, SuppressBlank, SuppressTokens

    if options.beam_size is not None or options.best_of is not None or options.temperature != 0:
        raise ValueError("the fast decoder is greedy only: temperature 0, no beam search, no best_of")
    if not options.without_timestamps:
        raise ValueError("the fast decoder decodes without timestamps (without_timestamps=True)")
    task = DecodingTask(model, options)
    blank: tuple[int, ...] = ()
    suppress: tuple[int, ...] = ()
    for rule in task.logit_filters:
        if isinstance(rule, SuppressBlank):
            blank = tuple(task.tokenizer.encode(" ") + [task.tokenizer.eot])
        elif isinstance(rule, SuppressTokens):
            suppress = tuple(rule.suppress_tokens)
        else:
            raise ValueError(f"the fast decoder does not implement {type(rule).__name__}")
    # The reference stops once the sequence is longer than the text context.
    steps = min(task.sample_len, model.dims.n_text_ctx + 1 - len(task.initial_tokens))
    return GreedyPlan(tuple(task.initial_tokens), task.sot_index, steps, task.tokenizer.eot, suppress, blank)


class _Weights:
    """The decoder's weights cast once to the compute dtype (the reference casts on every call)."""

    def __init__(self, model, dtype):
        dec = model.decoder
        cast = lambda p: None if p is None else p.detach().to(dtype)  # noqa: E731
        lin = lambda m: (cast(m.weight), cast(m.bias))  # noqa: E731
        ln = lambda m: (m.normalized_shape, m.weight, m.bias, m.eps)  # noqa: E731
        self.dtype = dtype
        self.dims = model.dims
        self.embedding = dec.token_embedding.weight  # added in its own dtype, as the reference does
        self.embedding_t = cast(dec.token_embedding.weight)
        self.positional = dec.positional_embedding
        self.mask = dec.mask
        self.ln = ln(dec.ln)
        self.layers = []
        for b in dec.blocks:
            self.layers.append(dict(
                attn=b.attn, cross=b.cross_attn,
                attn_ln=ln(b.attn_ln), q=lin(b.attn.query), k=lin(b.attn.key), v=lin(b.attn.value), o=lin(b.attn.out),
                x_ln=ln(b.cross_attn_ln), xq=lin(b.cross_attn.query), xk=lin(b.cross_attn.key),
                xv=lin(b.cross_attn.value), xo=lin(b.cross_attn.out),
                mlp_ln=ln(b.mlp_ln), fc1=lin(b.mlp[0]), fc2=lin(b.mlp[2]),
            ))
        self.buffers: _Buffers | None = None
        self.runners: "OrderedDict[tuple, _Runner]" = OrderedDict()  # by batch size and rules, least recent first

    def runner(self, plan: GreedyPlan, batch: int, n_audio: int, device, graphs: bool) -> "_Runner":
        """The runner for this batch size, made (and on CUDA its graphs captured) on first use and
        kept for the next batches of that size: a partial batch no longer evicts the full one."""
        import torch

        key = _runner_key(plan, batch, n_audio, device, graphs)
        r = self.runners.get(key)
        if r is not None:
            self.runners.move_to_end(key)
            return r
        t_max = len(plan.initial_tokens) + plan.steps - 1
        b = self.buffers
        if b is None or b.key != (t_max, n_audio, str(device)) or b.capacity < batch:
            # Every runner views the old buffers: drop them all before taking new ones.
            self.runners.clear()
            self.buffers = b = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
            self.buffers = b = _Buffers(self, t_max, batch, n_audio, device)
        while len(self.runners) >= MAX_RUNNERS:
            self.runners.popitem(last=False)
        r = self.runners[key] = _Runner(self, plan, batch, b, device, graphs, key)
        return r


# Runners kept per model: batch sizes seen recently (a full batch, padded partial batches). Each
# holds only small tensors and its graphs' workspaces; the large caches are shared.
MAX_RUNNERS = 8


_WEIGHTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _weights(model, dtype) -> _Weights:
    w = _WEIGHTS.get(model)
    if w is None or w.dtype != dtype:
        w = _WEIGHTS[model] = _Weights(model, dtype)
    return w


def _linear(x, wb):
    import torch.nn.functional as F

    return F.linear(x, wb[0], wb[1])


def _layer_norm(x, p):
    import torch.nn.functional as F

    return F.layer_norm(x.float(), p[0], p[1], p[2], p[3]).type(x.dtype)  # as whisper's LayerNorm


class _Buffers:
    """The large static tensors: the self-attention caches and the cross-attention keys and values
    of every layer, for up to `capacity` rows. Runners of smaller batches take the first rows, so
    graphs for several batch sizes share one allocation (the cross-attention cache alone is about
    250 MB per window for large-v3)."""

    def __init__(self, w: _Weights, t_max: int, capacity: int, n_audio: int, device):
        import torch

        d, n_layer = w.dims.n_text_state, w.dims.n_text_layer
        kw = dict(dtype=w.dtype, device=device)
        self.key = (t_max, n_audio, str(device))
        self.capacity = capacity
        self.kc = torch.zeros(n_layer, capacity, t_max, d, **kw)
        self.vc = torch.zeros(n_layer, capacity, t_max, d, **kw)
        self.ck = torch.zeros(n_layer, capacity, n_audio, d, **kw)
        self.cv = torch.zeros(n_layer, capacity, n_audio, d, **kw)


class _Runner:
    """One batch size: the first `batch` rows of the shared buffers, small buffers of its own
    and, on CUDA, the captured graph segments of one step."""

    def __init__(self, w: _Weights, plan: GreedyPlan, batch: int, buffers: _Buffers, device, graphs: bool, key):
        import torch

        d = w.dims.n_text_state
        t_max = len(plan.initial_tokens) + plan.steps - 1  # the last sampled token is never fed back
        self.key = key
        self.w = w
        # Each layer's slice of these views is contiguous, with the shapes and strides a runner
        # of exactly `batch` rows would have.
        self.kc, self.vc = buffers.kc[:, :batch], buffers.vc[:, :batch]
        self.ck, self.cv = buffers.ck[:, :batch], buffers.cv[:, :batch]
        self.attn = torch.zeros(batch, 1, d, dtype=w.dtype, device=device)  # self-attention output, written between segments
        self.tok = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.out = torch.zeros(batch, t_max + 1, dtype=torch.long, device=device)
        n_layer = w.dims.n_text_layer
        self.xs: list = [None] * (n_layer + 1)
        self.qs: list = [None] * n_layer
        # The captured graphs read these tensors and constants: a runner serves one plan's rules.
        self.suppress = torch.tensor(plan.suppress_tokens, dtype=torch.long, device=device)
        self.blank = torch.tensor(plan.blank_tokens, dtype=torch.long, device=device)
        self.eot, self.sample_begin = plan.eot, len(plan.initial_tokens)
        # whisper's own attention (SDPA off, `deterministic_attention("matmul")`): the cross-attention
        # keys are kept pre-scaled and both caches laid out as the batched products read them.
        self.matmul = not _whisper_sdpa()
        # The split-KV kernel (`decoder_attention: splitkv`) is called directly, with the rows still
        # decoding: a finished window's (or a padding row's) attention then reads no cache. Where the
        # kernel cannot run (no CUDA), whisper's own attention serves, as in the reference.
        from pipeline.scoring import decode_attention

        self.splitkv = _split_kv_on() and decode_attention.available(device)
        self.live = torch.ones(batch, dtype=torch.int32, device=device) if self.splitkv else None
        self.graphs: list | None = None
        if graphs:
            self._capture()

    # One segment: the rest of layer l-1 (after its self-attention), then layer l up to its own.
    def _segment(self, l: int) -> None:
        import torch
        import torch.nn.functional as F

        w, n_layer = self.w, len(self.w.layers)
        if l == 0:
            if self.splitkv:
                self.live.copy_(self.tok[:, 0] != self.eot)
            x = (F.embedding(self.tok, w.embedding) + w.positional.index_select(0, self.pos)).to(w.dtype)
        else:
            p, x = w.layers[l - 1], self.xs[l - 1]
            x = x + _linear(self.attn, p["o"])
            q = _linear(_layer_norm(x, p["x_ln"]), p["xq"])
            if self.matmul:
                a = self._cross_matmul(l - 1, q)
            elif self.splitkv:
                a = self._decode_attention(q, self.ck[l - 1], self.cv[l - 1])
            else:
                a = p["cross"].qkv_attention(q, self.ck[l - 1], self.cv[l - 1])[0]
            x = x + _linear(a, p["xo"])
            x = x + _linear(F.gelu(_linear(_layer_norm(x, p["mlp_ln"]), p["fc1"])), p["fc2"])
        if l < n_layer:
            p = w.layers[l]
            h = _layer_norm(x, p["attn_ln"])
            self.qs[l] = _linear(h, p["q"])
            self.kc[l].index_copy_(1, self.pos, _linear(h, p["k"]))
            self.vc[l].index_copy_(1, self.pos, _linear(h, p["v"]))
            self.xs[l] = x
            return
        logits = (_layer_norm(x, w.ln) @ torch.transpose(w.embedding_t, 0, 1)).float()[:, -1]
        self._pick(logits, self.suppress)

    def _cross_matmul(self, l: int, q):
        """whisper's `qkv_attention` without SDPA for one query row: (q·s)(k·s)ᵀ, softmax in fp32, times v.
        Its matmuls hand `bmm` contiguous [batch·heads, 64, n_audio] and [batch·heads, n_audio, 64]
        copies of k·s and v, made on every call; here they are made once per batch (`lay_out_cross`),
        so a step reads each window's keys and values once, and the same `bmm` gives the same bits."""
        import torch
        import torch.nn.functional as F

        b, n, d = q.shape
        h = self.w.dims.n_text_head
        qs = (q.view(b, n, h, -1).permute(0, 2, 1, 3) * (d // h) ** -0.25).reshape(b * h, n, -1)
        kt, v = self._cross_layout(l)
        qk = torch.bmm(qs, kt).view(b, h, n, -1).float()
        w = F.softmax(qk, dim=-1).to(q.dtype)
        out = torch.bmm(w.reshape(b * h, n, -1), v).view(b, h, n, -1)
        return out.permute(0, 2, 1, 3).flatten(start_dim=2)

    def _cross_layout(self, l: int):
        """Layer l's cross-attention keys (scaled, transposed) and values in the matmul layout, over the
        buffers that otherwise hold them as [batch, n_audio, d]."""
        batch, n_audio, d = self.ck[l].shape
        h = self.w.dims.n_text_head
        return self.ck[l].view(batch * h, d // h, n_audio), self.cv[l].view(batch * h, n_audio, d // h)

    def lay_out_cross(self, l: int, k, v) -> None:
        """Store layer l's cross-attention k and v ([batch, n_audio, d]) as `_cross_matmul` reads them:
        exactly the operands whisper's matmul path builds from them (the same ops on the same values)."""
        batch, n_audio, d = k.shape
        h = self.w.dims.n_text_head
        heads = lambda x: x.view(batch, n_audio, h, -1).permute(0, 2, 1, 3)  # noqa: E731
        kt, vv = self._cross_layout(l)
        kt.copy_((heads(k) * (d // h) ** -0.25).transpose(-1, -2).reshape(batch * h, d // h, n_audio))
        vv.copy_(heads(v).reshape(batch * h, n_audio, d // h))

    def _pick(self, logits, suppress) -> None:
        logits.index_fill_(1, suppress, float("-inf"))
        nxt = logits.argmax(dim=-1)
        nxt.masked_fill_(self.tok[:, 0] == self.eot, self.eot)  # a finished sequence stays finished
        self.out.index_copy_(1, self.pos - (self.sample_begin - 1), nxt[:, None])
        self.tok.copy_(nxt[:, None])
        self.pos.add_(1)

    def _self_attention(self, l: int, t: int) -> None:
        if self.splitkv:
            self.attn.copy_(self._decode_attention(self.qs[l], self.kc[l][:, :t], self.vc[l][:, :t]))
            return
        p = self.w.layers[l]
        a = p["attn"].qkv_attention(self.qs[l], self.kc[l][:, :t], self.vc[l][:, :t], self.w.mask)[0]
        self.attn.copy_(a)

    def _decode_attention(self, q, k, v):
        """The split-KV kernel as whisper's patched attention calls it, skipping finished rows."""
        from pipeline.scoring.decode_attention import decode_attention

        return decode_attention(q, k, v, self.w.dims.n_text_head, live=self.live)

    def _capture(self) -> None:
        import torch

        n_layer = len(self.w.layers)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (cuBLAS handles, workspaces) off the capture
            self.pos.fill_(self.sample_begin - 1)  # a valid place for the warm-up's writes
            for l in range(n_layer):
                self._segment(l)
                self._self_attention(l, 1)
            self._segment(n_layer)
        torch.cuda.current_stream().wait_stream(side)
        side.synchronize()
        # capture_begin/end directly: `torch.cuda.graph` empties the allocator's cache around
        # every capture, which costs seconds over n_layer + 1 captures and the reallocations after.
        pool = torch.cuda.graph_pool_handle()
        self.graphs = []
        with torch.cuda.stream(side):
            for l in range(n_layer + 1):
                g = torch.cuda.CUDAGraph()
                g.capture_begin(pool)
                try:
                    self._segment(l)
                finally:
                    g.capture_end()
                self.graphs.append(g)
        torch.cuda.current_stream().wait_stream(side)

    def prefill(self, tokens, audio_features) -> None:
        """The reference's first forward pass over the whole sot sequence, filling the caches."""
        import torch
        import torch.nn.functional as F

        w, t0 = self.w, tokens.shape[1]
        x = (F.embedding(tokens, w.embedding) + w.positional[:t0]).to(w.dtype)
        for l, p in enumerate(w.layers):
            h = _layer_norm(x, p["attn_ln"])
            q, k, v = _linear(h, p["q"]), _linear(h, p["k"]), _linear(h, p["v"])
            self.kc[l, :, :t0].copy_(k)
            self.vc[l, :, :t0].copy_(v)
            x = x + _linear(p["attn"].qkv_attention(q, k, v, w.mask)[0], p["o"])
            q = _linear(_layer_norm(x, p["x_ln"]), p["xq"])
            if self.matmul:
                ck, cv = _linear(audio_features, p["xk"]), _linear(audio_features, p["xv"])
                x = x + _linear(p["cross"].qkv_attention(q, ck, cv)[0], p["xo"])
                self.lay_out_cross(l, ck, cv)
                del ck, cv
            else:
                self.ck[l].copy_(_linear(audio_features, p["xk"]))
                self.cv[l].copy_(_linear(audio_features, p["xv"]))
                x = x + _linear(p["cross"].qkv_attention(q, self.ck[l], self.cv[l])[0], p["xo"])
            x = x + _linear(F.gelu(_linear(_layer_norm(x, p["mlp_ln"]), p["fc1"])), p["fc2"])
        logits = (_layer_norm(x, w.ln) @ torch.transpose(w.embedding_t, 0, 1)).float()[:, -1]
        self.out.fill_(self.eot)
        self.tok.copy_(tokens[:, -1:])
        self.pos.fill_(t0 - 1)  # the sampled token lands at column 0 of `out`
        self._pick(logits, torch.cat([self.blank, self.suppress]))

    def step(self, t: int) -> None:
        """Feed the last sampled token, at position t-1, and sample the next."""
        n_layer = len(self.w.layers)
        for l in range(n_layer + 1):
            if self.graphs:
                self.graphs[l].replay()
            else:
                self._segment(l)
            if l < n_layer:
                self._self_attention(l, t)


def _runner_key(plan: GreedyPlan, batch: int, n_audio: int, device, graphs: bool) -> tuple:
    # The attention backends enabled now (`sdpa_kernel`): captured graphs hold the kernels chosen
    # at capture time, so a runner serves only the context it was captured in.
    return (batch, n_audio, str(device), graphs, len(plan.initial_tokens), plan.steps, plan.eot,
            plan.suppress_tokens, plan.blank_tokens, _sdpa_backends())


def _sdpa_backends() -> tuple:
    import torch

    b = torch.backends.cuda
    return (_whisper_sdpa(), b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled(),
            b.cudnn_sdp_enabled(), _split_kv_on())


def _whisper_sdpa() -> bool:
    """Whether whisper's attention runs through SDPA now (`whisper.model.disable_sdpa` turns it off)."""
    from whisper.model import SDPA_AVAILABLE, MultiHeadAttention

    return SDPA_AVAILABLE and MultiHeadAttention.use_sdpa


def release(model) -> None:
    """Free the fast decoder's buffers and graphs for `model` (they are otherwise kept for the
    next batch; the large-v3 caches take about 250 MB per window of the largest batch)."""
    w = _WEIGHTS.get(model)
    if w is not None:
        w.runners.clear()
        w.buffers = None
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def deterministic_attention(backend: str = "flash"):
    """A context that limits scaled-dot-product attention to kernels whose forward pass gives the
    same bits on every run (flash, memory-efficient, math). On an H100 with torch 2.11, SDPA's own
    choice for the cross-attention shape was cuDNN's kernel, whose output changed from run to run:
    `whisper.decode` then disagreed with itself on 8 of 64 windows. Run both decoders, and the
    encoder, inside this context.

    `backend="efficient"` leaves flash out, so the memory-efficient kernel runs wherever it can:
    both decoders then run it (the tokens stay identical between them, but may differ from those
    decoded with flash). `backend="cudnn"` puts cuDNN's kernel first: on an H100 it reads one layer's
    cross-attention cache at 3.1 TB/s where flash reaches 2.2 (whisper_step_profile.py), but its output
    does not repeat from run to run there (whisper_gpu.py's token check): a throughput setting only. `backend="matmul"` turns SDPA off in whisper (`whisper.model.disable_sdpa`):
    both decoders run whisper's own attention, two batched matrix products around an fp32 softmax.
    With one query row per window a flash kernel computes a whole tile of query rows; the products
    only read each window's cross-attention keys and values, so a step nears its memory floor.
    `backend="splitkv"`: every one-row attention of a step (self and cross) runs the split-KV kernel of
    `pipeline.scoring.decode_attention` (Triton, on CUDA), which streams the cache near the bandwidth
    and is deterministic by construction; the multi-row calls stay on flash."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if backend == "flash":
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
    if backend == "efficient":
        return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
    if backend == "cudnn":  # cuDNN first: at one query row it streams the cache near the card's bandwidth
        return sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                            SDPBackend.MATH], set_priority=True)  # fmt: skip
    if backend == "matmul":
        from whisper.model import disable_sdpa

        return disable_sdpa()
    if backend == "splitkv":
        return _split_kv_attention()
    raise ValueError(f"unknown attention backend {backend!r}")


def _split_kv_on() -> bool:
    from whisper.model import MultiHeadAttention

    return MultiHeadAttention.qkv_attention is _split_kv_qkv_attention


def _split_kv_qkv_attention(self, q, k, v, mask=None):
    """whisper's `qkv_attention` with one-row queries (every step after the first forward: self- and
    cross-attention alike) sent to the split-KV kernel; longer queries keep whisper's own path."""
    from pipeline.scoring import decode_attention

    if q.shape[1] == 1 and decode_attention.available(q.device):
        return decode_attention.decode_attention(q, k, v, self.n_head), None
    return _WHISPER_QKV_ATTENTION(self, q, k, v, mask)


_WHISPER_QKV_ATTENTION = None


@contextlib.contextmanager
def _split_kv_attention():
    """Flash for the multi-row calls (the encoder, the first forward) and the split-KV kernel for every
    one-row call, in both decoders: `MultiHeadAttention.qkv_attention` is swapped for the context."""
    global _WHISPER_QKV_ATTENTION
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from whisper.model import MultiHeadAttention

    if _split_kv_on():  # nested: the outer context keeps it
        yield
        return
    _WHISPER_QKV_ATTENTION = MultiHeadAttention.qkv_attention
    MultiHeadAttention.qkv_attention = _split_kv_qkv_attention
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
            yield
    finally:
        MultiHeadAttention.qkv_attention = _WHISPER_QKV_ATTENTION


def greedy_decode(model, audio_features, plan: GreedyPlan, initial_tokens=None, *,
                  cuda_graphs: bool = True, check_every: int = 8, rows: int | None = None) -> list[list[int]]:
    """Greedy tokens for each row of `audio_features` (encoder output), without the sot sequence
    and cut at end-of-text, exactly as `whisper.decode` returns them for the same options.

    `initial_tokens` (rows of the plan's sot sequence, e.g. with per-row detected languages)
    defaults to the plan's. `check_every` steps the host asks whether every row has finished.
    `rows`: only the first rows are wanted (the rest pad the batch to a captured size); the others
    are finished at once and come back empty.
    """
    import torch

    batch, n_audio = audio_features.shape[0], audio_features.shape[1]
    device, dtype = audio_features.device, audio_features.dtype
    if initial_tokens is None:
        initial_tokens = torch.tensor([plan.initial_tokens] * batch, dtype=torch.long)
    initial_tokens = initial_tokens.to(device)
    t0 = initial_tokens.shape[1]
    if t0 != len(plan.initial_tokens):
        raise ValueError(f"initial tokens have {t0} columns, the plan's sot sequence {len(plan.initial_tokens)}")
    graphs = cuda_graphs and device.type == "cuda"
    w = _weights(model, dtype)
    with torch.no_grad():
        r = w.runner(plan, batch, n_audio, device, graphs)
        r.prefill(initial_tokens, audio_features)
        if rows is not None and rows < batch:
            r.tok[rows:] = plan.eot
            r.out[rows:] = plan.eot
        for i in range(1, plan.steps):
            if i % check_every == 0 and bool((r.tok == plan.eot).all()):
                break
            r.step(t0 + i)
        sampled = r.out[:, : plan.steps].tolist()
    return [row[: row.index(plan.eot)] if plan.eot in row else row for row in sampled]
