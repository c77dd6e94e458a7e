"""LeVo lyric format: parse, validate, repair, normalise, convert.

LeVo's `gt_lyric` is `[tag] text ; [tag] text ; ...` (rules in its README and in
shared/reference/levo/SOURCE.md). LeVo does not reject a malformed lyric, it silently
sings something else, so every lyric is validated here before it reaches the model, and
each problem is reported precisely enough to fix it by hand.

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


@dataclass(frozen=True)
class LyricError:
    code: str
    message: str
    section: int | None  # 0-based section index, None for the whole lyric


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
    """Every rule violation of `lyric`, one error per problem; [] when LeVo can take it as is.

    `count_tokens` replaces the conservative `estimate_tokens` with a real tokenizer.
    """
    stripped = lyric.strip()
    if not stripped:
        return [LyricError("empty", "lyric is empty", None)]
    pieces = stripped.split(";")
    sections = [_parse(piece) for piece in pieces]
    errors = []
    at = len(lyric) - len(lyric.lstrip())  # offset of the next ';' in `lyric`
    for k in range(len(pieces) - 1):
        at += len(pieces[k])
        # A ';' next to an empty piece is a stray one: the "empty" error below reports it.
        if pieces[k].strip() and pieces[k + 1].strip() and not _spaced(pieces[k], pieces[k + 1]):
            around = lyric[max(0, at - 8) : at + 9]
            msg = f'separator after {_name(k, *sections[k])} at offset {at} ("{around}") must be " ; "'
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
            errors.append(LyricError("separator", msg, i))
        elif tag not in VOCAL_TAGS:
            if text:
                msg = f"{_name(i, tag, text)}: [{tag}] is instrumental and must carry no lyrics"
                errors.append(LyricError("instrumental_with_lyrics", msg, i))
        elif not _HAS_WORD_RE.search(text):
            msg = f"{_name(i, tag, text)} is a vocal section without lyrics"
            errors.append(LyricError("vocal_without_lyrics", msg, i))
        elif has_cjk and section_language(text) == "zh":
            if text.endswith("."):
                msg = f'{_name(i, tag, text)} is Chinese and must not end with "." (ends "{text[-12:]}")'
                errors.append(LyricError("zh_section_must_not_end_with_period", msg, i))
        elif not text.endswith("."):
            msg = f'{_name(i, tag, text)} is English and must end with "." (ends "{text[-12:]}")'
            errors.append(LyricError("en_section_must_end_with_period", msg, i))
        if not ascii_only and (odd := _odd_chars(text)):
            msg = f"{_name(i, tag, text)} has non-ASCII punctuation {' '.join(odd)}: use ASCII marks"
            errors.append(LyricError("non_ascii_punctuation", msg, i))
    n = count_tokens(lyric) if count_tokens else estimate_tokens(lyric)
    if n > max_tokens:
        how = "tokens" if count_tokens else "tokens (conservative estimate)"
        msg = f"lyric is {n} {how}, over the limit of {max_tokens}: LeVo truncates the rest"
        errors.append(LyricError("too_long", msg, None))
    return errors


# --- repair -------------------------------------------------------------------------

_FULLWIDTH = str.maketrans(
    {chr(c): chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)}
    | {"“": '"', "”": '"', "‘": "'", "’": "'", "、": ",", "【": "[", "】": "]", "\u3000": " ", "…": "..."}
    | {"。": "."}  # the range above already covers ，！？；：（）
)
_FENCED_RE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.S)  # the block, not the chat around it
_PREAMBLE_RE = re.compile(r"\A\s*(?:[^\n\[]*\b(?:here|lyrics?)\b[^\n\[]*:|lyrics?[ \t]*\n)", re.I)
_LINE_TAG_RE = re.compile(r"\[([^\[\]\n]+)\]")
_NUMBERED_RE = re.compile(r"([a-z]+(?:-[a-z]+)?)[\s_-]*\d+")
_ALIASES = {
    "intro": "intro-short", "outro": "outro-short", "inst": "inst-short", "instrumental": "inst-short"
}
_LINE_END_RE = re.compile(r"[\s,;:]+$")
_DOT_RE = re.compile(r"\s*\.\s*")
_SPACES_RE = re.compile(r"\s+")


def _fix_tag(tag: str) -> str:
    """`[Verse 1]` -> verse, `[Intro]` -> intro-short; unknown tags are left for validation to reject."""
    tag = _SPACES_RE.sub(" ", tag.strip().lower())
    if m := _NUMBERED_RE.fullmatch(tag):
        tag = m[1]
    return _ALIASES.get(tag, tag)


def _fix_body(tag: str, body: str) -> str:
    """Joins the section's lines into LeVo sentences, with the language's closing rule."""
    lines = [_LINE_END_RE.sub("", line) for line in body.strip().strip(";").splitlines()]
    lines = [_SPACES_RE.sub(" ", line.strip()) for line in lines if line.strip()]
    if tag not in VOCAL_TAGS or not lines:
        return " ".join(lines)
    if section_language(" ".join(lines)) == "zh":
        return _DOT_RE.sub(".", ".".join(line.rstrip(".") for line in lines)).strip(".")
    return " ".join(line if line.endswith(".") else line + "." for line in lines)


def repair_lyrics(text: str) -> str | None:
    """Meaning-preserving fixes for an LLM's answer; the LeVo lyric, or None when still invalid.

    Handles code fences, a "Here are the lyrics:" line, full-width punctuation, `[Verse 1]`-style
    tags, YuE / blank-line layout, separator spacing and the closing '.' rule. Anything that
    would need a guess (a stray ';', an unknown tag, no tags at all) is left to fail.
    """
    text = m[1] if (m := _FENCED_RE.search(text or "")) else text or ""
    text = _PREAMBLE_RE.sub("", text.translate(_FULLWIDTH))
    parts = _LINE_TAG_RE.split(text)  # [before, tag, body, tag, body, ...]
    if len(parts) < 3 or parts[0].strip(" \t\n;"):
        return None
    sections = []
    for raw_tag, body in zip(parts[1::2], parts[2::2]):
        tag = _fix_tag(raw_tag)
        body = _fix_body(tag, body)
        sections.append(f"[{tag}] {body}" if body else f"[{tag}]")
    lyric = " ; ".join(sections)
    return lyric if not validate_lyrics(lyric) else None


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

    `repair_lyrics` turns it back into the same LeVo lyric.
    """
    blocks = []
    for s in split_sections(lyric):
        sentences = [x for x in _DOT_RE.split(s.text) if x]
        blocks.append("\n".join([f"[{s.tag}]", *sentences]))
    return "\n\n".join(blocks)
