"""The embedded lyrics backend: offline, seeded English lyrics from our own word banks.

It needs no model or network, so every round (and every test) can run the whole pipeline.
Lyrics come from line templates (wordbanks/templates.yaml) whose slots are filled from one
mood family's bank (wordbanks/<family>.yaml plus common.yaml), the family picked from the
request's emotion (wordbanks/emotions.yaml), so a sad request never sings party words.
Each lyric depends on `request.seed` alone, through its own `random.Random`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.lyrics.base import GeneratedLyric, LyricRequest
from pipeline.lyrics.format import estimate_tokens

SHIPPED_DIR = Path(__file__).with_name("wordbanks")
NEUTRAL = "neutral"
# Family-file category -> template slot. "rhymes" (groups of end words) and "themes" are special.
_SLOTS = {"nouns": "noun", "feelings": "feeling", "adjectives": "adj", "verbs": "verb",
          "tverbs": "tverb", "places": "place", "times": "time"}  # fmt: skip
_FAMILY_CATEGORIES = (*_SLOTS, "rhymes", "themes")
_COMMON_CATEGORIES = ("nouns", "places", "times", "rhymes")
_TEMPLATE_KINDS = ("verse", "chorus", "hook", "bridge")
_SECTION_KINDS = frozenset({"intro", "verse", "chorus", "inst", "bridge", "outro"})
_LENGTHS = ("short", "medium", "medium", "long")  # medium instrumental parts are the most common
_WORD_RE = re.compile(r"[A-Za-z0-9' ,-]+")  # what a bank word may hold: nothing that breaks LeVo's format
_SLOT_RE = re.compile(r"\{([^{}]*)\}")
_TRIES = 20  # draws per sentence before the last draw is taken as is


def _third_person(verb: str) -> str:
    """'cry' -> 'cries', 'let go of' -> 'lets go of': banks hold base forms only."""
    first, sep, rest = verb.partition(" ")
    if first.endswith(("s", "sh", "ch", "x", "z", "o")):
        first += "es"
    elif first.endswith("y") and first[-2:-1] not in "aeiou":
        first = first[:-1] + "ies"
    else:
        first += "s"
    return first + sep + rest


def _with_article(phrase: str) -> str:
    vowel = phrase[0] in "aeiou" and not phrase.startswith(("uni", "use", "one", "eu"))
    return ("an " if vowel or phrase.startswith(("hour", "honest", "honor")) else "a ") + phrase


@dataclass(frozen=True)
class _Template:
    fmt: str  # with "{}" where the slots were
    slots: tuple[str, ...]


@dataclass(frozen=True)
class _Family:
    pools: dict[str, tuple[str, ...]]  # slot -> words
    rhymes: tuple[tuple[str, ...], ...]
    themes: tuple[str, ...]


class _Banks:
    """Every bank file of one directory, read and checked once, then compiled for fast draws."""

    def __init__(self, directory: Path) -> None:
        self._dir, self._digest = directory, hashlib.sha256()
        emotions = self._read("emotions.yaml", "mood family -> emotion tags")
        self.emotions: dict[str, str] = {}
        for family in emotions:
            for tag in self._words(emotions, "emotions.yaml", family):
                if self.emotions.setdefault(tag.lower(), family) != family:
                    raise ValueError(f"{directory / 'emotions.yaml'}: emotion {tag!r} is in two families")
        common = self._read("common.yaml", ", ".join(_COMMON_CATEGORIES))
        common = {c: self._words(common, "common.yaml", c) for c in _COMMON_CATEGORIES}
        self.families = {f: self._family(f, common) for f in sorted({*emotions, NEUTRAL})}
        templates = self._read("templates.yaml", ", ".join((*_TEMPLATE_KINDS, "forms")))
        slots = {*_SLOTS.values(), "verbs", "tverbs", "a_noun", "a_adj", "rhyme"}
        self.templates = {
            kind: tuple(self._compile(t, kind, slots | {"theme"} if kind == "hook" else slots)
                        for t in self._words(templates, "templates.yaml", kind))
            for kind in _TEMPLATE_KINDS
        }  # fmt: skip
        self.forms = tuple(tuple(f) for f in self._words(templates, "templates.yaml", "forms"))
        if bad := {k for form in self.forms for k in form} - _SECTION_KINDS:
            raise ValueError(f"{directory / 'templates.yaml'}: category 'forms' has unknown sections {sorted(bad)}")
        self.digest = self._digest.hexdigest()

    def family(self, emotion: str) -> str:
        """The family of the whole tag, else of its first word a family claims ("sad, slow"); else neutral."""
        for word in (emotion.strip().lower(), *re.findall(r"[a-z]+", emotion.lower())):
            if word in self.emotions:
                return self.emotions[word]
        return NEUTRAL

    def _read(self, name: str, categories: str) -> dict:
        path = self._dir / name
        if not path.is_file():
            raise ValueError(f"word bank {path} is missing (categories: {categories})")
        data = path.read_bytes()
        self._digest.update(name.encode() + b"\0" + data + b"\0")
        try:
            loaded = yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError as e:
            raise ValueError(f"word bank {path} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"word bank {path} must be a mapping of category -> list of words")
        return loaded

    def _words(self, data: dict, name: str, category: str) -> tuple:
        """A category's non-empty list; rhyme groups and forms are lists of lists."""
        items = data.get(category)
        if not items or not isinstance(items, list):
            raise ValueError(f"word bank {self._dir / name}: category '{category}' is missing or empty")
        out = []
        for item in items:
            words = item if isinstance(item, list) else [item]
            if not words or not all(isinstance(w, str) and _WORD_RE.fullmatch(_SLOT_RE.sub("x", w)) for w in words):
                raise ValueError(f"word bank {self._dir / name}: category '{category}' has a bad entry {item!r}")
            out.append(tuple(words) if isinstance(item, list) else item)
        return tuple(out)

    def _family(self, family: str, common: dict[str, tuple]) -> _Family:
        name = f"{family}.yaml"
        data = self._read(name, ", ".join(_FAMILY_CATEGORIES))
        bank = {c: self._words(data, name, c) for c in _FAMILY_CATEGORIES}
        pools = {slot: bank[c] + common.get(c, ()) for c, slot in _SLOTS.items()}
        # Derived once here, so templates can agree verbs and articles without any work per lyric.
        for base, derive in (("verb", _third_person), ("tverb", _third_person)):
            pools[base + "s"] = tuple(map(derive, pools[base]))
        for base in ("noun", "adj"):
            pools["a_" + base] = tuple(map(_with_article, pools[base]))
        return _Family(pools, bank["rhymes"] + common["rhymes"], bank["themes"])

    def _compile(self, template: str, kind: str, allowed: set[str]) -> _Template:
        slots = tuple(_SLOT_RE.findall(template))
        where = f"word bank {self._dir / 'templates.yaml'}: category '{kind}': {template!r}"
        if bad := [s for s in slots if s not in allowed]:
            raise ValueError(f"{where} has unknown slot {{{bad[0]}}}")
        if kind == "hook" and "theme" not in slots:
            raise ValueError(f"{where} lacks {{theme}}, so the chorus would not name the theme")
        return _Template(_SLOT_RE.sub("{}", template), slots)


