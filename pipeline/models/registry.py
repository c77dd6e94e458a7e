"""SongModel plugins by name: the Python entry-point group `songpref.models`.

A plugin is a class with a `name`, an `options_class` (a pydantic model of its options) and a
constructor taking those options; songpref's own `tiny` and `levo` register the same way.
"""

from __future__ import annotations

from pydantic import ValidationError

from pipeline.models.base import SongModel
from pipeline.registry import registered, registered_names

GROUP = "songpref.models"


class ModelPluginError(ValueError):
    pass


def available_models() -> list[str]:
    return registered_names(GROUP)


def song_model_class(name: str) -> type[SongModel]:
    """The plugin class called `name`; LookupError when none is installed under that name."""
    plugins = registered(GROUP)
    if name not in plugins:
        raise LookupError(name)
    return plugins[name]


def load_song_model(name: str, options: dict) -> SongModel:
    """The plugin `name` built from `options` (the config's model.options); errors name the key."""
    try:
        cls = song_model_class(name)
    except LookupError:
        raise ModelPluginError(f"model.backend: no song model {name!r}; installed: {', '.join(available_models()) or 'none'}") from None
    try:
        parsed = cls.options_class.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(f"model.options.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ModelPluginError(f"model {name!r}: {problems}") from None
    return cls(parsed)
