"""Where a round's rankings come from (`reward_model.rankings`), and reading them.

- `simulated`: the embedded world's simulated crowd. It ranks songs by decoding the tiny model's
  token streams, so it serves only `model.backend: tiny`; any other model is refused with a
  reason naming the rankings sources it needs.
- an export file of the annotation service (`songpref annotate export`, or the admin route
  `GET /admin/campaigns/<name>/export`): Parquet or CSV in `RANKINGS_SCHEMA`, for any model;
- a campaign URL of a running service, `http(s)://HOST[:PORT]/admin/campaigns/<name>`: its
  export is fetched with the admin bearer token from $SONGPREF_ADMIN_TOKEN (the service's own).
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

SIMULATED = "simulated"
TOKEN_ENV = "SONGPREF_ADMIN_TOKEN"  # the variable the annotation service reads its admin token from
_CAMPAIGN_URL_RE = re.compile(r"^(https?://[^/\s]+(?:/[^\s]*?)?)/admin/campaigns/([^/\s?#]+)(?:/export)?/?$")
_FORMULA_ESCAPED = ("'=", "'+", "'-", "'@", "'\t", "'\r")  # the export's safe_cell adds the apostrophe
FILE_SUFFIXES = (".parquet", ".csv")


class RankingsSourceError(ValueError):
    """The rankings source cannot be used; the message names it and what is wrong."""


@dataclass(frozen=True)
class RankingsSource:
    kind: str  # simulated | file | campaign
    value: str
    export_url: str | None = None  # campaign: the export route


def parse_source(value: str) -> RankingsSource:
    """What `reward_model.rankings` names; RankingsSourceError for a URL that is not a campaign's."""
    text = str(value).strip()
    if text == SIMULATED:
        return RankingsSource("simulated", text)
    if text.startswith(("http://", "https://")):
        match = _CAMPAIGN_URL_RE.match(text)
        if not match:
            raise RankingsSourceError(f"reward_model.rankings: {text} is not a campaign URL of the annotation service "
                                      "(expected http(s)://HOST[:PORT]/admin/campaigns/NAME)")  # fmt: skip
        return RankingsSource("campaign", text, f"{match[1]}/admin/campaigns/{match[2]}/export?format=parquet")
    if not text.endswith(FILE_SUFFIXES):
        raise RankingsSourceError(f"reward_model.rankings: {text!r} is neither 'simulated', a campaign URL nor an export "
                                  f"file ({' or '.join(FILE_SUFFIXES)})")  # fmt: skip
    return RankingsSource("file", text)


def source_problem(rankings: str, backend: str) -> str | None:
    """Why `rankings` cannot serve a round of `backend`, or None."""
    try:
        source = parse_source(rankings)
    except RankingsSourceError as exc:
        return str(exc)
    if source.kind == "simulated" and backend != "tiny":
        return (f"reward_model.rankings: model.backend {backend!r} needs the rankings of a real campaign: the annotation "
                "service's export file (Parquet or CSV) or its campaign URL (http(s)://HOST/admin/campaigns/NAME); the "
                "simulated crowd, the embedded world's default, ranks only the tiny model's songs (it decodes their tokens)")  # fmt: skip
    return None


def read_rankings(source: RankingsSource, token_env: str = TOKEN_ENV, timeout_s: float = 60):
    """The rankings of a file or campaign source as a frame in RANKINGS_SCHEMA's columns."""
    if source.kind == "file":
        path = Path(source.value)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RankingsSourceError(f"reward_model.rankings: cannot read {path}: {exc.strerror or exc}") from None
        return _from_csv(data, str(path)) if path.suffix == ".csv" else rankings_from_parquet(data, str(path))
    if source.kind == "campaign":
        return rankings_from_parquet(fetch_export(source, token_env, timeout_s), source.value)
    raise RankingsSourceError(f"reward_model.rankings: {source.value!r} has no rankings to read")


def fetch_export(source: RankingsSource, token_env: str = TOKEN_ENV, timeout_s: float = 60) -> bytes:
    """The campaign's export (Parquet bytes), with the admin token of `$token_env`."""
    import httpx

    token = os.environ.get(token_env)
    if not token:
        raise RankingsSourceError(f"reward_model.rankings: {source.value} needs the service's admin token in ${token_env}, "
                                  "which is not set")  # fmt: skip
    try:
        response = httpx.get(source.export_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise RankingsSourceError(f"reward_model.rankings: {source.value} is unreachable: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        detail = response.text.strip()[:200]
        raise RankingsSourceError(f"reward_model.rankings: {source.export_url} answered {response.status_code}: {detail}")
    return response.content


def rankings_from_parquet(data: bytes, where: str):
    """An export's Parquet bytes as a frame; `where` names the source in errors."""
    import pandas as pd

    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise RankingsSourceError(f"reward_model.rankings: {where} is not a Parquet export: {exc}") from None
    frame["candidate_ids"] = frame["candidate_ids"].map(list) if "candidate_ids" in frame else None
    frame["ranks"] = frame["ranks"].map(lambda ranks: [int(r) for r in ranks]) if "ranks" in frame else None
    return frame


def _from_csv(data: bytes, where: str):
    """The service's CSV export: lists joined by ';', formula-like cells behind an apostrophe."""
    import pandas as pd

    try:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RankingsSourceError(f"reward_model.rankings: {where} is not a CSV export: {exc}") from None
    out = []
    for number, row in enumerate(rows, start=2):
        cells = {k: (v[1:] if v.startswith(_FORMULA_ESCAPED) else v) for k, v in row.items() if k is not None}
        try:
            out.append({
                **cells,
                "candidate_ids": cells["candidate_ids"].split(";") if cells["candidate_ids"] else [],
                "ranks": [int(r) for r in cells["ranks"].split(";")] if cells["ranks"] else [],
                **{k: cells.get(k, "").lower() == "true" for k in ("tied", "is_gold", "simulated", "excluded")},
                "gold_answer": cells.get("gold_answer") or None,
                "duration_s": float(cells["duration_s"]) if cells.get("duration_s") else float("nan"),
            })  # fmt: skip
        except (KeyError, ValueError) as exc:
            raise RankingsSourceError(f"reward_model.rankings: {where} line {number}: {type(exc).__name__}: {exc}") from None
    return pd.DataFrame(out)
