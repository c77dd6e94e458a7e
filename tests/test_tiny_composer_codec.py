"""The tiny model's composer (synthetic data) and codec (tokens <-> score)."""

from __future__ import annotations

import random
import time
from dataclasses import replace

import pytest

from pipeline.lyrics.format import split_sections
from pipeline.models.tiny.codec import (
    SymbolicCodec,
    decode_header,
    encode_header,
    lyric_words,
    word_error_rate,
)
from pipeline.models.tiny.composer import BAR, MINOR_EMOTIONS, REGISTERS, SCALES, compose
from pipeline.vocab import load_vocabulary

VOCAB = load_vocabulary()
WORDS = "love night light heart road home dream fire rain sky hold on we are young you and me don't let go".split()
STRUCTURES = (
    ["intro-short", "verse", "chorus", "outro-short"],
    ["intro-medium", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro-long"],
    ["verse", "silence", "chorus", "inst-medium", "chorus"],
    ["intro-long", "verse", "inst-short", "chorus", "outro-medium"],
)
CONDITION = {
    "lyric": "[intro-short] ; [verse] Hello there my friend. Night is young. ; "
    "[chorus] We don't stop, we sing! Sing again. ; [outro-short]",
    "gender": "female", "genre": "pop", "emotion": "nostalgic",
    "instruments": ["piano", "drums"], "bpm": 104, "tempo": "mid",
}  # fmt: skip


def random_condition(rng: random.Random) -> dict:
    genre = rng.choice(VOCAB.genres)
    pieces = []
    for tag in rng.choice(STRUCTURES):
        if tag in ("verse", "chorus", "bridge"):
            sentences = [" ".join(rng.choices(WORDS, k=rng.randint(2, 8))).capitalize() for _ in range(rng.randint(1, 4))]
            pieces.append(f"[{tag}] " + ". ".join(sentences) + ".")
        else:
            pieces.append(f"[{tag}]")
    return {
        "lyric": " ; ".join(pieces),
        "gender": rng.choice(VOCAB.genders),
        "genre": genre.name,
        "emotion": rng.choice(VOCAB.emotions),
        "instruments": rng.sample(genre.instruments, k=rng.randint(1, len(genre.instruments))),
        "bpm": rng.randint(*genre.bpm_range),
    }


@pytest.fixture(scope="module")
def songs() -> list[tuple[dict, object]]:
    rng = random.Random(7)
    return [(c, compose(c, rng)) for c in (random_condition(rng) for _ in range(50))]


def test_compose_is_deterministic():
    assert compose(CONDITION, random.Random(3)) == compose(CONDITION, random.Random(3))
    assert compose(CONDITION, random.Random(3)) != compose(CONDITION, random.Random(4))


def test_example_condition():
    score = compose(CONDITION, random.Random(0))
    assert score.tempo_bpm == 104 and score.mode == "minor"
    assert score.sung_text() == ["hello", "there", "my", "friend", "night", "is", "young",
                                 "we", "don't", "stop", "we", "sing", "sing", "again"]  # fmt: skip
    assert [s.tag for s in score.sections] == ["[intro-short]", "[verse]", "[chorus]", "[outro-short]"]
    assert score.sections[0].end - score.sections[0].start == 8  # 4 beats of eighths


def test_musical_properties(songs):
    strong = on_chord_tone = 0
    for condition, score in songs:
        words = lyric_words(condition["lyric"])
        assert score.tempo_bpm == condition["bpm"]
        assert score.sung_text() == words and word_error_rate(score, words) == 0.0
        assert score.mode == ("minor" if condition["emotion"] in MINOR_EMOTIONS else "major")
        low, high = REGISTERS[condition["gender"]]
        scale = {(score.key + d) % 12 for d in SCALES[score.mode]}
        for w in score.vocals:
            assert low <= w.pitch <= high and w.pitch % 12 in scale
            assert 1 <= w.duration <= 2
            section = score.sections[w.section]
            assert section.start <= w.start and w.start + w.duration <= section.end
        # Notes never overlap; there is a rest at each sentence end.
        for a, b in zip(score.vocals, score.vocals[1:]):
            assert a.start + a.duration <= b.start
        chord_starts = {c.start: c for c in score.chords}
        for section in score.sections:
            if section.tag != "[silence]":
                assert all(bar in chord_starts for bar in range(section.start, section.end, BAR))
        for w in score.vocals:
            if (w.start - score.sections[w.section].start) % 4 == 0:
                chord = max((c for c in score.chords if c.start <= w.start), key=lambda c: c.start)
                third = 3 if chord.quality == "min" else 4
                strong += 1
                on_chord_tone += (w.pitch - chord.root) % 12 in (0, third, 7)
        for note in score.bass:  # the bass plays the root of the chord sounding
            assert any(c.start <= note.start < c.start + c.duration and c.root == note.pitch % 12 for c in score.chords)
    assert on_chord_tone / strong > 0.9, (on_chord_tone, strong)


def test_minor_for_sad_emotions():
    for emotion, mode in (("sad", "minor"), ("melancholic", "minor"), ("happy", "major"), ("energetic", "major")):
        assert compose({**CONDITION, "emotion": emotion}, random.Random(1)).mode == mode


def test_sections_follow_lyric_tags(songs):
    for condition, score in songs:
        assert [s.tag for s in score.sections] == [f"[{s.tag}]" for s in split_sections(condition["lyric"])]
        assert score.sections[0].start == 0
        assert all(a.end == b.start for a, b in zip(score.sections, score.sections[1:]))


def test_drums_follow_genre_and_instruments():
    ballad = {**CONDITION, "genre": "ballad", "instruments": ["piano", "strings"]}
    assert compose(ballad, random.Random(0)).drums == []
    assert compose({**ballad, "instruments": ["piano", "drums"]}, random.Random(0)).drums
    rock = compose({**CONDITION, "genre": "rock"}, random.Random(0))
    bar = {(h.start, h.kind) for h in rock.drums if h.start < BAR}
    assert {(0, "kick"), (4, "kick"), (2, "snare"), (6, "snare")} | {(s, "hat") for s in range(BAR)} == bar


def test_round_trip(songs):
    codec = SymbolicCodec()
    for condition, score in songs:
        words = lyric_words(condition["lyric"])
        tokens = codec.encode(score, words)
        assert {len(tokens[k]) for k in ("mixed", "vocals", "accompaniment")} == {score.steps}
        for name, stream in tokens.items():
            assert all(0 <= t < codec.vocab_sizes[name] for t in stream), name
        assert codec.decode(tokens, condition, words) == score


def test_header_can_miss_the_condition():
    score = compose(CONDITION, random.Random(0))
    assert decode_header(encode_header(score)) == {"bpm": 104, "key": score.key, "mode": "minor"}
    codec, words = SymbolicCodec(), lyric_words(CONDITION["lyric"])
    tokens = codec.encode(score, words)
    tokens["header"] = [encode_header(replace(score, tempo_bpm=150))[0], 36 + 5, 48]
    decoded = codec.decode(tokens, CONDITION, words)
    assert (decoded.tempo_bpm, decoded.key, decoded.mode) == (148, 5, "major")  # the bin of 150 starts at 148


def test_decode_never_raises_on_random_tokens():
    codec, rng = SymbolicCodec(), random.Random(11)
    words = lyric_words(CONDITION["lyric"])
    for i in range(200):
        tokens = {
            name: [rng.randrange(-5, size + 5) for _ in range(rng.randint(0, 3 if name == "header" else 120))]
            for name, size in codec.vocab_sizes.items()
        }
        if i % 10 == 0:
            tokens["vocals"] = [None, "x", 1.5, 10**30]
        score = codec.decode(tokens, CONDITION, words)
        assert set(score.sung_text()) <= set(words)
        assert all(0 <= w.section < max(len(score.sections), 1) for w in score.vocals)
    assert codec.decode({}, CONDITION, words).steps == 0


def test_sampled_vocals_skip_unknown_word_positions():
    codec, words = SymbolicCodec(), ["a", "b"]
    score = codec.decode({"vocals": [2, 1, 2 + 37 * 5, 1, 2 + 37, 0]}, CONDITION, words)
    assert [(w.start, w.duration, w.word) for w in score.vocals] == [(0, 2, "a"), (4, 1, "b")]


def test_word_error_rate_by_hand():
    score = compose(CONDITION, random.Random(0))
    words = lyric_words(CONDITION["lyric"])  # 14 words
    dropped = replace(score, vocals=score.vocals[:3] + score.vocals[4:])
    assert word_error_rate(dropped, words) == pytest.approx(1 / 14)
    v = score.vocals
    swapped_words = [replace(v[0], word=v[1].word), replace(v[1], word=v[0].word)] + v[2:]
    assert word_error_rate(replace(score, vocals=swapped_words), words) == pytest.approx(2 / 14)
    assert word_error_rate(replace(score, vocals=[]), words) == 1.0


def test_lyric_words_normalise():
    assert lyric_words("[intro-short] ; [verse] Hello, World! It's me. ; [chorus] 我爱你. ; [outro-short]") == [
        "hello", "world", "it's", "me", "我", "爱", "你"]  # fmt: skip


def test_speed():
    rng, codec = random.Random(5), SymbolicCodec()
    conditions = [random_condition(rng) for _ in range(200)]
    begin = time.perf_counter()
    for condition in conditions:
        codec.encode(compose(condition, rng), lyric_words(condition["lyric"]))
    elapsed = time.perf_counter() - begin
    print(f"compose+encode: {200 / elapsed:.0f} songs/s")
