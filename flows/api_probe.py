"""Whether a Prefect API (a running server) may be configured, answered without importing Prefect.

Importing Prefect costs one to several seconds, and a rerun of a finished round without a server
needs none of it. Prefect reads `PREFECT_API_URL` from the environment, the active profile
(`profiles.toml` under `PREFECT_HOME`, or `PREFECT_PROFILES_PATH`), and `.env`, `prefect.toml` and
`pyproject.toml` in the working folder. `may_have_api_url` answers True when any of those could
set it; only a False is certain, and a True is settled by Prefect's own settings.
"""

from __future__ import annotations

import os
from pathlib import Path

_API_KEYS = ("prefect_api_url", "api_url", "[api]", "api.url", "[tool.prefect")


def may_have_api_url(cwd: Path | None = None) -> bool:
    if os.environ.get("PREFECT_API_URL"):
        return True
    cwd = cwd or Path.cwd()
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    sources = [Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser(),
               cwd / ".env", cwd / "prefect.toml", cwd / "pyproject.toml"]  # fmt: skip
    return any(_mentions_api(path) for path in sources)


def _mentions_api(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").lower()
    except OSError:
        return False
    return any(key in text for key in _API_KEYS)
