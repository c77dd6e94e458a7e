"""The tiny LeLM: teacher-forced log-probs, the dual-track delay, save/load, sampling, training."""

from __future__ import annotations

import random

import pytest
import torch
from transformers.cache_utils import DynamicCache

from pipeline.models.tiny.codec import SymbolicCodec, lyric_words
from pipeline.models.tiny.composer import compose
from pipeline.models.tiny.conditioning import WORD, encode_condition
from pipeline.models.tiny.model import HEADER_KIND, MIXED_KIND, STREAMS, TinyLeLM, TinyLeLMConfig

CODEC = SymbolicCodec()
BASE = {"gender": "female", "genre": "pop", "emotion": "nostalgic", "instruments": ["piano", "drums"],
        "bpm": 104, "tempo": "mid", "auto_prompt_audio_type": "Pop", "prompt_audio_path": None}  # fmt: skip
LYRICS = (  # short lyrics: composed songs of about 100 frames
    "[intro-short] ; [verse] Hello there my friend. Night is young. ; [chorus] We sing again. Sing it loud. ; "
    "[verse] Light the road home. Stay. ; [chorus] We sing again. ; [outro-short]",
    "[verse] Hold on to the light. Stay with me. ; [chorus] Home is where we are. Sing it loud. ; "
    "[verse] Fire in the sky. Rain and sun. ; [bridge] Go. ; [chorus] Home is where we are. ; [outro-short]",
    "[intro-short] ; [verse] Rain on the road. Dream of the sea. ; [chorus] Dream of fire tonight. ; "
    "[verse] Hold my heart. Take my hand. ; [chorus] Dream of fire tonight. ; [outro-short]",
    "[verse] You and me. Young and free. ; [chorus] Don't let go. Hold on. ; [verse] Night is young. ; "
    "[chorus] Don't let go. We are young. ; [outro-short]",
)
CONDITIONS = [dict(BASE, lyric=lyric, gender=("female", "male")[i % 2]) for i, lyric in enumerate(LYRICS)]


def small_config(**kw) -> TinyLeLMConfig:
    args = dict(hidden_size=32, lm_layers=2, decoder_layers=1, num_heads=2, intermediate_size=64, delay=2,
                max_prefix=128, max_frames=256, tag_buckets=64, word_buckets=256)  # fmt: skip
    return TinyLeLMConfig(**(args | kw))


def make_model(seed: int = 0, **kw) -> TinyLeLM:
    torch.manual_seed(seed)
    return TinyLeLM(small_config(**kw)).eval()


def song(i: int) -> dict:
    cond = CONDITIONS[i]
    return CODEC.encode(compose(cond, random.Random(i)), lyric_words(cond["lyric"]))


def manual_logprobs(m: TinyLeLM, cond: dict, toks: dict) -> dict[str, list[float]]:
    """Teacher forcing one token at a time through KV caches, independent of forward()'s batching."""
    k, eos = m.config.delay, m.config.mixed_eos
    out: dict[str, list[float]] = {s: [] for s in STREAMS}
    lp = lambda logits, target: float(logits.log_softmax(-1)[0, target])  # noqa: E731
    cache = DynamicCache(config=m.lm.config)
    run = lambda x, mod: mod(inputs_embeds=x, cache=cache, use_cache=True).last_hidden_state[:, -1]  # noqa: E731
    h = run(m.prefix_embeds(cond)[None], m.lm)
    for tok in toks["header"]:
        out["header"].append(lp(m.header_head(h), tok))
        h = run((m.header_emb.weight[tok] + m.kind_emb.weight[HEADER_KIND])[None, None], m.lm)
    states = []
    for tok in list(toks["mixed"]) + [eos]:
        out["mixed"].append(lp(m.mixed_head(h), tok))
        if tok != eos:
            h = run((m.mixed_emb.weight[tok] + m.kind_emb.weight[MIXED_KIND])[None, None], m.lm)
            states.append(h)
    cache = DynamicCache(config=m.decoder.config)
    prev = m.dual_bos
    for t, (v, a) in enumerate(zip(toks["vocals"], toks["accompaniment"])):
        state = m.cond_proj(states[t + k]) if t + k < len(states) else m.end_pad[None]
        d = run((state + prev)[None], m.decoder)
        out["vocals"].append(lp(m.vocals_head(d), v))
        out["accompaniment"].append(lp(m.accompaniment_head(d), a))
        prev = m.vocals_emb.weight[v] + m.accompaniment_emb.weight[a]
    return out


