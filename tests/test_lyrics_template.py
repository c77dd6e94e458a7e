"""The template lyrics backend: deterministic, valid LeVo lyrics whose words match the emotion."""

from __future__ import annotations

import random
import re
import shutil

import pytest
import yaml
from pydantic import ValidationError

from pipeline.lyrics.base import LyricRequest
from pipeline.lyrics.format import VOCAL_TAGS, estimate_tokens, normalize_for_dedup, split_sections, validate_lyrics
from pipeline.lyrics.template import SHIPPED_DIR, THEMES, TemplateGenerator, TemplateOptions, mood_family

# The emotion tags of the shipped vocabulary: every one must reach a real mood family.
COMMON_EMOTIONS = """energetic melancholic nostalgic uplifting romantic reflective passionate hopeful
introspective confident longing anthemic sentimental dramatic upbeat aggressive playful bittersweet
heartbreak dreamy epic chill dark defiant joyful gritty heartfelt sad intense somber driving festive
spiritual groovy rebellious danceable empowering happy calm peaceful tender haunting lonely
triumphant mellow""".split()


@pytest.fixture(scope="module")
def gen() -> TemplateGenerator:
    return TemplateGenerator(TemplateOptions())


def request(seed: int, emotion: str = "nostalgic", theme: str | None = None, language: str = "en") -> LyricRequest:
    theme = THEMES[mood_family(emotion)][seed % 5] if theme is None else theme
    return LyricRequest(f"lyr-{seed}", seed, language, emotion, theme)


def write(gen: TemplateGenerator, *requests: LyricRequest) -> list[str]:
    answers = gen.generate(list(requests))
    assert [a.lyric_id for a in answers] == [r.lyric_id for r in requests]
    assert all(a.error is None for a in answers), [a.error for a in answers]
    return [a.text for a in answers]


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"\.\s*", text) if s]


def test_same_seed_same_text_whatever_the_global_random_state(gen):
    random.seed(1)
    first = write(gen, request(42))[0]
    random.seed(2)
    assert write(TemplateGenerator(TemplateOptions()), request(42))[0] == first
    assert write(gen, request(43))[0] != first


def test_500_lyrics_across_emotions_are_valid_with_realistic_structure(gen):
    emotions = COMMON_EMOTIONS + ["", "Laid-Back", "sad, slow", "no such mood"]
    texts = write(gen, *(request(seed, emotions[seed % len(emotions)]) for seed in range(500)))
    for text in texts:
        assert validate_lyrics(text, max_tokens=300) == [], text
        sections = split_sections(text)
        assert 7 <= len(sections) <= 9, text
        vocal = [s for s in sections if s.tag in VOCAL_TAGS]
        assert all(4 <= len(sentences(s.text)) <= 7 for s in vocal), text
        assert all(len(s.split()) <= 12 for v in vocal for s in sentences(v.text)), text
        assert all(s[0].isupper() for v in vocal for s in sentences(v.text)), text
        assert text.isascii()
        verses = [s.text for s in sections if s.tag == "verse"]
        assert len(set(verses)) == len(verses), "verses must differ"
        choruses = [sentences(s.text) for s in sections if s.tag == "chorus"]
        assert len(choruses) >= 2 and all(c == choruses[0] for c in choruses[:-1]), "the chorus repeats"
        assert choruses[-1][:-1] == choruses[0][:-1], "the last chorus varies at most its last line"
        others = set(verses) | {s.text for s in sections if s.tag == "chorus"}
        assert not {s.text for s in sections if s.tag == "bridge"} & others, "the bridge is its own"


def test_theme_is_sung_in_every_chorus(gen):
    for seed, theme in enumerate(["a night drive home", "Café nights in Zürich!", "letters; [never] sent."]):
        text = write(gen, request(seed, "romantic", theme))[0]
        clean = {0: "a night drive home", 1: "Cafe nights in Zurich", 2: "letters never sent"}[seed]
        choruses = [s.text for s in split_sections(text) if s.tag == "chorus"]
        assert choruses and all(clean in c for c in choruses), text
        assert validate_lyrics(text) == []


