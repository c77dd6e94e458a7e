"""The `attributes` scorer on real renders: songs composed for known tags, sung by flite.

Accuracies are measured over a batch of rendered songs and asserted with a margin below the
measured value, so a regression shows without the test hanging on one borderline song.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

from pipeline.models.tiny.composer import compose, mode_for
from pipeline.models.tiny.pretrain import PretrainConfig, synthetic_conditions
from pipeline.models.tiny.renderer import render, write_stems
from pipeline.scoring.attributes import AttributesOptions, AttributesScorer
from pipeline.scoring.base import ScoringItem
from pipeline.vocab import tempo_bucket

pytestmark = pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed")

N_SONGS = 14
TAG_KEYS = ("gender", "genre", "emotion", "instruments", "bpm", "tempo")
OTHER_BPM = {"slow": 140, "mid": 70, "fast": 100}  # a bpm in another bucket than the key


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    """(item, truth) per song. Emotions and genders alternate so both modes and registers occur
    about equally; everything else (genre, bpm, instruments, lyric) is the conditions' own."""
    root = tmp_path_factory.mktemp("attributes")
    out = []
    for i, cond in enumerate(synthetic_conditions(PretrainConfig(), N_SONGS, seed=3)):
        cond = {**cond, "emotion": ("somber", "joyful")[i % 2], "gender": ("male", "female")[i // 2 % 2]}
        score = compose(cond, random.Random(i))
        paths = write_stems(render(score), root / f"song{i}")
        item = ScoringItem(f"song{i}", paths["mix"], cond["lyric"], "en", cond["description"],
                           {k: cond[k] for k in TAG_KEYS}, paths)  # fmt: skip
        out.append((item, {"bpm": score.tempo_bpm, "mode": score.mode, "gender": score.gender}))
    return out


@pytest.fixture(scope="module")
def scorer():
    return AttributesScorer(AttributesOptions())


@pytest.fixture(scope="module")
def matched(songs, scorer):
    return scorer.score([item for item, _ in songs])


def accuracy(results, songs, detail: str, truth) -> float:
    return float(np.mean([r.details[detail] == truth(t) for r, (_, t) in zip(results, songs)]))


def test_estimates_match_the_rendered_attributes(songs, matched):
    assert all(r.error is None for r in matched)
    tempo = accuracy(matched, songs, "estimated_tempo", lambda t: tempo_bucket(t["bpm"]))
    mode = accuracy(matched, songs, "estimated_mode", lambda t: t["mode"])
    register = accuracy(matched, songs, "estimated_register", lambda t: t["gender"])
    # Measured on these 14 songs: tempo bucket 14/14, mode 13/14, register 14/14
    # (on 48 other renders: 47/48, 45/48, 48/48).
    assert tempo >= 0.85, tempo
    assert mode >= 0.75, mode
    assert register >= 0.95, register
    bpm_error = [abs(r.details["estimated_bpm"] / t["bpm"] - 1) for r, (_, t) in zip(matched, songs)]
    assert np.median(bpm_error) < 0.02, bpm_error


def test_scores_are_bounded_and_deterministic(songs, matched, scorer):
    for r in matched:
        assert 0.0 <= r.similarity <= 1.0
        assert set(r.details["agreement"]) == {"tempo", "mode", "register", "drums"}
        assert all(0.0 <= v <= 1.0 for v in r.details["agreement"].values())
    again = scorer.score([item for item, _ in songs[:3]])
    assert [r.similarity for r in again] == [r.similarity for r in matched[:3]]
    assert [r.details for r in again] == [r.details for r in matched[:3]]


def test_worker_processes_give_the_same_scores_and_errors_in_order(songs, tmp_path):
    items = [item for item, _ in songs] + [replace(item, candidate_id=f"again{i}") for i, (item, _) in enumerate(songs[:2])]
    items.insert(2, ScoringItem("missing", tmp_path / "missing.flac", "", "en", "", {"bpm": 100}))  # an error row
    assert len(items) >= 16  # enough songs for 2 worker processes
    alone = AttributesScorer(AttributesOptions(workers=1)).score(items)
    shared = AttributesScorer(AttributesOptions(workers=2)).score(items)
    assert [r.candidate_id for r in shared] == [i.candidate_id for i in items]
    assert shared[2].similarity is None and shared[2].error == alone[2].error
    assert [(r.similarity, r.details) for r in shared] == [(r.similarity, r.details) for r in alone]


@pytest.mark.parametrize("swap", ["tempo", "mode", "gender"])
def test_the_matching_description_scores_higher(songs, matched, scorer, swap):
    def mismatched(item: ScoringItem) -> ScoringItem:
        tags = dict(item.tags)
        if swap == "tempo":
            tags["bpm"] = OTHER_BPM[tags["tempo"]]
            tags["tempo"] = tempo_bucket(tags["bpm"])
        elif swap == "mode":
            tags["emotion"] = "joyful" if mode_for(tags["emotion"]) == "minor" else "somber"
        else:
            tags["gender"] = "female" if tags["gender"] == "male" else "male"
        return replace(item, tags=tags)

    swapped = scorer.score([mismatched(item) for item, _ in songs])
    wins = np.mean([a.similarity > b.similarity for a, b in zip(matched, swapped)])
    # Measured: tempo 14/14, mode 13/14, gender 14/14.
    assert wins >= 0.75, (swap, wins)


def test_bad_items_get_errors_and_the_rest_still_score(songs, scorer, tmp_path):
    good, _ = songs[0]
    sr = 16000
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"not audio at all")
    silent, short, nan = tmp_path / "silent.wav", tmp_path / "short.wav", tmp_path / "nan.wav"
    sf.write(silent, np.zeros(10 * sr), sr)
    sf.write(short, 0.5 * np.sin(np.arange(sr) / 10), sr)
    sf.write(nan, np.full(10 * sr, np.nan, dtype=np.float32), sr, subtype="FLOAT")

    def bare(name, path):
        return ScoringItem(name, path, good.lyric, "en", good.description, good.tags)

    items = [bare("missing", tmp_path / "missing.flac"), bare("corrupt", corrupt), good,
             bare("silent", silent), bare("short", short), bare("nan", nan),
             replace(good, candidate_id="bad-stem", stems={**good.stems, "vocals": corrupt})]  # fmt: skip
    results = scorer.score(items)
    assert [r.candidate_id for r in results] == [i.candidate_id for i in items]
    errors = {r.candidate_id: r.error for r in results}
    assert "unreadable" in errors["missing"] and "unreadable" in errors["corrupt"]
    assert "silent" in errors["silent"] and "under" in errors["short"] and "NaN" in errors["nan"]
    assert errors["bad-stem"].startswith("vocals")
    assert errors[good.candidate_id] is None and 0.0 <= results[2].similarity <= 1.0
    assert all(r.similarity is None for r in results if r.error)


def test_mix_only_items_and_partial_tags(songs, scorer):
    item, _ = songs[1]
    mix_only = replace(item, stems={}, tags={"bpm": item.tags["bpm"], "tempo": item.tags["tempo"]})
    (result,) = scorer.score([mix_only])
    assert result.error is None and set(result.details["agreement"]) == {"tempo"}
    assert result.details["band_source"] == "mix"
    (untagged,) = scorer.score([replace(item, tags={})])
    assert untagged.similarity is None and "no measurable attribute" in untagged.error


def test_options_and_describe():
    with pytest.raises(ValidationError):
        AttributesOptions(weight_tempo=1.0, unknown=1)
    with pytest.raises(ValidationError):
        AttributesOptions(backend="clap")
    scorer = AttributesScorer(AttributesOptions(weight_drums=0.0))
    description = scorer.describe()
    assert description["backend"] == "attributes" and description["version"]
    assert description["options"]["weight_drums"] == 0.0
    assert all(field.description for field in AttributesOptions.model_fields.values())