def test_encode_condition_is_deterministic_and_points_at_lyric_words():
    cond = CONDITIONS[0]
    a, b = encode_condition(cond), encode_condition(dict(cond))
    assert set(a) == {"kind", "position", "word", "tag"} and all(torch.equal(a[x], b[x]) for x in a)
    words = lyric_words(cond["lyric"])
    assert a["position"][a["kind"] == WORD].tolist() == list(range(len(words)))
    other = encode_condition(dict(cond, genre="rock", auto_prompt_audio_type=None))
    assert len(other["tag"]) == len(a["tag"]) - 1 and not torch.equal(other["tag"][:4], a["tag"][:4])


def test_stream_logprobs_match_step_by_step_teacher_forcing():
    m = make_model()
    songs = [song(0), song(1)]
    assert len(songs[0]["mixed"]) != len(songs[1]["mixed"])  # a padded batch
    with torch.no_grad():
        sums = m.stream_logprobs(CONDITIONS[:2], songs)
        per_token = m.stream_logprobs(CONDITIONS[:2], songs, per_token=True)
        out = m(CONDITIONS[:2], songs)
        for i, toks in enumerate(songs):
            manual = manual_logprobs(m, CONDITIONS[i], toks)
            for s in STREAMS:
                targets = list(toks[s]) + ([m.config.mixed_eos] if s == "mixed" else [])
                gathered = [float(out.logits[s][i, j].log_softmax(-1)[tok]) for j, tok in enumerate(targets)]
                assert len(manual[s]) == len(targets)
                assert gathered == pytest.approx(manual[s], abs=1e-5)
                assert per_token[s][i, : len(targets)].tolist() == pytest.approx(manual[s], abs=1e-5)
                assert per_token[s][i, len(targets) :].abs().sum() == 0
                assert float(sums[s][i]) == pytest.approx(sum(manual[s]), abs=1e-4)


def test_dual_track_sees_lm_states_with_delay_k():
    m = make_model()
    k, t = m.config.delay, 10
    toks = song(0)
    mixed = toks["mixed"]

    def dual(new_mixed):
        with torch.no_grad():
            lp = m.stream_logprobs([CONDITIONS[0]], [dict(toks, mixed=new_mixed)], per_token=True)
        return lp["vocals"][0], lp["accompaniment"][0]

    base = dual(mixed)
    later = mixed[: t + k + 1] + [(x + 7) % 650 for x in mixed[t + k + 1 :]]
    for b, c in zip(base, dual(later)):
        assert torch.equal(b[: t + 1], c[: t + 1]) and not torch.equal(b, c)
    at = list(mixed)
    at[t + k] = (at[t + k] + 7) % 650
    for b, c in zip(base, dual(at)):
        assert torch.equal(b[:t], c[:t]) and (b[t] - c[t]).abs() > 1e-6


def test_save_and_load_round_trip(tmp_path):
    m = make_model(delay=3)
    m.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "config.json").exists()
    loaded = TinyLeLM.from_pretrained(tmp_path).eval()
    assert loaded.config.delay == 3 and loaded.config.hidden_size == 32
    with torch.no_grad():
        a = m.stream_logprobs(CONDITIONS[:2], [song(0), song(1)])
        b = loaded.stream_logprobs(CONDITIONS[:2], [song(0), song(1)])
    assert all(torch.equal(a[s], b[s]) for s in STREAMS)