def test_an_empty_theme_takes_one_of_the_familys_themes(gen):
    text = write(gen, request(7, "sad", theme="  !! "))[0]
    chorus = next(s.text for s in split_sections(text) if s.tag == "chorus")
    assert any(theme in chorus for theme in THEMES["melancholic"])


def test_emotions_map_to_mood_families():
    assert mood_family("sad") == mood_family("Heartbreak") == mood_family("lonely") == "melancholic"
    assert mood_family("happy") == mood_family("uplifting") == "joyful"
    assert mood_family("sad, slow") == "melancholic"
    assert mood_family("") == mood_family("zzz") == "neutral"
    assert {e: mood_family(e) for e in COMMON_EMOTIONS if mood_family(e) == "neutral"} == {}
    assert len({mood_family(e) for e in COMMON_EMOTIONS}) >= 8
    assert set(THEMES) >= {mood_family(e) for e in COMMON_EMOTIONS} | {"neutral"}
    assert all(len(themes) >= 10 for themes in THEMES.values())


def _words(value) -> set[str]:
    if isinstance(value, str):
        return set(re.findall(r"[a-z']+", value.lower()))
    items = value.values() if isinstance(value, dict) else value
    return set().union(*map(_words, items)) if items else set()


def exclusive_words() -> dict[str, set[str]]:
    """Marker words: those in one family's bank (themes aside) and in no other bank or template."""
    banks = {p.stem: yaml.safe_load(p.read_text()) for p in SHIPPED_DIR.glob("*.yaml") if p.stem != "emotions"}
    for bank in banks.values():
        bank.pop("themes", None)
    words = {name: _words(bank) for name, bank in banks.items()}
    families = set(banks) - {"templates", "common"}
    return {f: words[f] - set().union(*(w for name, w in words.items() if name != f)) for f in families}


FAMILY_PAIRS = [("sad", "melancholic", "joyful"), ("happy", "joyful", "melancholic"),
                ("danceable", "energetic", "calm"), ("peaceful", "calm", "defiant")]  # fmt: skip


@pytest.mark.parametrize("emotion, own, other", FAMILY_PAIRS)
def test_lyrics_use_their_familys_words_only(gen, emotion, own, other):
    markers = exclusive_words()
    assert len(markers[own]) >= 40 and len(markers[other]) >= 40
    for text in write(gen, *(request(seed, emotion) for seed in range(60))):
        sung = _words(text)
        assert len(sung & markers[own]) >= 3, text
        assert not sung & markers[other], (sung & markers[other], text)


def test_other_languages_get_an_error_not_a_lyric(gen):
    answer = gen.generate([request(1, language="zh")])[0]
    assert answer.text == "" and answer.error == "template backend writes English only; got language 'zh'"


def test_2000_seeds_give_2000_distinct_lyrics(gen):
    texts = write(gen, *(request(seed, COMMON_EMOTIONS[seed % len(COMMON_EMOTIONS)]) for seed in range(2000)))
    assert len({normalize_for_dedup(t) for t in texts}) == 2000
    all_sentences = [s for t in texts for v in split_sections(t) if v.tag in VOCAL_TAGS for s in sentences(v.text)]
    assert len(set(all_sentences)) > 0.5 * len(all_sentences)


def test_token_limit_drops_sentences_deterministically():
    small = TemplateGenerator(TemplateOptions(), lyric_max_tokens=120)
    texts = write(small, *(request(seed, "epic") for seed in range(100)))
    assert texts == write(small, *(request(seed, "epic") for seed in range(100)))
    for text in texts:
        assert validate_lyrics(text, max_tokens=120) == [] and estimate_tokens(text) <= 120
        assert all(s.text for s in split_sections(text) if s.tag in VOCAL_TAGS)
    answer = TemplateGenerator(TemplateOptions(), lyric_max_tokens=10).generate([request(3)])[0]
    assert answer.text == "" and "max_tokens=10" in answer.error