_SHIPPED = _Banks(SHIPPED_DIR)
THEMES: dict[str, list[str]] = {family: list(f.themes) for family, f in _SHIPPED.families.items()}
"""Topics per mood family, for the lyrics stage to pick a theme that suits the emotion."""


def mood_family(emotion: str) -> str:
    """The shipped banks' mood family for an emotion tag ("sad" -> "melancholic"); "neutral" if unknown."""
    return _SHIPPED.family(emotion)


class TemplateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["template"] = Field("template", description="Selects this backend.")
    wordbank_dir: Path | None = Field(None, description="Folder of word-bank YAML files; None uses the shipped banks.")
    min_sentences: int = Field(4, ge=1, description="Fewest sentences per lyrical section (LeVo's test set: 4).")
    max_sentences: int = Field(7, ge=1, description="Most sentences per lyrical section (LeVo's test set: 7).")
    max_sections: int | None = Field(
        None, ge=1, description="Keep only the first K sections of a song form (short songs); None = whole form."
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> TemplateOptions:
        if self.min_sentences > self.max_sentences:
            raise ValueError(f"min_sentences ({self.min_sentences}) must be <= max_sentences ({self.max_sentences})")
        return self


class TemplateGenerator:
    """Writes one lyric per request from the word banks; see the module docstring."""

    name = "template"

    def __init__(self, options: TemplateOptions | None = None, lyric_max_tokens: int = 300) -> None:
        self.options = options or TemplateOptions()
        self.lyric_max_tokens = lyric_max_tokens  # the round's limit (lyrics.max_tokens); lines are dropped to fit
        wordbank_dir = self.options.wordbank_dir
        self._banks = _SHIPPED if wordbank_dir is None else _Banks(Path(wordbank_dir))

    def describe(self) -> dict:
        return {"backend": self.name, "wordbanks_digest": self._banks.digest,
                "options": self.options.model_dump(mode="json")}  # fmt: skip

    def generate(self, requests: list[LyricRequest]) -> list[GeneratedLyric]:
        return [self._write(r) for r in requests]

    def _write(self, request: LyricRequest) -> GeneratedLyric:
        if request.language != "en":
            error = f"template backend writes English only; got language {request.language!r}"
            return GeneratedLyric(request.lyric_id, "", error=error)
        rng = Random(request.seed)
        family = self._banks.families[self._banks.family(request.emotion)]
        theme = _clean_theme(request.theme) or rng.choice(family.themes)
        form = _first_sections(rng.choice(self._banks.forms), self.options.max_sections)
        song = _Song(rng, family, self._banks.templates, theme, form, self.options)
        text = song.render()
        while estimate_tokens(text) > self.lyric_max_tokens:
            if not song.drop_sentence():
                error = f"cannot fit a lyric under max_tokens={self.lyric_max_tokens}"
                return GeneratedLyric(request.lyric_id, "", error=error)
            text = song.render()
        return GeneratedLyric(request.lyric_id, text)


def _first_sections(form: tuple[str, ...], k: int | None) -> tuple[str, ...]:
    """The first k sections of a form, extended until it holds a sung one."""
    if k is None:
        return form
    while k < len(form) and not {"verse", "chorus", "bridge"}.intersection(form[:k]):
        k += 1
    return form[:k]


def _clean_theme(theme: str) -> str:
    """The caller's topic as bank-safe ASCII words, at most 8 of them, so it can be sung in a hook."""
    ascii_theme = unicodedata.normalize("NFKD", theme).encode("ascii", "ignore").decode()
    return " ".join(re.sub(r"[^A-Za-z0-9' -]+", " ", ascii_theme).split()[:8])


class _Song:
    """One lyric in the making: its sections, each verse, the chorus and the bridge a sentence block."""

    def __init__(
        self, rng: Random, family: _Family, templates: dict, theme: str, form: tuple[str, ...], options: TemplateOptions
    ) -> None:
        self.rng, self.family, self.templates, self.theme = rng, family, templates, theme
        self.used: set[str] = set()  # no sentence twice, so verses and bridge differ from the chorus
        self.rhymes: list[str] = []  # the current section's unused rhyme words
        self.seen: set[str] = set()  # the current section's templates and words, none used twice
        count = lambda: rng.randint(options.min_sentences, options.max_sentences)  # noqa: E731
        self.sections: list[tuple[str, list[str] | None]] = []
        chorus = bridge = None
        for kind in form:
            if kind in ("intro", "inst", "outro"):
                self.sections.append((f"{kind}-{rng.choice(_LENGTHS)}", None))
            elif kind == "chorus":  # one block, sung each time: the chorus repeats
                chorus = chorus or [self._sentence("hook")] + self._block("chorus", count() - 1)
                self.sections.append(("chorus", chorus))
            elif kind == "bridge":
                bridge = bridge or self._block("bridge", count())
                self.sections.append(("bridge", bridge))
            else:
                self.sections.append(("verse", self._block("verse", count())))
        # Half the songs end their last chorus on a second hook line, a small lift as real songs do.
        self.last_hook = self._sentence("hook") if rng.random() < 0.5 else None

    def render(self) -> str:
        last_chorus = max((i for i, (tag, _) in enumerate(self.sections) if tag == "chorus"), default=-1)
        parts = []
        for i, (tag, block) in enumerate(self.sections):
            if block is None:
                parts.append(f"[{tag}]")
                continue
            if i == last_chorus and self.last_hook and len(block) > 1:
                block = block[:-1] + [self.last_hook]
            parts.append(f"[{tag}] " + ". ".join(block) + ".")
        return " ; ".join(parts)

    def drop_sentence(self) -> bool:
        """Shortens the longest block (the repeated chorus first on ties) by its last line; False if none can."""
        blocks = {id(b): b for _, b in self.sections if b is not None and len(b) > 1}
        if not blocks:
            return False
        uses = {key: sum(b is blk for _, b in self.sections) for key, blk in blocks.items()}
        longest = max(blocks, key=lambda key: (len(blocks[key]), uses[key]))
        blocks[longest].pop()
        return True

    def _block(self, kind: str, n: int) -> list[str]:
        self.rhymes, self.seen = [], set()  # each section rhymes on its own group, with its own words
        return [self._sentence(kind) for _ in range(n)]

    def _sentence(self, kind: str) -> str:
        """A filled template of 4-9 words, new to this lyric, its template and words new to the section."""
        rng, pools = self.rng, self.family.pools
        for _ in range(_TRIES):
            template = rng.choice(self.templates[kind])
            if not self.rhymes:
                self.rhymes = list(rng.choice(self.family.rhymes))
                rng.shuffle(self.rhymes)
            values = [self.rhymes[-1] if s == "rhyme" else self.theme if s == "theme" else rng.choice(pools[s])
                      for s in template.slots]  # fmt: skip
            text = template.fmt.format(*values)
            words = text.count(" ") + text.count("-") + 1
            fresh = template.fmt not in self.seen and self.seen.isdisjoint(values) and len(set(values)) == len(values)
            if fresh and 4 <= words <= 9 and text not in self.used:
                break
        if "rhyme" in template.slots:
            self.rhymes.pop()
        self.used.add(text)
        self.seen.update(values, (template.fmt,))
        return text[0].upper() + text[1:]
