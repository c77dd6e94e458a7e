"""The split-KV decode-attention kernel (Triton) and whisper's `decoder_attention: splitkv`.

The kernel needs a CUDA device, or Triton's CPU interpreter: `TRITON_INTERPRET=1 pytest
tests/test_decode_attention.py` runs every test here on a CPU (about 40 s). Without either, the
tests skip and say why; `tests/test_decode_attention_cpu.py` runs this module so on a machine
without CUDA (the interpreter must be chosen before Triton is imported: a process of its own).
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton", reason="the split-KV kernel is written in Triton, which is not installed")

from pipeline.scoring import decode_attention as da  # noqa: E402

if torch.cuda.is_available():
    DEVICE = "cuda"
elif os.environ.get("TRITON_INTERPRET") == "1":
    DEVICE = "cpu"
else:
    pytest.skip("no CUDA device; set TRITON_INTERPRET=1 to run the Triton kernel on the CPU", allow_module_level=True)


def _reference(q, k, v, heads):
    """float64 softmax(q·kᵀ/sqrt(D))·v per head."""
    b, t, width = k.shape
    d = width // heads
    qh = q.double().view(b, 1, heads, d).transpose(1, 2)
    kh, vh = (x.double().view(b, t, heads, d).transpose(1, 2) for x in (k, v))
    out = torch.softmax(qh @ kh.transpose(-1, -2) / d**0.5, -1) @ vh
    return out.transpose(1, 2).reshape(b, 1, width)


@pytest.mark.parametrize("keys", [1, 37, da.SPLIT_KEYS, da.SPLIT_KEYS + 1, 1500])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_matches_float64_and_repeats(keys, dtype):
    gen = torch.Generator().manual_seed(keys)
    batch, heads, d = 3, 2, 32
    q, k, v = (torch.randn(batch, n, heads * d, generator=gen).mul(s).to(DEVICE, dtype)
               for n, s in [(1, 1.0), (keys, 3.0), (keys, 1.0)])  # fmt: skip
    out = da.decode_attention(q, k, v, heads)
    assert out.shape == q.shape and out.dtype == dtype
    ref = _reference(q, k, v, heads)
    error = ((out.double() - ref).norm() / ref.norm()).item()
    assert error < (1e-3 if dtype == torch.float16 else 1e-5), error
    assert torch.equal(out, da.decode_attention(q, k, v, heads))  # the same bits again


def test_strided_cache_gives_the_same_bits():
    """The fast decoder passes views of its preallocated caches; whisper.decode, fresh tensors."""
    gen = torch.Generator().manual_seed(1)
    big = torch.randn(2, 4, 300, 64, generator=gen).to(DEVICE, torch.float16)
    q = torch.randn(4, 1, 64, generator=gen).to(DEVICE, torch.float16)
    k, v = big[0][:, :280], big[1][:, :280]  # batch stride 300 rows, 280 keys read
    assert torch.equal(da.decode_attention(q, k, v, 2), da.decode_attention(q, k.contiguous(), v.contiguous(), 2))


@pytest.mark.parametrize("keys", [37, da.SPLIT_KEYS + 1])
def test_dead_rows_get_zeros_and_live_rows_keep_their_bits(keys):
    gen = torch.Generator().manual_seed(keys)
    batch, heads, d = 4, 2, 32
    q, k, v = (torch.randn(batch, n, heads * d, generator=gen).to(DEVICE, torch.float16) for n in (1, keys, keys))
    live = torch.tensor([1, 0, 1, 0], dtype=torch.int32, device=DEVICE)
    out = da.decode_attention(q, k, v, heads, live=live)
    alive = live.bool()
    assert torch.equal(out[alive], da.decode_attention(q, k, v, heads)[alive])
    assert torch.count_nonzero(out[~alive]) == 0 and torch.isfinite(out).all()


def test_bad_shapes_are_named():
    x = torch.zeros(2, 1, 64, device=DEVICE)
    with pytest.raises(ValueError, match="one query row"):
        da.decode_attention(torch.zeros(2, 2, 64, device=DEVICE), x, x, 2)
    with pytest.raises(ValueError, match="power of two"):
        da.decode_attention(torch.zeros(2, 1, 48, device=DEVICE), torch.zeros(2, 3, 48, device=DEVICE),
                            torch.zeros(2, 3, 48, device=DEVICE), 2)  # fmt: skip
    with pytest.raises(ValueError, match="live must be one entry per row"):
        da.decode_attention(x, x, x, 2, live=torch.ones(3, dtype=torch.int32, device=DEVICE))


def _tiny_whisper(windows: int):
    """A random two-layer whisper and `windows` rows of random encoder output."""
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51865, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=2)
    model = Whisper(dims).to(DEVICE).eval()
    torch.nn.init.normal_(model.decoder.positional_embedding, std=1.0)
    torch.nn.init.normal_(model.decoder.token_embedding.weight, std=0.02)
    return model, torch.randn(windows, 1500, 64, generator=torch.Generator().manual_seed(2)).to(DEVICE)


def test_whisper_split_kv_fast_equals_reference():
    """Both decoders under `decoder_attention: splitkv` give the same tokens, and twice the same."""
    whisper = pytest.importorskip("whisper")

    from pipeline.scoring.whisper_fast import _split_kv_on, deterministic_attention, greedy_decode, greedy_plan, release

    model, features = _tiny_whisper(3)
    eot = whisper.tokenizer.get_tokenizer(True).eot
    options = whisper.DecodingOptions(language="en", sample_len=12, without_timestamps=True, fp16=False,
                                      suppress_tokens=f"-1,{eot}")
    calls = []
    kernel = da.decode_attention

    def counted(*args, **kwargs):
        calls.append(args[1].shape[1])
        return kernel(*args, **kwargs)

    da.decode_attention = counted
    try:
        with deterministic_attention("splitkv"):
            assert _split_kv_on()
            fast = greedy_decode(model, features, greedy_plan(model, options), cuda_graphs=False)
            ref = [r.tokens for r in whisper.decode(model, features, options)]
            again = greedy_decode(model, features, greedy_plan(model, options), cuda_graphs=False)
    finally:
        da.decode_attention = kernel
        release(model)
    assert not _split_kv_on()
    assert fast == ref == again and all(len(t) == 12 for t in fast) and len(set(fast[0])) > 4
    assert 1500 in calls and min(calls) < 20  # cross- and self-attention both ran the kernel


def test_whisper_finished_and_padding_rows_skip_attention_and_keep_the_tokens():
    """End-of-text allowed: rows that finish early (and padding rows, finished at once) stop reading
    the caches; every other row's tokens stay those of `whisper.decode`."""
    whisper = pytest.importorskip("whisper")

    from pipeline.scoring.whisper_fast import deterministic_attention, greedy_decode, greedy_plan, release

    model, features = _tiny_whisper(4)
    eot = whisper.tokenizer.get_tokenizer(True).eot
    with torch.no_grad():  # a larger end-of-text row: three of the four random windows end at once
        model.decoder.token_embedding.weight[eot] *= 4
    options = whisper.DecodingOptions(language="en", sample_len=12, without_timestamps=True, fp16=False,
                                      suppress_tokens="-1")
    skipped = []
    kernel = da.decode_attention

    def counted(q, k, v, heads, live=None):
        skipped.append(0 if live is None else int((live == 0).sum()))
        return kernel(q, k, v, heads, live=live)

    da.decode_attention = counted
    try:
        with deterministic_attention("splitkv"):
            plan = greedy_plan(model, options)
            fast = greedy_decode(model, features, plan, cuda_graphs=False)
            padded = greedy_decode(model, features, plan, cuda_graphs=False, rows=3)
            ref = [r.tokens for r in whisper.decode(model, features, options)]
    finally:
        da.decode_attention = kernel
        release(model)
    assert fast == ref
    assert min(len(t) for t in fast) < 12 == max(len(t) for t in fast)  # some end early, one runs to the cap
    assert padded[:3] == fast[:3] and padded[3] == []
    assert max(skipped) >= 3  # the finished rows' attention was skipped