def test_options_are_checked():
    assert TemplateOptions().model_dump() == {"backend": "template", "wordbank_dir": None, "min_sentences": 4,
                                              "max_sentences": 7, "max_sections": None}  # fmt: skip
    for bad in ({"min_sentences": 5, "max_sentences": 4}, {"min_sentences": 0}, {"max_sections": 0}, {"max_tokens": 300}, {"extra": 1}):
        with pytest.raises(ValidationError):
            TemplateOptions(**bad)
    short = TemplateGenerator(TemplateOptions(min_sentences=2, max_sentences=3))
    for text in write(short, *(request(seed) for seed in range(50))):
        assert all(2 <= len(sentences(s.text)) <= 3 for s in split_sections(text) if s.tag in VOCAL_TAGS)


@pytest.fixture
def banks(tmp_path):
    return shutil.copytree(SHIPPED_DIR, tmp_path / "banks")


def edit(path, **categories) -> None:
    """Rewrites one bank file with some categories replaced (None: removed)."""
    bank = yaml.safe_load(path.read_text()) | categories
    path.write_text(yaml.safe_dump({k: v for k, v in bank.items() if v is not None}))


def test_empty_category_names_file_and_category(banks):
    edit(banks / "joyful.yaml", verbs=[])
    with pytest.raises(ValueError, match=r"joyful\.yaml: category 'verbs' is missing or empty"):
        TemplateGenerator(TemplateOptions(wordbank_dir=banks))


def test_missing_category_and_missing_file_are_named(banks):
    edit(banks / "common.yaml", times=None)
    with pytest.raises(ValueError, match=r"common\.yaml: category 'times'"):
        TemplateGenerator(TemplateOptions(wordbank_dir=banks))
    shutil.copy(SHIPPED_DIR / "common.yaml", banks / "common.yaml")
    (banks / "dark.yaml").unlink()
    with pytest.raises(ValueError, match=r"dark\.yaml is missing \(categories: nouns, .*themes\)"):
        TemplateGenerator(TemplateOptions(wordbank_dir=banks))


def test_words_that_would_break_the_format_are_refused(banks):
    edit(banks / "calm.yaml", nouns=["cloud; [verse] rain"])
    with pytest.raises(ValueError, match=r"calm\.yaml: category 'nouns' has a bad entry"):
        TemplateGenerator(TemplateOptions(wordbank_dir=banks))
    shutil.copy(SHIPPED_DIR / "calm.yaml", banks / "calm.yaml")
    path = banks / "templates.yaml"
    path.write_text(path.read_text().replace("{feeling} in the", "{mood} in the"))
    with pytest.raises(ValueError, match=r"templates\.yaml: category 'verse'.*unknown slot \{mood\}"):
        TemplateGenerator(TemplateOptions(wordbank_dir=banks))
    path.write_text("verse: [unclosed")
    with pytest.raises(ValueError, match=r"templates\.yaml is not valid YAML"):
        TemplateGenerator(TemplateOptions(wordbank_dir=banks))


def test_describe_digests_the_banks(gen, banks):
    shipped = gen.describe()
    assert shipped["backend"] == "template" and re.fullmatch(r"[0-9a-f]{64}", shipped["wordbanks_digest"])
    assert shipped["options"] == TemplateOptions().model_dump(mode="json")
    copy = TemplateGenerator(TemplateOptions(wordbank_dir=banks))
    assert copy.describe()["wordbanks_digest"] == shipped["wordbanks_digest"]
    (banks / "calm.yaml").write_text((banks / "calm.yaml").read_text() + "\n# edited\n")
    edited = TemplateGenerator(TemplateOptions(wordbank_dir=banks)).describe()
    assert edited["wordbanks_digest"] != shipped["wordbanks_digest"]


def test_max_sections_keeps_the_form_start_with_a_sung_section():
    short = TemplateGenerator(TemplateOptions(min_sentences=1, max_sentences=2, max_sections=2))
    for text in write(short, *(request(seed) for seed in range(40))):
        sections = split_sections(text)
        assert 2 <= len(sections) <= 3 and any(s.tag in VOCAL_TAGS for s in sections)
        assert sections[-1].tag in VOCAL_TAGS  # extended only as far as the first sung section
        assert validate_lyrics(text) == []
