"""Known-answer tests of the phoneme and word error rates (real phonemizer + espeak-ng 1.51)."""

from __future__ import annotations

import pytest

from pipeline.scoring.per import ErrorRates, error_rates, error_rates_batch, espeak_language, lyric_text, normalize


def test_lyric_text_keeps_only_sung_words():
    lyric = ("[intro-short] ; [verse] The sun, is shining! Don't stop. ; [inst-short] ; "
             "[chorus] Hold my HAND. ; [outro-short]")
    assert lyric_text(lyric) == "the sun is shining don't stop hold my hand"


def test_normalize_is_the_same_for_both_sides():
    assert normalize("  [verse] 'Tis THE  cat's_hat!!  ") == "tis the cat's hat"
    assert normalize("你 好 世界 。") == "你好世界"  # Chinese spacing carries no meaning
    assert lyric_text("[verse] 你好.世界") == "你好世界"


def test_identical_gives_zero():
    rates = error_rates("[verse] The cat sat on the mat.", "the cat sat on the mat", "en")
    assert (rates.per, rates.wer) == (0.0, 0.0)
    # espeak en-us, stress dropped: 15 phones.
    assert rates.reference_phonemes == "ð ə k æ t s æ t ɔ n ð ə m æ t".split()


def test_substitution_cat_bat_is_one_of_three():
    # espeak: cat = k æ t, bat = b æ t -> 1 substitution / 3 phones; 1 word of 1 wrong.
    rates = error_rates("[verse] Cat.", "bat", "en")
    assert rates.reference_phonemes == ["k", "æ", "t"] and rates.hypothesis_phonemes == ["b", "æ", "t"]
    assert rates.per == pytest.approx(100 / 3)
    assert rates.wer == 100.0


def test_dropped_word_costs_its_phonemes():
    # "on" = ɔ n: 2 deletions of 15 phones; 1 of 6 words.
    rates = error_rates("[verse] The cat sat on the mat.", "the cat sat the mat", "en")
    assert rates.per == pytest.approx(100 * 2 / 15)
    assert rates.wer == pytest.approx(100 / 6)


def test_structure_tags_and_instrumental_sections_are_not_lyrics():
    lyric = "[intro-medium] ; [verse] The cat sat. ; [inst-short] ; [chorus] On the mat. ; [outro-short]"
    assert error_rates(lyric, "The cat sat, on the mat!", "en").per == 0.0
    # Tags a transcript happens to hold are stripped too.
    assert error_rates(lyric, "[verse] the cat sat on the mat", "en").per == 0.0


def test_units_empty_hypothesis_and_insertions_over_100():
    assert error_rates("[verse] The cat.", "", "en").per == 100.0
    # the cat = ð ə k æ t (5); dog x5 = 15 phones (d ɑː ɡ): 5 substitutions + 10 insertions = 300.
    rates = error_rates("[verse] The cat.", "dog dog dog dog dog", "en")
    assert rates.per == pytest.approx(300.0)
    assert rates.wer == pytest.approx(250.0)  # 2 substitutions + 3 insertions over 2 words


def test_chinese_uses_cmn_and_characters_for_wer():
    # espeak-ng 1.51 cmn: 我 = w o2, 爱 = ai5, 你 = n ɪ θ ɹ iː (read via its English fallback:
    # "ni three"), 他 = t a w ɒ n ("ta one"): 5 substitutions of 8 phones; 1 of 3 characters.
    rates = error_rates("[verse] 我爱你", "我 爱 他", "zh")
    assert rates.reference_phonemes == ["w", "o2", "ai5", "n", "ɪ", "θ", "ɹ", "iː"]
    assert rates.per == pytest.approx(100 * 5 / 8)
    assert rates.wer == pytest.approx(100 / 3)
    assert error_rates("[verse] 我爱你", "我爱你", "zh").per == 0.0


def test_language_map_and_errors():
    assert espeak_language("en") == "en-us" and espeak_language("en-US") == "en-us"
    assert espeak_language("zh_CN") == "cmn"
    with pytest.raises(ValueError, match="'fr'"):
        error_rates("[verse] Bonjour.", "bonjour", "fr")
    with pytest.raises(ValueError, match="no sung words"):
        error_rates("[intro-short] ; [outro-short]", "hello", "en")


def test_batch_keeps_order_and_isolates_bad_rows():
    rows = [
        ("[verse] Cat.", "bat", "en"),
        ("[verse] Cat.", "cat", "xx"),  # unknown language
        ("[verse] 我爱你", "我爱你", "zh"),
        ("[inst-short]", "cat", "en"),  # nothing sung
        ("[verse] The cat sat on the mat.", "the cat sat on the mat", "en"),
    ]
    out = error_rates_batch(rows)
    assert isinstance(out[0], ErrorRates) and out[0].per == pytest.approx(100 / 3)
    assert isinstance(out[1], ValueError) and "'xx'" in str(out[1])
    assert isinstance(out[2], ErrorRates) and out[2].per == 0.0
    assert isinstance(out[3], ValueError)
    assert isinstance(out[4], ErrorRates) and out[4].per == 0.0
    assert out[0] == error_rates(*rows[0])  # the batch gives what the single call gives


def test_threads_phonemizing_at_once_each_get_their_own_lines():
    """A round scores shards in threads; espeak is one global state per voice, so two phonemizer
    calls at once once merged their outputs (a whole shard failed: input 214 lines, output 215)."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.scoring.per import phonemes

    batches = [[f"{word} number {i} sings in the rain" for i in range(200)] for word in ("cat", "dog", "bird", "fish")]
    alone = [phonemes(batch, "en") for batch in batches]
    with ThreadPoolExecutor(len(batches)) as pool:
        for _ in range(3):
            together = list(pool.map(lambda batch: phonemes(batch, "en"), batches))
            assert together == alone
