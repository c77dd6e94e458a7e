"""The pocketsphinx transcriber on flite-sung songs from the project's own composer and renderer."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.models.tiny.composer import compose
from pipeline.models.tiny.renderer import render, write_stems
from pipeline.scoring.base import ScoringItem
from pipeline.scoring.per import error_rates
from pipeline.scoring.pocketsphinx_asr import PocketsphinxOptions, PocketsphinxTranscriber, arpa_lm

pytestmark = pytest.mark.skipif(not Path("/usr/bin/flite").exists(), reason="flite is not installed")

SUN = ("[intro-short] ; [verse] The sun is shining on the hill. We walk together in the light. ; "
       "[chorus] Hold my hand and sing with me. ; [outro-short]")
RIVER = ("[verse] I miss the river and the rain. The night is cold without you here. ; "
         "[chorus] Come back home to me tonight.")
# A candidate that sang RIVER wrongly: a sentence dropped (the embedded model's kind of mistake).
RIVER_SKIPPED = "[verse] I miss the river and the rain. ; [chorus] Come back home to me tonight."
ROUND = [SUN, RIVER, "[verse] Walking in the rain again. Nothing left to say. ; [chorus] Hold on to the night."]


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("songs")
    paths = {}
    for name, lyric, gender in (("sun", SUN, "female"), ("river", RIVER, "male"), ("skipped", RIVER_SKIPPED, "male")):
        condition = {"lyric": lyric, "gender": gender, "genre": "Pop", "emotion": "happy",
                     "instruments": ["piano"], "bpm": 100}
        paths[name] = write_stems(render(compose(condition, random.Random(1))), root / name)["vocals"]
    paths["corrupt"] = root / "corrupt.flac"
    paths["corrupt"].write_bytes(b"fLaC but not really audio")
    paths["silent"] = root / "silent.flac"
    sf.write(paths["silent"], np.zeros(32000, dtype=np.float32), 16000)
    return paths


def item(name: str, path: Path, lyric: str = RIVER, language: str = "en") -> ScoringItem:
    return ScoringItem(name, path, lyric, language, "a pop song")


@pytest.fixture(scope="module")
def lyrics_asr():
    asr = PocketsphinxTranscriber(PocketsphinxOptions(workers=1))
    asr.prepare(ROUND)
    yield asr
    asr.close()


def test_flite_song_is_heard_with_low_per(songs, lyrics_asr):
    # Measured (pocketsphinx 5.1.1, flite 2.2, espeak-ng 1.51): SUN 1.7 ("light" heard as
    # "night"), RIVER 0.0. Bound 10: a margin over the measurement, far under the paper's gap of 40.
    out = lyrics_asr.transcribe([item("sun", songs["sun"], SUN), item("river", songs["river"])])
    assert error_rates(SUN, out[0].text, "en").per < 10
    assert error_rates(RIVER, out[1].text, "en").per < 10


def test_lyrics_lm_lowers_per_and_hears_mistakes_as_sung(songs, lyrics_asr):
    # Measured on these songs with the wheel's general LM: SUN 13.6, RIVER 23.2, RIVER_SKIPPED
    # 46.4 (true 35.7); with the lyrics LM: 1.7, 0.0 and 35.7. The round-wide LM does not make the
    # ASR sing the lyric back: the skipped sentence stays skipped, so the PER gap survives.
    general = PocketsphinxTranscriber(PocketsphinxOptions(lyrics_lm=False, workers=1))
    names = [("sun", SUN), ("river", RIVER), ("skipped", RIVER)]
    items = [item(n, songs[n], lyric) for n, lyric in names]
    with_lm = [error_rates(it.lyric, t.text, "en").per for it, t in zip(items, lyrics_asr.transcribe(items))]
    without = [error_rates(it.lyric, t.text, "en").per for it, t in zip(items, general.transcribe(items))]
    assert sum(with_lm) < sum(without)
    assert with_lm[0] < without[0] and with_lm[1] < without[1]
    true_per = error_rates(RIVER, RIVER_SKIPPED, "en").per  # 35.7: the phonemes of the dropped sentence
    assert with_lm[2] == pytest.approx(true_per, abs=5)


def test_bad_items_get_errors_and_the_rest_go_on_in_order(songs):
    asr = PocketsphinxTranscriber(PocketsphinxOptions(workers=2))
    asr.prepare(ROUND)
    try:
        items = [item("river", songs["river"]), item("corrupt", songs["corrupt"]), item("sun", songs["sun"], SUN),
                 item("silent", songs["silent"]), item("zh", songs["river"], language="zh"),
                 item("missing", songs["river"].parent / "nope.flac"), item("river-again", songs["river"])]
        out = asr.transcribe(items)
    finally:
        asr.close()
    assert [t.candidate_id for t in out] == [it.candidate_id for it in items]
    assert [t.error is None for t in out] == [True, False, True, False, False, False, True]
    assert "silent" in out[3].error and "English-only" in out[4].error
    assert all(t.text == "" for t in out if t.error)
    assert error_rates(SUN, out[2].text, "en").per < 10
    # Same audio, same transcript: in one call, across calls, and across worker counts.
    assert out[0].text == out[6].text == asr_text_in_process(songs["river"])
    assert all(t.language == "en" for t in out)


def asr_text_in_process(path: Path) -> str:
    asr = PocketsphinxTranscriber(PocketsphinxOptions(workers=1))
    asr.prepare(ROUND)
    return asr.transcribe([item("again", path)])[0].text


def test_words_cmudict_lacks_are_pronounced_by_espeak_or_reported(lyrics_asr, monkeypatch):
    asr = PocketsphinxTranscriber(PocketsphinxOptions(workers=1))
    asr.prepare(["[verse] Sing blorptastic songs tonight."])
    # espeak: b l oːɹ p t eɪ s t ɪ k -> CMU phones (measured: a flite-sung "blorptastic" decodes).
    assert asr.espeak_words == {"blorptastic": ["blorptastic B L AO R P T EY S T IH K"]}
    assert asr.unknown_words == []
    info = asr.describe()
    assert info["backend"] == "pocketsphinx" and info["espeak_words"] == ["blorptastic"]
    assert info["acoustic_model"].endswith("en-us") and len(info["lm_sha256"]) == 64
    assert info["lm_sha256"] != lyrics_asr.describe()["lm_sha256"]
    # A word espeak cannot map either is reported and left out of the LM.
    monkeypatch.setattr("pipeline.scoring.pocketsphinx_asr._espeak_entries", lambda words: {})
    asr.prepare(["[verse] Sing blorptastic songs tonight."])
    assert asr.unknown_words == ["blorptastic"] and asr.describe()["unknown_words"] == ["blorptastic"]
    asr.close()
    with pytest.raises(RuntimeError, match="prepare"):
        PocketsphinxTranscriber(PocketsphinxOptions(workers=1)).transcribe([item("x", Path("x.flac"))])


def _arpa_prob(arpa: str, history: tuple, word: str) -> float:
    """P(word | history) by the ARPA backoff rule, read back from the text."""
    table = {}
    for line in arpa.splitlines():
        parts = line.split()
        if parts and parts[0].lstrip("-").replace(".", "").isdigit() and not line.startswith("ngram"):
            n = next(k for k in range(len(parts) - 1, 0, -1) if not _is_number(parts[k]))
            table[tuple(parts[1 : n + 1])] = (float(parts[0]), float(parts[n + 1]) if n + 1 < len(parts) else 0.0)
    bow = 0.0
    while (*history, word) not in table:
        bow += table.get(history, (0.0, 0.0))[1]
        history = history[1:]
    return 10 ** (table[(*history, word)][0] + bow)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def test_arpa_lm_is_a_proper_distribution():
    sentences = [s.split() for s in ("the cat sat", "the cat ran", "a dog sat", "the dog sat down")]
    arpa = arpa_lm(sentences, 3)
    vocab = sorted({w for s in sentences for w in s} | {"</s>"})
    for history in [("<s>",), ("<s>", "the"), ("the", "cat"), ("cat", "sat"), ("dog",), ("a", "cat")]:
        assert math.isclose(sum(_arpa_prob(arpa, history, w) for w in vocab), 1.0, abs_tol=1e-4), history
    assert _arpa_prob(arpa, ("the",), "cat") > _arpa_prob(arpa, ("the",), "down")
