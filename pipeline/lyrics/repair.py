"""Repair of an LLM's answer into a LeVo lyric: code fences, preambles, `[Verse 1]`-style tags,
YuE / blank-line layout, full-width marks, separators and the closing '.' rule.

`pipeline.lyrics.format.fix_style` repairs only the warnings of an otherwise valid lyric; this
module also rebuilds the layout, and gives up (None) where a fix would need a guess.
"""

from __future__ import annotations

import re

from pipeline.lyrics.format import FULLWIDTH_TO_ASCII, VOCAL_TAGS, section_language, validate_lyrics

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
    text = _PREAMBLE_RE.sub("", text.translate(FULLWIDTH_TO_ASCII))
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
