"""Tokens <-> Score for the tiny LeVo-shaped model: a header plus three per-frame streams.

LeVo's LM predicts a *mixed* token per frame first, then two *dual-track* tokens (vocals,
accompaniment). Here one frame is one score step (an eighth note) and every stream has
exactly `score.steps` tokens, so the streams line up frame by frame as LeVo's do.

Streams (id layouts are the `_*_id` helpers below):
- header (3 tokens, one shared vocab of 50): bpm bin (4-bpm bins 60..200), key 0-11, mode.
  Sampled by the model, so a song can miss the described tempo or key; decoding keeps the
  condition's exact bpm when the sampled bin is the condition's own bin.
- vocals: REST, HOLD, or NOTE_ON(word position, pitch offset) as one combined id
  2 + position * 37 + (offset + 12). The position indexes the lyric's word list, so the LM
  learns to copy words in order and a skipped, repeated or swapped word is a wrong index.
  The offset (-12..+24) is from the tonic in the gender's reference octave (female C4,
  male C3), which covers both registers. Vocab 2 + 512 * 37 = 18946.
- accompaniment: chord state (none, or root-relative-to-key x quality x onset flag: 49) x
  drum hits (kick/snare/hat bits: 8) x bass onset flag (2) = 784. Bass pitch is implied (the
  chord root in octave C2) and a bass note lasts until the next bass onset or chord change.
- mixed: section-start flag (2) x chord class (none or root x quality: 25) x sounding vocal
  pitch class relative to key or none (13) = 650: the coarse joint token. Decoding reads only
  the section-start flags from it; section tags are the condition lyric's tags in order
  (sections past the lyric's last tag get the tag "[]", so a sampled extra section shows).

Not represented, taken from the condition on decode: gender, genre, instruments.
"""

from __future__ import annotations

import re
from bisect import bisect_right

from pipeline.lyrics.format import VOCAL_TAGS, split_sections
from pipeline.models.tiny.score import DRUM_KINDS, MODES, Chord, Hit, Note, Score, Section, SungWord

BPM_MIN, BPM_MAX, BPM_BIN = 60, 200, 4
N_BPM = (BPM_MAX - BPM_MIN) // BPM_BIN + 1
KEY_BASE, MODE_BASE = N_BPM, N_BPM + 12
HEADER_SIZE = MODE_BASE + len(MODES)

MAX_WORDS = 512
PITCH_LOW, PITCH_HIGH = -12, 24
N_PITCH = PITCH_HIGH - PITCH_LOW + 1
VOCAL_REST, VOCAL_HOLD, VOCAL_NOTE_BASE = 0, 1, 2
VOCAL_SIZE = VOCAL_NOTE_BASE + MAX_WORDS * N_PITCH
REFERENCE_OCTAVE = {"female": 60, "male": 48}

QUALITIES = ("maj", "min")
N_CHORD = 1 + 12 * len(QUALITIES)  # class 0 = no chord
N_CHORD_STATE = 1 + 2 * (N_CHORD - 1)  # class x onset flag
N_DRUMS = 1 << len(DRUM_KINDS)
ACCOMPANIMENT_SIZE = N_CHORD_STATE * N_DRUMS * 2
N_VOCAL_PC = 13  # 0 = no vocal
MIXED_SIZE = 2 * N_CHORD * N_VOCAL_PC
BASS_OCTAVE = 36

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# A CJK ideograph is one sung syllable; otherwise a run of letters/digits, inner apostrophes kept.
_WORD_RE = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+(?:'[^\\W_{_CJK}]+)*")


def sentence_words(text: str) -> list[list[str]]:
    """Words of each '.'-separated sentence, lowercased and without punctuation; empty ones dropped."""
    sentences = (_WORD_RE.findall(s) for s in text.lower().split("."))
    return [s for s in sentences if s]


def lyric_words(lyric: str) -> list[str]:
    """Every word the lyric asks to be sung, in order: the word vocabulary of one condition."""
    return [w for s in split_sections(lyric) if s.tag in VOCAL_TAGS for sent in sentence_words(s.text) for w in sent]


def word_error_rate(score: Score, lyric_words: list[str]) -> float:
    """Levenshtein distance of the sung words to the lyric words / number of lyric words.

    Read from the score, not by ASR: the symbolic counterpart of LeVo's per-candidate PER.
    An empty lyric scores 0.0 when nothing is sung and 1.0 otherwise.
    """
    sung = score.sung_text()
    if not lyric_words:
        return float(bool(sung))
    row = list(range(len(sung) + 1))
    for i, ref in enumerate(lyric_words, 1):
        prev, row[0] = row[0], i
        for j, hyp in enumerate(sung, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ref != hyp))
    return row[-1] / len(lyric_words)


