"""The preference registry: entry-point group `songpref.preferences`, one module per preference.

songpref registers lyrics, prompt and musicality (pyproject.toml); a package of your own adds
one with a single entry point, e.g. `harmony = "mypkg.harmony:HARMONY"` (a `Preference`).
`joint` is not a preference but the union of all of them, trained as one more DPO run.
"""

from __future__ import annotations

from pipeline.preferences.base import Preference
from pipeline.registry import PluginError, registered

GROUP = "songpref.preferences"
JOINT = "joint"


def preferences() -> dict[str, Preference]:
    """Every registered preference by name, in registry order."""
    found = registered(GROUP, Preference)
    if JOINT in found:
        raise PluginError(f"{GROUP}: {JOINT!r} is the union of the preferences, not a preference")
    return found  # type: ignore[return-value]


def get_preference(name: str) -> Preference:
    try:
        return preferences()[name]
    except KeyError:
        raise ValueError(f"unknown preference {name!r}; known: {', '.join(preferences())}") from None


def score_tables() -> list[str]:
    """The score tables (scores/<table>) the preferences read, each once, in registry order."""
    return list(dict.fromkeys(p.table for p in preferences().values()))


def strategy_names() -> list[str]:
    """What pairs, DPO and the CLI offer: every preference, then joint."""
    return [*preferences(), JOINT]


__all__ = ["JOINT", "Preference", "get_preference", "preferences", "score_tables", "strategy_names"]