def test_sampling_is_seeded_in_vocab_and_decodes():
    m = make_model()
    cond, vocab = CONDITIONS[0], CODEC.vocab_sizes
    a = m.sample(cond, seed=1, max_frames=48)
    assert a == m.sample(cond, seed=1, max_frames=48)
    assert a != m.sample(cond, seed=2, max_frames=48)
    batch = m.sample_batch(cond, [1, 2, 3], temperature=0.9, top_k=50, top_p=0.95, max_frames=48)
    assert batch[0] == m.sample(cond, seed=1, temperature=0.9, top_k=50, top_p=0.95, max_frames=48)
    for toks in [a, *batch]:
        assert len(toks["header"]) == 3
        assert 1 <= len(toks["mixed"]) == len(toks["vocals"]) == len(toks["accompaniment"]) <= 48
        assert all(0 <= x < vocab[s] for s in STREAMS for x in toks[s])
        score = CODEC.decode(toks, cond, lyric_words(cond["lyric"]))
        assert score.steps == len(toks["mixed"])
    greedy = m.sample_batch(cond, [5, 6], temperature=0, max_frames=16)
    assert greedy[0] == greedy[1]


def test_several_conditions_in_one_batch_sample_the_songs_each_samples_alone():
    from pipeline.models.tiny.sampling import sample_songs

    m = make_model()
    rows, seeds = [CONDITIONS[i // 2] for i in range(6)], [11, 12, 13, 14, 15, 16]
    assert len({len(m.prefix_embeds(c)) for c in CONDITIONS[:3]}) > 1  # prefixes of several lengths: padded and masked
    batch = sample_songs(m, rows, seeds, temperature=0.9, top_k=50, top_p=0.95, max_frames=32)
    assert batch == [m.sample(c, seed=s, temperature=0.9, top_k=50, top_p=0.95, max_frames=32) for c, s in zip(rows, seeds)]
    with pytest.raises(ValueError, match="6 conditions for 2 seeds"):
        sample_songs(m, rows, seeds[:2])


def test_a_draw_is_torch_multinomials_draw_from_each_rows_generator():
    logits, active = torch.randn(6, 40) * 3, torch.tensor([True, False, True, True, True, False])
    gens = lambda: [torch.Generator().manual_seed(100 + i) for i in range(6)]  # noqa: E731
    picks = TinyLeLM._draw(logits, gens(), 0.8, 0, 1.0, active)
    probs = (logits / 0.8).softmax(-1)
    expected = [int(torch.multinomial(probs[i], 1, generator=g)) if on else 0 for i, (g, on) in enumerate(zip(gens(), active))]
    assert picks.tolist() == expected


def test_eos_ends_a_song():
    m = make_model()
    with torch.no_grad():
        m.mixed_head.bias[m.config.mixed_eos] = 50.0  # EOS almost surely, except at frame 0
    toks = m.sample(CONDITIONS[0], seed=0, max_frames=40)
    assert len(toks["mixed"]) == len(toks["vocals"]) == 1


def test_training_reduces_loss_and_stage_two_freezes_the_lm():
    m = make_model().train()
    songs = [song(i) for i in range(4)]
    assert all(50 <= len(s["mixed"]) <= 150 for s in songs)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = m(CONDITIONS, songs).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]

    m.set_training_stage(2)
    lm_before = {n: p.detach().clone() for n, p in m.named_parameters() if m.is_lm_param(n)}
    dec_before = {n: p.detach().clone() for n, p in m.named_parameters() if not m.is_lm_param(n)}
    assert lm_before and dec_before
    for _ in range(3):
        out = m(CONDITIONS, songs)
        assert torch.equal(out.loss, out.losses["vocals"] + out.losses["accompaniment"])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    for n, p in m.named_parameters():
        if m.is_lm_param(n):
            assert p.grad is None and not p.requires_grad and torch.equal(p, lm_before[n]), n
    assert any(not torch.equal(p, dec_before[n]) for n, p in m.named_parameters() if n in dec_before)

    m.set_training_stage(1)
    opt.zero_grad()
    m(CONDITIONS, songs).loss.backward()
    assert all(p.grad is None for n, p in m.named_parameters() if not m.is_lm_param(n))
    assert any(p.grad is not None for n, p in m.named_parameters() if m.is_lm_param(n))
