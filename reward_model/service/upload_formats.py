"""Readers that turn each accepted file format into plain rows for `uploads.parse_rankings`.

Every reader returns `(rows, problems, skipped)`: rows are `(row_number, fields)` with the
common field names below, problems are `(row_number, reason)` for rows that could not even be
read, and skipped counts entries that are legitimately not rankings (a cancelled Label Studio
annotation, an Argilla draft). Row numbers are 1-based over data rows / annotations / responses.

Common fields: annotator_id, task_id, prompt_id, candidate_ids (list), ranks (list of int),
chosen_id, rejected_id, tied (bool or None = derive from ranks), started_at, submitted_at,
duration_s. The shapes each format accepts are documented in `uploads`.
"""

from __future__ import annotations

import csv
import io
import json

from reward_model.service.bounds import MAX_CANDIDATES, depth_problem, shown

CSV_COLUMNS = {"annotator_id", "task_id", "prompt_id", "candidate_ids", "ranks", "chosen_id", "rejected_id",
               "tied", "started_at", "submitted_at", "duration_s"}  # fmt: skip
TRUE, FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f", ""}


class FileUnreadable(ValueError):
    """The file as a whole cannot be read (encoding, syntax, header): no row numbers to give."""


def decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileUnreadable(f"not UTF-8 text: byte {data[exc.start:exc.start + 1]!r} at offset {exc.start} is invalid") from None
    return text.removeprefix("\ufeff")


def _bool(value, field: str):
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise ValueError(f"{field} must be true/false, got {value!r}")


def _list(value, field: str) -> list | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = [part.strip() for part in value.split(";")]
    if not isinstance(value, list):
        raise ValueError(f"{field} must be a list or a ';'-separated string, got {type(value).__name__}")
    if len(value) > MAX_CANDIDATES:
        raise ValueError(f"{field} has {len(value)} entries; a ranking has at most {MAX_CANDIDATES} candidates")
    return [scalar_text(v, field) for v in value]


def _ints(values: list | None, field: str) -> list | None:
    if values is None:
        return None
    out = []
    for value in values:  # ranks beyond the ranking's size are refused later; a number of 19+ digits is no rank at all
        if not (value.strip().lstrip("-").isdigit() and len(value.strip()) <= 18):
            raise ValueError(f"{field} must be integers from 1 to the number of candidates, got {shown(value)}")
        out.append(int(value))
    return out


def scalar_text(value, field: str) -> str | None:
    """A field that names something (an id, a time): a string or a number, never a list or object."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{field} must be a string, got {type(value).__name__}")
    return str(value).strip()


def normalise(raw: dict) -> dict:
    """Common field types from a CSV row or JSON object (raises ValueError naming the field)."""
    text = lambda name: scalar_text(raw.get(name), name)  # noqa: E731
    tied = raw.get("tied", raw.get("tie"))
    return {
        "annotator_id": text("annotator_id"),
        "task_id": text("task_id"),
        "prompt_id": text("prompt_id"),
        "candidate_ids": _list(raw.get("candidate_ids"), "candidate_ids"),
        "ranks": _ints(_list(raw.get("ranks"), "ranks"), "ranks"),
        "chosen_id": text("chosen_id"),
        "rejected_id": text("rejected_id"),
        "tied": False if tied is None else _bool(tied, "tied"),
        "started_at": text("started_at"),
        "submitted_at": text("submitted_at"),
        "duration_s": None if raw.get("duration_s") == "" else raw.get("duration_s"),
    }


def _collect(entries) -> tuple[list, list, int]:
    rows, problems = [], []
    for number, raw in entries:
        try:
            rows.append((number, normalise(raw)))
        except ValueError as exc:
            problems.append((number, str(exc)))
    return rows, problems, 0


def read_csv(data: bytes) -> tuple[list, list, int]:
    reader = csv.reader(io.StringIO(decode(data), newline=""), strict=True)
    try:
        records = list(reader)
    except csv.Error as exc:
        raise FileUnreadable(f"CSV is malformed or truncated near line {reader.line_num}: {exc}") from None
    if not records or not any(records[0]):
        raise FileUnreadable("CSV is empty: expected a header row")
    header = [name.strip() for name in records[0]]
    unknown = sorted(set(header) - CSV_COLUMNS - {"tie"})
    if unknown or len(set(header)) != len(header):
        raise FileUnreadable(f"CSV header has unknown or repeated columns {unknown or header}; allowed: {sorted(CSV_COLUMNS)}")
    entries, problems = [], []
    for number, record in enumerate(records[1:], start=1):
        if not any(cell.strip() for cell in record):
            continue  # blank line
        if len(record) != len(header):
            problems.append((number, f"has {len(record)} fields, the header has {len(header)} (truncated or misquoted row?)"))
            continue
        entries.append((number, dict(zip(header, record))))
    rows, more, _ = _collect(entries)
    return rows, problems + more, 0


def _load_json(data: bytes, key: str):
    if problem := depth_problem(data, "JSON"):
        raise FileUnreadable(problem)
    try:
        value = json.loads(decode(data))
    except json.JSONDecodeError as exc:
        raise FileUnreadable(f"JSON is malformed or truncated: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if isinstance(value, dict) and isinstance(value.get(key), list):
        value = value[key]
    if not isinstance(value, list):
        raise FileUnreadable(f"JSON must be a list of {key} (or an object with a '{key}' list), got {type(value).__name__}")
    return value


def read_json(data: bytes) -> tuple[list, list, int]:
    entries, problems = [], []
    for number, item in enumerate(_load_json(data, "rankings"), start=1):
        if not isinstance(item, dict):
            problems.append((number, f"must be an object, got {type(item).__name__}"))
        elif unknown := sorted(set(item) - CSV_COLUMNS - {"tie"}):
            problems.append((number, f"unknown fields {unknown}; allowed: {sorted(CSV_COLUMNS)}"))
        else:
            entries.append((number, item))
    rows, more, _ = _collect(entries)
    return rows, problems + more, 0
