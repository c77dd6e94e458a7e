"""LeVo lyric format: parse, validate, repair, normalise, convert.

LeVo's `gt_lyric` is `[tag] text ; [tag] text ; ...` (rules in its README and in
shared/reference/levo/SOURCE.md). LeVo does not reject a malformed lyric, it silently
sings something else, so every lyric is validated here before it reaches the model, and
each problem is reported precisely enough to fix it by hand.

Two severities. An *error* is what LeVo's parser cannot take (a missing or unknown structure
tag, a stray ';', a vocal section without lyrics, lyrics in an instrumental section, a tag
inside a section, punctuation it has no mapping for, over the token limit): the lyric is
excluded. A *warning* is a style deviation LeVo accepts (a ';' not written " ; ", full-width
punctuation it maps to ASCII, the closing '.' rule): `fix_style` repairs it and the lyric is
kept. LeVo's own README example writes `[intro-short];` and its tokenizer takes it.

Error messages number sections from 1 (as a person counts); `LyricError.section` is the
0-based index into `split_sections(lyric)`.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

STRUCTURE_TAGS: tuple[str, ...] = (
    "verse", "chorus", "bridge",
    "intro-short", "intro-medium", "intro-long",
    "outro-short", "outro-medium", "outro-long",
    "inst-short", "inst-medium", "inst-long",
    "silence",
)  # fmt: skip
VOCAL_TAGS: frozenset[str] = frozenset({"verse", "chorus", "bridge"})
_TAGS = frozenset(STRUCTURE_TAGS)

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RE = re.compile(f"[{_CJK}]")
_CJK_RUN_RE = re.compile(f"[{_CJK}]+")
_TAG_RE = re.compile(r"\[[^\[\]]*\]")
_HAS_WORD_RE = re.compile(r"[^\W_]")  # a letter, digit or ideograph: the section sings something
# Non-ASCII characters other than ideographs; only these few need a unicodedata look-up.
_SUSPECT_RE = re.compile(f"[^\\x00-\\x7f{_CJK}]")
# Byte tables for estimate_tokens: keep [A-Za-z'] (or digits), blank out every other byte,
# so bytes.split() yields the same runs as re.findall("[A-Za-z']+") at a fraction of the cost.
_WORD_BYTES = bytes(c if chr(c).isascii() and (chr(c).isalpha() or c == 39) else 32 for c in range(256))
_DIGIT_BYTES = bytes(c if 48 <= c <= 57 else 32 for c in range(256))


@dataclass(frozen=True)
class Section:
    tag: str  # "" when the piece has no leading [tag]
    text: str  # without the tag, stripped


# Style deviations LeVo accepts; every other code is an error.
WARNING_CODES: frozenset[str] = frozenset(
    {"separator", "full_width_punctuation", "en_section_must_end_with_period", "zh_section_must_not_end_with_period"}
)


@dataclass(frozen=True)
class LyricError:
    """One problem of a lyric: an error (LeVo cannot take it) or a warning (`fix_style` repairs it)."""

    code: str
    message: str
    section: int | None  # 0-based section index, None for the whole lyric

    @property
    def severity(self) -> str:
        return "warning" if self.code in WARNING_CODES else "error"


def _parse(piece: str) -> tuple[str, str]:
    """(tag, text) of one ';'-separated piece: a tuple, as validation is hot and dataclasses slow."""
    piece = piece.strip()
    if piece[:1] == "[":
        tag, closed, text = piece[1:].partition("]")
        if closed and "[" not in tag:
            return tag, text.strip()
    return "", piece


def split_sections(lyric: str) -> list[Section]:
    """Tolerant parse: splits on every ';' whatever its spacing, so validation sees every piece."""
    lyric = lyric.strip()
    return [Section(*_parse(piece)) for piece in lyric.split(";")] if lyric else []


def section_language(text: str) -> str:
    """"zh" when the text holds a CJK ideograph: Chinese lyrics may contain a few Latin words."""
    return "zh" if _CJK_RE.search(text) else "en"


def detect_language(lyric: str) -> str:
    """"zh", "en" or "mixed" over the vocal sections; "en" when nothing is sung."""
    langs = {section_language(s.text) for s in split_sections(lyric) if s.tag in VOCAL_TAGS and s.text}
    return "mixed" if len(langs) > 1 else (langs.pop() if langs else "en")


def estimate_tokens(lyric: str) -> int:
    """A conservative stand-in for LeVo's Qwen2 token count (that tokenizer cannot be shipped).

    Tags, '.', ';' and English words ([A-Za-z']+) count 1 each, a CJK run ceil(len/2)
    (Qwen2 merges common pairs), a digit run ceil(len/3); everything else 0. It tends to
    under-count, so a lyric it flags as too long really is too long.
    """
    rest, n = _TAG_RE.subn(" ", lyric)
    raw = rest.encode()
    n += len(raw.translate(_WORD_BYTES).split()) + rest.count(".") + rest.count(";")
    n += sum((len(run) + 2) // 3 for run in raw.translate(_DIGIT_BYTES).split())
    return n if rest.isascii() else n + sum((len(run) + 1) // 2 for run in _CJK_RUN_RE.findall(rest))


def _clip(text: str, width: int = 20) -> str:
    return text if len(text) <= width else text[:width] + "..."


def _name(i: int, tag: str, text: str) -> str:
    """How messages point at a section: number (from 1), tag and the start of its text."""
    label = f"section {i + 1} [{tag}]" if tag else f"section {i + 1}"
    return f'{label} ("{_clip(text)}")' if text else label


def _odd_chars(text: str) -> list[str]:
    """Non-ASCII punctuation, symbols and spaces (full-width marks, emoji, U+3000, ...)."""
    odd = (c for c in _SUSPECT_RE.findall(text) if unicodedata.category(c)[0] in "PSZ")
    return list(dict.fromkeys(odd))


def _spaced(before: str, after: str) -> bool:
    """Whether the ';' between these two pieces is written exactly ' ; '."""
    left_ok = before[-1:] == " " and not before[-2:-1].isspace()
    return left_ok and after[:1] == " " and not after[1:2].isspace()


def validate_lyrics(
    lyric: str, max_tokens: int = 300, count_tokens: Callable[[str], int] | None = None
) -> list[LyricError]:
    """Every problem of `lyric`, errors and warnings (see `.severity`), one per problem; [] when clean.

    `count_tokens` replaces the conservative `estimate_tokens` with a real tokenizer.
    """
    if not lyric.strip():
        return [LyricError("empty", "lyric is empty", None)]
    problems = []
    mapped = lyric if lyric.isascii() else lyric.translate(FULLWIDTH_TO_ASCII)
    if mapped != lyric:
        marks = "".join(dict.fromkeys(c for c in lyric if c in _FULLWIDTH_KEYS))
        ascii_marks = " ".join(repr(c.translate(FULLWIDTH_TO_ASCII)) for c in marks)
        msg = f"full-width characters {' '.join(marks)}: LeVo maps them to ASCII ({ascii_marks}); repaired"
        problems.append(LyricError("full_width_punctuation", msg, None))
    problems += _structure_problems(mapped)
    n = count_tokens(lyric) if count_tokens else estimate_tokens(mapped)
    if n > max_tokens:
        how = "tokens" if count_tokens else "tokens (conservative estimate)"
        msg = f"lyric is {n} {how}, over the limit of {max_tokens}: LeVo truncates the rest"
        problems.append(LyricError("too_long", msg, None))
    return problems


def lyric_errors(lyric: str, max_tokens: int = 300, count_tokens: Callable[[str], int] | None = None) -> list[LyricError]:
    """The problems that exclude `lyric` (errors); warnings left out, as `fix_style` repairs them."""
    return [p for p in validate_lyrics(lyric, max_tokens, count_tokens) if p.severity == "error"]


def _structure_problems(lyric: str) -> list[LyricError]:
    """Sections, tags, separators and punctuation of a lyric whose full-width marks are already mapped."""
    stripped = lyric.strip()
    pieces = stripped.split(";")
    sections = [_parse(piece) for piece in pieces]
    errors = []
    at = len(lyric) - len(lyric.lstrip())  # offset of the next ';' in `lyric`
    for k in range(len(pieces) - 1):
        at += len(pieces[k])
        # A ';' next to an empty piece is a stray one: the "empty" error below reports it.
        if pieces[k].strip() and pieces[k + 1].strip() and not _spaced(pieces[k], pieces[k + 1]):
            around = lyric[max(0, at - 8) : at + 9]
            msg = f'separator after {_name(k, *sections[k])} at offset {at} ("{around}") should be " ; "'
            errors.append(LyricError("separator", msg, k))
        at += 1
    has_cjk = _CJK_RE.search(stripped) is not None
    ascii_only = stripped.isascii()
    for i, (tag, text) in enumerate(sections):
        if not tag and not text:
            errors.append(LyricError("empty", f"section {i + 1} is empty (a stray ';')", i))
            continue
        if not tag:
            before = sections[i - 1][1][-12:] if i else ""
            hint = f"; is the ';' after \"...{before}\" meant as a sentence '.'?" if before else ""
            msg = f"{_name(i, tag, text)} has no structure tag{hint}"
            errors.append(LyricError("missing_tag", msg, i))
        elif tag not in _TAGS:
            near = difflib.get_close_matches(tag.strip().lower(), STRUCTURE_TAGS, n=1, cutoff=0.0)
            msg = f"{_name(i, tag, text)} has unknown tag [{tag}]; did you mean [{near[0]}]?"
            errors.append(LyricError("unknown_tag", msg, i))
        elif "[" in text and (inner := _TAG_RE.search(text)):
            msg = f'{_name(i, tag, text)} holds a second tag {inner[0]}: separate sections with " ; "'
            errors.append(LyricError("tag_inside_section", msg, i))
        elif tag not in VOCAL_TAGS:
            if text:
                msg = f"{_name(i, tag, text)}: [{tag}] is instrumental and must carry no lyrics"
                errors.append(LyricError("instrumental_with_lyrics", msg, i))
        elif not _HAS_WORD_RE.search(text):
            msg = f"{_name(i, tag, text)} is a vocal section without lyrics"
            errors.append(LyricError("vocal_without_lyrics", msg, i))
        elif has_cjk and section_language(text) == "zh":
            if text.endswith("."):
                msg = f'{_name(i, tag, text)} is Chinese and should not end with "." (ends "{text[-12:]}")'
                errors.append(LyricError("zh_section_must_not_end_with_period", msg, i))
        elif not text.endswith("."):
            msg = f'{_name(i, tag, text)} is English and should end with "." (ends "{text[-12:]}")'
            errors.append(LyricError("en_section_must_end_with_period", msg, i))
        if not ascii_only and (odd := _odd_chars(text)):
            msg = f"{_name(i, tag, text)} has non-ASCII punctuation {' '.join(odd)} that LeVo does not map: use ASCII marks"
            errors.append(LyricError("non_ascii_punctuation", msg, i))
    return errors


def fix_style(lyric: str) -> str:
    """`lyric` with every warning repaired: full-width marks mapped, ' ; ' separators, the closing
    '.' rule. Errors are left as they are (a tag is never guessed), so validate the result."""
    sections = []
    for piece in lyric.translate(FULLWIDTH_TO_ASCII).strip().split(";"):
        tag, text = _parse(piece)
        if tag in VOCAL_TAGS and _HAS_WORD_RE.search(text) and not _TAG_RE.search(text):
            if section_language(text) == "zh":
                text = text.rstrip(". ")
            elif not text.endswith("."):
                text += "."
        sections.append(" ".join(part for part in (f"[{tag}]" if tag else "", text) if part))
    return " ; ".join(sections)


# --- full-width marks LeVo maps to ASCII --------------------------------------------

FULLWIDTH_TO_ASCII = str.maketrans(
    {chr(c): chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)}
    | {"“": '"', "”": '"', "‘": "'", "’": "'", "、": ",", "【": "[", "】": "]", "\u3000": " ", "…": "..."}
    | {"。": "."}  # the range above already covers ，！？；：（）
)
_FULLWIDTH_KEYS = frozenset(map(chr, FULLWIDTH_TO_ASCII))
_DOT_RE = re.compile(r"\s*\.\s*")


# --- other views of a lyric ------------------------------------------------------------

_PUNCT_RE = re.compile(r"[\W_]+")
_CJK_GAP_RE = re.compile(f" (?=[{_CJK}])|(?<=[{_CJK}]) ")
# ASCII fast path of normalize_for_dedup: lowercase letters, keep digits, blank the rest.
_DEDUP_BYTES = bytes(c | 32 if c < 128 and chr(c).isalnum() else 32 for c in range(256))


def normalize_for_dedup(lyric: str) -> str:
    """Words only: lyrics that differ in tags, case, punctuation or spacing compare equal.

    Apostrophes vanish ("don't" == "dont"), other punctuation becomes a space, and spaces
    next to CJK are dropped since Chinese spacing carries no meaning.
    """
    text = _TAG_RE.sub(" ", lyric)
    if text.isascii():
        return " ".join(text.encode().translate(_DEDUP_BYTES, b"'").decode().split())
    text = text.lower().replace("'", "").replace("\u2019", "")
    return _CJK_GAP_RE.sub("", _PUNCT_RE.sub(" ", text).strip())


def to_yue(lyric: str) -> str:
    """YuE layout: `[tag]` line, one sentence a line (no '.'), blank line between sections.

    `pipeline.lyrics.repair.repair_lyrics` turns it back into the same LeVo lyric.
    """
    blocks = []
    for s in split_sections(lyric):
        sentences = [x for x in _DOT_RE.split(s.text) if x]
        blocks.append("\n".join([f"[{s.tag}]", *sentences]))
    return "\n\n".join(blocks)
