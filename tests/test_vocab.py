from pipeline.vocab import load_vocabulary, tempo_bucket

import pytest


def test_every_shipped_tag_is_one_levo_knows(levo_reference):
    def levo(name):
        return {line.strip() for line in (levo_reference / f"description-{name}.txt").read_text().splitlines()}

    vocab = load_vocabulary()
    assert set(vocab.genders) <= levo("gender")
    assert set(vocab.emotions) <= levo("emotion")
    assert {g.name for g in vocab.genres} <= levo("genre")
    assert set(vocab.instruments) <= levo("instrument")


def test_broken_vocabulary_names_file_and_key(tmp_path):
    path = tmp_path / "tags.yaml"
    path.write_text("genders: []\nemotions: [sad]\ngenres: {pop: {bpm: [90, 120], auto_prompt: Pop, instruments: [piano]}}\nauto_prompt_types: [Pop]\n")
    with pytest.raises(ValueError, match=r"tags.yaml: 'genders' must be a non-empty list"):
        load_vocabulary(path)
    path.write_text("genders: [male]\nemotions: [sad]\ngenres: {pop: {bpm: [90, 120], auto_prompt: Jazz, instruments: [piano]}}\nauto_prompt_types: [Pop]\n")
    with pytest.raises(ValueError, match="genre 'pop'"):
        load_vocabulary(path)


def test_tempo_buckets():
    assert [tempo_bucket(b) for b in (60, 89, 90, 119, 120, 180)] == ["slow", "slow", "mid", "mid", "fast", "fast"]
