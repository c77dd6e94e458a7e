"""Phoneme and word error rates of a transcript against its lyric, in percent.

The lyrics preference strategy pairs candidates whose phoneme error rate (PER) differs by more
than a gap (the paper: 40), so PER is on a x100 scale here: 0 = every phoneme right, 100 = as
many edits as the lyric has phonemes. It can exceed 100: insertions count as edits too, so a
hypothesis longer than the lyric and wrong throughout scores above 100 (not clipped, so that
"sang far too much" and "sang the wrong thing" stay distinguishable).

Normalisation (`normalize`, applied alike to the lyric and the transcript): structure tags
removed, lowercased, every character that is not a letter, digit or an apostrophe inside a word
becomes a space, whitespace collapsed, and spaces next to a CJK ideograph dropped (Chinese
spacing carries no meaning).

Phonemes come from phonemizer's espeak-ng backend, one cached backend per espeak voice and one
`phonemize` call per voice for a whole batch (a call costs far more than a line). Each text
becomes a list of phone symbols: word boundaries and stress marks are dropped, length marks
(`iː`) and Mandarin tone digits (`o2`) stay part of the phone they follow, so a tone error is a
substitution. espeak's language-switch flags (`(en)`) are removed, keeping the phones read.
espeak is one global state per backend, not thread-safe: calls are serialised by a lock, as a
round scores its shards in threads (without it, two concurrent calls merged their output lines).

Caveat: Debian's espeak-ng 1.51 reads many Mandarin syllables through its English fallback (你 ->
`n ɪ θ ɹ iː`, i.e. "ni three"), so Chinese phone counts are inflated. The mapping is deterministic
and applied to both sides, so PER still ranks candidates, but absolute Chinese PERs are not
comparable with other espeak versions.

WER counts words: whitespace-separated words for spaced languages, and each CJK ideograph as one
word for Chinese (the character error rate, as Chinese has no word spaces).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from functools import lru_cache

from pipeline.lyrics.format import VOCAL_TAGS, split_sections

# Lyric language code -> espeak-ng voice. Keys are the codes the pipeline writes ("en", "zh").
ESPEAK_LANGUAGES = {"en": "en-us", "zh": "cmn"}
_ESPEAK_LOCK = threading.Lock()

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TAG_RE = re.compile(r"\[[^\[\]]*\]")
# Anything but a word character or an apostrophe, and apostrophes not inside a word ("'tis" ->
# "tis", "don't" stays): espeak reads "don't" and "dont" alike, the ASR writes "don't".
_NOT_WORD_RE = re.compile(r"[^\w']+|_+|(?<!\w)'+|'+(?!\w)")
_CJK_GAP_RE = re.compile(f" (?=[{_CJK}])|(?<=[{_CJK}]) ")
_WORD_RE = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")


@dataclass
class ErrorRates:
    per: float  # phoneme error rate x100 (edits / reference phonemes)
    wer: float  # word error rate x100 (characters for Chinese)
    reference_phonemes: list[str]
    hypothesis_phonemes: list[str]


def espeak_language(language: str) -> str:
    """The espeak-ng voice for a lyric language ("en", "en-US", "zh_CN"); ValueError if unknown."""
    code = (language or "").strip().lower().replace("_", "-")
    voice = ESPEAK_LANGUAGES.get(code) or ESPEAK_LANGUAGES.get(code.split("-")[0])
    if voice is None:
        known = ", ".join(sorted(ESPEAK_LANGUAGES))
        raise ValueError(f"no phonemizer language for {language!r}: known languages are {known}")
    return voice


def normalize(text: str) -> str:
    """The one normalisation both sides get (see the module docstring)."""
    text = _NOT_WORD_RE.sub(" ", _TAG_RE.sub(" ", text).lower())
    return _CJK_GAP_RE.sub("", " ".join(text.split()))


def lyric_text(lyric: str) -> str:
    """The sung words of a LeVo lyric, normalised: vocal sections only (and untagged text, which
    a singer would sing too), tags and punctuation gone."""
    sections = split_sections(lyric)
    return normalize(" ".join(s.text for s in sections if s.tag in VOCAL_TAGS or not s.tag))


def words(text: str) -> list[str]:
    """WER units of a normalised text: words, and single ideographs for Chinese."""
    return _WORD_RE.findall(text)


@lru_cache(maxsize=8)
def _backend(voice: str):
    """One EspeakBackend per voice: building one loads espeak's data (slow)."""
    from phonemizer.backend import EspeakBackend

    quiet = logging.getLogger("songpref.phonemizer")
    quiet.setLevel(logging.ERROR)  # it warns on every batch whose language flags it removes
    return EspeakBackend(voice, with_stress=False, language_switch="remove-flags", logger=quiet)


