"""Bounds every input meets before any work is done with it: identifiers, ranks, times, JSON
nesting, and the size of an error report.

Both databases must be able to store and read back whatever passes here: PostgreSQL refuses a
NUL byte in text and cannot hand back a time before year 1 once it is shifted to UTC, so such
values are refused at the door (4xx naming the field) rather than failing in the database (5xx).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated

import numpy as np
from pydantic import StringConstraints

MAX_ID_LENGTH = 200
ID_CHARACTERS = "letters, digits and _ . : @ + = - /"
ID_PATTERN = rf"^[A-Za-z0-9_.:@+=/-]{{1,{MAX_ID_LENGTH}}}$"
_ID = re.compile(ID_PATTERN)
MAX_ROW_ID = 2**31 - 1  # the databases' INTEGER
MAX_CANDIDATES = 20  # per ranking; campaigns have k <= 20
MAX_JSON_DEPTH = 16  # the deepest accepted export (Label Studio, wrapped in {"tasks": ...}) nests 10 levels
MAX_PROBLEMS = 50  # listed in an error report; the rest are counted
MAX_SHOWN = 80  # characters of a bad value quoted back in a reason
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc)

# For pydantic bodies and FastAPI path/query parameters.
Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


def shown(value) -> str:
    """`repr(value)`, cut to MAX_SHOWN characters: a reason quotes the bad value, never megabytes of it."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def id_problem(value, field: str) -> str | None:
    """Why `value` is not a usable identifier (None when it is)."""
    if not isinstance(value, str) or not _ID.match(value):
        return f"{field} {shown(value)} must be 1-{MAX_ID_LENGTH} {ID_CHARACTERS}"
    return None


def time_problem(moment: datetime, field: str) -> str | None:
    """Why an (aware) time is out of the range the service stores (None when it is fine)."""
    if not EARLIEST <= moment < LATEST:
        return f"{field} {moment.isoformat()} is outside {EARLIEST.year}-{LATEST.year - 1}"
    return None


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN, _CLOSE = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)


def json_depth(data: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets inside strings do not count).

    Linear and without recursion, so it is safe on the texts `json.loads` would overflow on."""
    brackets = np.frombuffer(_STRING.sub(b"", data), np.uint8)
    steps = np.isin(brackets, _OPEN).astype(np.int32) - np.isin(brackets, _CLOSE).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def depth_problem(data: bytes, what: str) -> str | None:
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        return f"{what} nests {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted"
    return None


def capped(problems: list) -> tuple[list, int]:
    """An error report's problems: the first MAX_PROBLEMS, and how many more were left out."""
    return problems[:MAX_PROBLEMS], max(0, len(problems) - MAX_PROBLEMS)