def bpm_bin(bpm: float) -> int:
    """Bin i holds [60 + 4i, 64 + 4i); tempos outside 60..200 fall in the end bins."""
    return min(max(int((bpm - BPM_MIN) // BPM_BIN), 0), N_BPM - 1)


def encode_header(score: Score) -> list[int]:
    return [bpm_bin(score.tempo_bpm), KEY_BASE + score.key % 12, MODE_BASE + MODES.index(score.mode)]


def decode_header(tokens) -> dict:
    """{"bpm", "key", "mode"} from the first token in each field's id range; None where absent."""
    out: dict = {"bpm": None, "key": None, "mode": None}
    for tok in _clean(tokens, HEADER_SIZE, -1):
        if tok < KEY_BASE and out["bpm"] is None:
            out["bpm"] = BPM_MIN + BPM_BIN * tok
        elif KEY_BASE <= tok < MODE_BASE and out["key"] is None:
            out["key"] = tok - KEY_BASE
        elif tok >= MODE_BASE and out["mode"] is None:
            out["mode"] = MODES[tok - MODE_BASE]
    return out


def _clean(tokens, size: int, neutral: int, length: int | None = None) -> list[int]:
    """Any sequence as in-range ints: a sampled stream may hold anything, decoding must not raise."""
    out = []
    for tok in list(tokens or []):
        try:
            tok = int(tok)
        except (TypeError, ValueError, OverflowError):
            tok = neutral
        out.append(tok if 0 <= tok < size else neutral)
    if length is not None:
        out = out[:length] + [neutral] * (length - len(out))
    return out


def _chord_class(root: int, quality: str, key: int) -> int:
    return 1 + ((root - key) % 12) * len(QUALITIES) + QUALITIES.index(quality)


class SymbolicCodec:
    """Score <-> {"header", "mixed", "vocals", "accompaniment"} token lists (see module doc)."""

    vocab_sizes = {"header": HEADER_SIZE, "mixed": MIXED_SIZE, "vocals": VOCAL_SIZE, "accompaniment": ACCOMPANIMENT_SIZE}

    def encode(self, score: Score, lyric_words: list[str]) -> dict[str, list[int]]:
        """Raises ValueError for what the streams cannot hold: a word not in the lyric, a
        word position past MAX_WORDS, a vocal pitch outside the offset range, an unknown quality."""
        n, key = score.steps, score.key
        chord = [0] * n
        chord_on = [0] * n
        for c in score.chords:
            if c.quality not in QUALITIES:
                raise ValueError(f"chord quality {c.quality!r} not in {QUALITIES}")
            cls = _chord_class(c.root, c.quality, key)
            end = min(c.start + c.duration, n)
            chord[c.start : end] = [cls] * (end - c.start)
            if c.start < n:
                chord_on[c.start] = 1
        drums = [0] * n
        for h in score.drums:
            drums[h.start] |= 1 << DRUM_KINDS.index(h.kind)
        bass = [0] * n
        for note in score.bass:
            bass[note.start] = 1
        vocals, vocal_pc = self._encode_vocals(score, lyric_words, n)
        starts = {s.start for s in score.sections}
        return {
            "header": encode_header(score),
            "mixed": [((t in starts) * N_CHORD + chord[t]) * N_VOCAL_PC + vocal_pc[t] for t in range(n)],
            "vocals": vocals,
            "accompaniment": [
                ((1 + 2 * (chord[t] - 1) + chord_on[t] if chord[t] else 0) * N_DRUMS + drums[t]) * 2 + bass[t]
                for t in range(n)
            ],
        }

    @staticmethod
    def _encode_vocals(score: Score, words: list[str], n: int) -> tuple[list[int], list[int]]:
        """Each sung word takes the lyric position of its next occurrence after the previous one
        (or its first occurrence, for a repeat), so an in-order song gets positions 0, 1, 2, ..."""
        positions: dict[str, list[int]] = {}
        for i, w in enumerate(words[:MAX_WORDS]):
            positions.setdefault(w, []).append(i)
        ref = REFERENCE_OCTAVE.get(score.gender, 60) + score.key
        vocals, pcs, cursor = [VOCAL_REST] * n, [0] * n, 0
        for w in score.vocals:
            found = positions.get(w.word)
            if not found:
                raise ValueError(f"sung word {w.word!r} is not among the first {MAX_WORDS} lyric words")
            pos = next((p for p in found if p >= cursor), found[0])
            offset = w.pitch - ref
            if not PITCH_LOW <= offset <= PITCH_HIGH:
                raise ValueError(f"pitch {w.pitch} is outside the codec's range for key {score.key}, {score.gender}")
            cursor = pos + 1
            end = min(w.start + w.duration, n)
            vocals[w.start] = VOCAL_NOTE_BASE + pos * N_PITCH + offset - PITCH_LOW
            vocals[w.start + 1 : end] = [VOCAL_HOLD] * (end - w.start - 1)
            pcs[w.start : end] = [1 + (w.pitch - score.key) % 12] * (end - w.start)
        return vocals, pcs

    def decode(self, tokens: dict, condition: dict, lyric_words: list[str]) -> Score:
        """Never raises on any token lists: out-of-range tokens read as neutral (rest / nothing),
        a HOLD without a note is a rest, and a word position past the lyric is skipped."""
        header = decode_header(tokens.get("header"))
        cond_bpm = int(condition.get("bpm") or 120)
        bpm = cond_bpm if header["bpm"] in (None, BPM_MIN + BPM_BIN * bpm_bin(cond_bpm)) else header["bpm"]
        key = header["key"] if header["key"] is not None else 0
        gender = condition.get("gender", "female")
        score = Score(bpm, key, header["mode"] or "major", gender, condition.get("genre", ""),
                      list(condition.get("instruments", [])))  # fmt: skip
        n = max((len(tokens.get(k) or []) for k in ("mixed", "vocals", "accompaniment")), default=0)
        mixed = _clean(tokens.get("mixed"), MIXED_SIZE, 0, n)
        acc = _clean(tokens.get("accompaniment"), ACCOMPANIMENT_SIZE, 0, n)
        vocals = _clean(tokens.get("vocals"), VOCAL_SIZE, VOCAL_REST, n)
        score.sections = self._decode_sections(mixed, condition.get("lyric", ""))
        chord_of = self._decode_chords(score, acc)
        self._decode_bass(score, acc, chord_of)
        score.drums = [Hit(t, kind) for t in range(n) for b, kind in enumerate(DRUM_KINDS) if acc[t] // 2 & (1 << b)]
        self._decode_vocals(score, vocals, lyric_words)
        return score

    @staticmethod
    def _decode_sections(mixed: list[int], lyric: str) -> list[Section]:
        tags = [f"[{s.tag}]" for s in split_sections(lyric)]
        starts = [t for t, tok in enumerate(mixed) if t == 0 or tok >= N_CHORD * N_VOCAL_PC]
        ends = starts[1:] + [len(mixed)]
        return [Section(tags[i] if i < len(tags) else "[]", s, e) for i, (s, e) in enumerate(zip(starts, ends))]

    @staticmethod
    def _decode_chords(score: Score, acc: list[int]) -> list[int]:
        """Fills score.chords; returns each frame's chord index (-1 for none) for the bass."""
        chord_of, current = [], -1
        for t, tok in enumerate(acc):
            state = tok // (2 * N_DRUMS)
            if not state:
                current = -1
            else:
                cls, onset = 1 + (state - 1) // 2, (state - 1) % 2
                rel, quality = divmod(cls - 1, len(QUALITIES))
                root = (score.key + rel) % 12
                prev = score.chords[current] if current >= 0 else None
                if onset or prev is None or (prev.root, prev.quality) != (root, QUALITIES[quality]):
                    score.chords.append(Chord(t, 1, root, QUALITIES[quality]))
                    current = len(score.chords) - 1
                else:
                    score.chords[current] = Chord(prev.start, prev.duration + 1, prev.root, prev.quality)
            chord_of.append(current)
        return chord_of

    @staticmethod
    def _decode_bass(score: Score, acc: list[int], chord_of: list[int]) -> None:
        """A bass onset plays its chord's root until the next bass onset or chord change."""
        n = len(acc)
        for t in range(n):
            if acc[t] % 2 and chord_of[t] >= 0:
                end = t + 1
                while end < n and chord_of[end] == chord_of[t] and not acc[end] % 2:
                    end += 1
                score.bass.append(Note(t, end - t, BASS_OCTAVE + score.chords[chord_of[t]].root))

    @staticmethod
    def _decode_vocals(score: Score, vocals: list[int], words: list[str]) -> None:
        ref = REFERENCE_OCTAVE.get(score.gender, 60) + score.key
        starts = [s.start for s in score.sections]
        n, t = len(vocals), 0
        while t < n:
            tok, end = vocals[t], t + 1
            if tok >= VOCAL_NOTE_BASE:
                while end < n and vocals[end] == VOCAL_HOLD:
                    end += 1
                pos, offset = divmod(tok - VOCAL_NOTE_BASE, N_PITCH)
                if pos < len(words):
                    section = max(bisect_right(starts, t) - 1, 0)
                    score.vocals.append(SungWord(t, end - t, ref + offset + PITCH_LOW, words[pos], section))
            t = end
