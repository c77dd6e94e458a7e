"""Lyrics: LeVo's format (format.py), the generator interface (base.py) and its backends."""

from __future__ import annotations

from functools import lru_cache

from pipeline.digest import canonical_json
from pipeline.lyrics.base import GeneratedLyric, LyricRequest, LyricsGenerator

__all__ = ["GeneratedLyric", "LyricRequest", "LyricsGenerator", "build_generator"]


def build_generator(options, lyric_max_tokens: int = 300) -> LyricsGenerator:
    """The backend named by `options.backend`, built once per process for the same settings."""
    return _cached_generator(type(options), canonical_json(options.model_dump(mode="json")), lyric_max_tokens)


@lru_cache(maxsize=4)
def _cached_generator(options_type, options_json: str, lyric_max_tokens: int) -> LyricsGenerator:
    options = options_type.model_validate_json(options_json)
    # Backends import their heavy dependencies (torch, transformers, httpx) only when chosen.
    if options.backend == "template":
        from pipeline.lyrics.template import TemplateGenerator as backend
    elif options.backend == "transformers":
        from pipeline.lyrics.transformers_backend import TransformersGenerator as backend
    elif options.backend == "openai":
        from pipeline.lyrics.openai_backend import OpenAIGenerator as backend
    else:
        raise ValueError(f"unknown lyrics backend {options.backend!r}")
    return backend(options, lyric_max_tokens=lyric_max_tokens)
