"""What the LLM backends share: the prompt, the answer -> lyric step and the retry loop.

Both the local transformers backend and the OpenAI-compatible one must ask the same
question and judge the answers by the same rules, so that switching backends changes the
writer, not the task. An LLM's answer is repaired and validated here (pipeline.lyrics.format);
an answer that is still not LeVo lyrics is asked again with a new sampling seed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from pipeline.digest import derive_seed, digest_json
from pipeline.lyrics.base import GeneratedLyric, LyricRequest
from pipeline.lyrics.format import fix_style, lyric_errors, validate_lyrics
from pipeline.lyrics.repair import repair_lyrics

PROMPTS_DIR = Path(__file__).with_name("prompts")
_ROLE_RE = re.compile(r"^--- (system|user) ---[ \t]*\n", re.M)
_MAX_REASONS = 3  # errors named in a reason; garbage answers can have dozens


class LyricsBackendError(RuntimeError):
    """A backend cannot work at all (endpoint unreachable, key refused); the message says where."""


def _template_path(language: str, template_dir: Path | None) -> Path:
    directory = Path(template_dir) if template_dir is not None else PROMPTS_DIR
    path = directory / f"lyrics_{language}.txt"
    if not path.is_file():
        known = sorted(p.stem.removeprefix("lyrics_") for p in directory.glob("lyrics_*.txt"))
        raise ValueError(f"no lyrics prompt for language {language!r} in {directory} (have: {', '.join(known) or 'none'})")
    return path


def render_prompt(request: LyricRequest, template_dir: Path | None = None) -> list[dict]:
    """Chat messages (system, user) asking for one LeVo lyric with the request's emotion and theme.

    A template is `--- system ---` text then `--- user ---` text, with `{emotion}` and
    `{theme}` slots; keeping the wording in files lets it change without touching code,
    and prompt_digest() records which wording wrote a round's lyrics.
    """
    path = _template_path(request.language, template_dir)
    parts = _ROLE_RE.split(path.read_text(encoding="utf-8"))
    # parts = [preamble, role, text, role, text]
    if len(parts) != 5 or parts[0].strip() or parts[1::2] != ["system", "user"]:
        raise ValueError(f"{path}: a prompt template is a '--- system ---' part then a '--- user ---' part")
    slots = {"emotion": request.emotion, "theme": request.theme}
    try:
        return [{"role": role, "content": text.strip().format(**slots)} for role, text in zip(parts[1::2], parts[2::2])]
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"{path}: bad slot {exc}; the slots are {{emotion}} and {{theme}}") from exc


def prompt_digest(template_dir: Path | None = None) -> str:
    """Digest of every prompt template: a wording change gives new lyrics, so it must change the key."""
    directory = Path(template_dir) if template_dir is not None else PROMPTS_DIR
    return digest_json({p.name: p.read_text(encoding="utf-8") for p in sorted(directory.glob("lyrics_*.txt"))})


def answer_to_lyric(answer: str, max_tokens: int = 300) -> tuple[str | None, str]:
    """(lyric, "") for an answer that is, or safely repairs into, LeVo lyrics; else (None, why).

    The reason names the validation errors of the answer as given, since those are what a
    person needs to see to improve the prompt or the model.
    """
    text = (answer or "").strip()
    errors = validate_lyrics(text, max_tokens=max_tokens)
    if not errors:
        return text, ""
    if not lyric_errors(text, max_tokens=max_tokens):  # warnings only: a style LeVo accepts, repaired
        return fix_style(text), ""
    repaired = repair_lyrics(text)
    if repaired is not None and not validate_lyrics(repaired, max_tokens=max_tokens):
        return repaired, ""
    named = [f"{e.code}: {e.message}" for e in errors[:_MAX_REASONS]]
    more = f" (+{len(errors) - _MAX_REASONS} more)" if len(errors) > _MAX_REASONS else ""
    return None, "; ".join(named) + more


def sampling_seed(seed: int, attempt: int) -> int:
    """The seed of one attempt: reproducible, new for every retry, and 31-bit so any server takes it."""
    return derive_seed("lyrics-llm", seed, attempt) % (2**31)


# Answers for the pending requests of one attempt, in order: the model's text, or a
# LyricsBackendError when the backend failed for that request (not worth another attempt).
AnswerFn = Callable[[list[LyricRequest], int], list["str | LyricsBackendError"]]


def generate_with_retries(
    requests: list[LyricRequest], answer: AnswerFn, max_attempts: int, max_tokens: int = 300
) -> list[GeneratedLyric]:
    """Ask until every request has a valid lyric or `max_attempts` answers, in request order.

    Only answers that are not lyrics are asked again (attempt numbers feed sampling_seed, so
    a retry samples differently); a backend failure is final, since its transport layer has
    already retried and asking again would only multiply the wait.
    """
    results: dict[int, GeneratedLyric] = {}
    reasons: dict[int, str] = {}
    pending = list(range(len(requests)))
    for attempt in range(1, max_attempts + 1):
        if not pending:
            break
        answers = answer([requests[i] for i in pending], attempt)
        still = []
        for i, got in zip(pending, answers, strict=True):
            lyric_id = requests[i].lyric_id
            if isinstance(got, LyricsBackendError):
                results[i] = GeneratedLyric(lyric_id, "", attempt, str(got))
                continue
            lyric, reasons[i] = answer_to_lyric(got, max_tokens)
            if lyric is None:
                still.append(i)
            else:
                results[i] = GeneratedLyric(lyric_id, lyric, attempt)
        pending = still
    for i in pending:
        error = f"not valid lyrics after {max_attempts} attempts: {reasons[i]}"
        results[i] = GeneratedLyric(requests[i].lyric_id, "", max_attempts, error)
    return [results[i] for i in range(len(requests))]
