"""A tiny-model policy's exact chance of hitting a prompt's tempo and mode, from its header distribution."""

import random

import numpy as np
import pytest

from pipeline.models.registry import load_song_model
from pipeline.models.tiny.codec import HEADER_SIZE, SymbolicCodec, encode_header, lyric_words
from pipeline.models.tiny.composer import compose
from pipeline.models.tiny.header_odds import expected_header_hits, header_hits, last_token_hits
from pipeline.models.tiny.oracle import oracle_metrics
from pipeline.models.tiny.sampling import sample_songs

CONDITION = {"condition_id": "c0", "lyric": "[verse] the light is low. we walk the road [chorus] sing it out",
             "genre": "pop", "gender": "female", "emotion": "sad", "instruments": ["piano", "drums"], "bpm": 96,
             "tempo": "medium"}  # fmt: skip


@pytest.fixture(scope="module")
def model():
    return load_song_model("tiny", {}).model


def test_a_headers_hits_are_the_oracles_hits_of_a_whole_song():
    for seed in range(6):
        score = compose(CONDITION, random.Random(seed))
        tokens = SymbolicCodec().encode(score, lyric_words(CONDITION["lyric"]))
        whole = oracle_metrics(tokens, CONDITION)
        assert header_hits(tokens["header"], CONDITION) == {"tempo_hit": whole["tempo_hit"], "mode_hit": whole["mode_hit"]}
    assert header_hits(encode_header(score), CONDITION)["mode_hit"] == 1.0  # a composed song sings its emotion's mode


def test_each_completed_header_reads_as_the_oracle_reads_it():
    """Heads in any order of fields (a policy may write the mode first, or two keys): the table of
    hits by last token equals decoding every completed header."""
    rng = random.Random(3)
    heads = [[rng.randrange(HEADER_SIZE) for _ in range(2)] for _ in range(40)] + [[HEADER_SIZE - 1, 0], [40, 41]]
    table = last_token_hits(heads, HEADER_SIZE, CONDITION).numpy()
    decoded = np.array([[list(header_hits(head + [t], CONDITION).values()) for t in range(HEADER_SIZE)] for head in heads])
    assert table.shape == (len(heads), HEADER_SIZE, 2) and (table == decoded).all()
    assert 0 < table.mean() < 1  # both hits and misses among them


def test_exact_odds_agree_with_sampled_headers(model):
    exact = expected_header_hits(model, CONDITION)
    assert 0 <= exact["unexplored"] < 0.01
    n = 3000
    songs = sample_songs(model, [CONDITION] * n, list(range(n)), max_frames=1)
    sampled = np.array([list(header_hits(song["header"], CONDITION).values()) for song in songs]).mean(axis=0)
    for rate, name in zip(sampled, ("tempo_hit", "mode_hit")):
        error = 4 * np.sqrt(max(rate * (1 - rate), 1e-3) / n)  # 4 standard errors of the sampled rate
        assert exact[name] - error <= rate <= exact[name] + exact["unexplored"] + error, (name, rate, exact)


def test_greedy_odds_are_the_greedy_songs_hits_and_a_lower_floor_explores_more(model):
    greedy = expected_header_hits(model, CONDITION, temperature=0)
    song = sample_songs(model, [CONDITION], [0], temperature=0, max_frames=1)[0]
    assert greedy == {**header_hits(song["header"], CONDITION), "unexplored": 0.0}
    coarse, fine = expected_header_hits(model, CONDITION, floor=1e-3), expected_header_hits(model, CONDITION, floor=1e-7)
    assert fine["unexplored"] < coarse["unexplored"]
    for name in ("tempo_hit", "mode_hit"):  # pruning only leaves mass out: within the bound, never above
        assert coarse[name] <= fine[name] + 1e-9 <= coarse[name] + coarse["unexplored"] + 1e-9
