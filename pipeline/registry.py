"""Plugins by entry-point group: preferences, scorer kinds and config sections register the same way.

A group maps names to objects (`songpref.preferences`: `lyrics = "pipeline.preferences.lyrics:LYRICS"`).
songpref's own plugins are declared in its pyproject.toml; another package, or a test that puts a
`*.dist-info/entry_points.txt` on `sys.path`, adds its own without touching songpref. Lookups are
cached per `sys.path`, so a path added at run time is seen on the next lookup.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from importlib.metadata import entry_points


class PluginError(ValueError):
    """A plugin that cannot be loaded, or two plugins under one name."""


def registered_names(group: str) -> list[str]:
    """The names in `group`, sorted, without importing any plugin (for help texts)."""
    return sorted({point.name for point in entry_points(group=group)})


def registered(group: str, expected: type | None = None) -> dict[str, object]:
    """Every object of `group` by name, in declared order (`order` attribute, then name); with
    `expected`, each must be an instance of it whose `name` is its entry point's name."""
    found = _load(group, tuple(sys.path))
    for name, obj in found.items():
        if expected is not None and (not isinstance(obj, expected) or getattr(obj, "name", None) != name):
            raise PluginError(f"{group}: entry point {name!r} must be a {expected.__name__} named {name!r}")
    return found


@lru_cache(maxsize=32)
def _load(group: str, _path: tuple[str, ...]) -> dict[str, object]:
    found: dict[str, object] = {}
    for point in entry_points(group=group):
        try:
            obj = point.load()
        except Exception as exc:  # a broken plugin names itself rather than failing somewhere later
            raise PluginError(f"{group}: entry point {point.name!r} ({point.value}) does not load: "
                              f"{type(exc).__name__}: {exc}") from exc  # fmt: skip
        if point.name in found and found[point.name] is not obj:
            raise PluginError(f"{group}: two plugins are named {point.name!r}")
        found[point.name] = obj
    return dict(sorted(found.items(), key=lambda item: (getattr(item[1], "order", 1000), item[0])))