def phonemes(texts: list[str], language: str) -> list[list[str]]:
    """Phone symbols of each normalised text, in one phonemizer call (word boundaries dropped)."""
    from phonemizer.separator import Separator

    if not texts:
        return []
    separator = Separator(phone=" ", word=" | ", syllable="")
    with _ESPEAK_LOCK:
        lines = _backend(espeak_language(language)).phonemize(list(texts), separator=separator, strip=True)
    return [[p for p in line.split() if p != "|"] for line in lines]


def _edit_rate(reference: list[str], hypothesis: list[str]) -> float:
    """Levenshtein distance over tokens / reference tokens x100; tokens hold no spaces."""
    import jiwer

    if not hypothesis:
        return 100.0  # every reference token deleted (jiwer wants a non-empty hypothesis)
    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return 100.0 * (out.substitutions + out.deletions + out.insertions) / len(reference)


def _rates(ref_text: str, hyp_text: str, ref_ph: list[str], hyp_ph: list[str]) -> ErrorRates:
    if not ref_ph:
        raise ValueError(f"reference {ref_text!r} has no phonemes: the lyric sings nothing")
    return ErrorRates(_edit_rate(ref_ph, hyp_ph), _edit_rate(words(ref_text), words(hyp_text)), ref_ph, hyp_ph)


def error_rates(reference_lyric: str, hypothesis: str, language: str) -> ErrorRates:
    """PER and WER (x100) of a transcript against a LeVo-format lyric."""
    result = error_rates_batch([(reference_lyric, hypothesis, language)])[0]
    if isinstance(result, Exception):
        raise result
    return result


def error_rates_batch(rows: list[tuple[str, str, str]]) -> list[ErrorRates | Exception]:
    """`error_rates` for (reference_lyric, hypothesis, language) rows: one phonemizer call per
    language, and a bad row gets its exception in its place while the others are scored."""
    results: list[ErrorRates | Exception | None] = [None] * len(rows)
    texts: dict[int, tuple[str, str]] = {}
    by_voice: dict[str, list[int]] = {}
    for i, (lyric, hypothesis, language) in enumerate(rows):
        try:
            voice = espeak_language(language)
            ref = lyric_text(lyric)
            if not ref:
                raise ValueError(f"reference lyric {lyric[:40]!r} has no sung words")
            texts[i] = (ref, normalize(hypothesis or ""))
            by_voice.setdefault(voice, []).append(i)
        except Exception as exc:  # noqa: BLE001 - reported in the row's place
            results[i] = exc
    for voice, indices in by_voice.items():
        unique = list(dict.fromkeys(t for i in indices for t in texts[i]))
        try:
            table = dict(zip(unique, phonemes(unique, _code_of(voice))))
        except Exception as exc:  # noqa: BLE001 - espeak failed for the whole language
            for i in indices:
                results[i] = exc
            continue
        for i in indices:
            ref, hyp = texts[i]
            try:
                results[i] = _rates(ref, hyp, table[ref], table[hyp] if hyp else [])
            except Exception as exc:  # noqa: BLE001
                results[i] = exc
    return results  # type: ignore[return-value]


def _code_of(voice: str) -> str:
    return next(code for code, v in ESPEAK_LANGUAGES.items() if v == voice)
