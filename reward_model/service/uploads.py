"""Uploaded ranking files: parsed and checked without the server, accepted whole or refused whole.

`parse_rankings(data, fmt, view)` is a pure function: bytes in, a `ParsedUpload` out, or
`UploadRejected` whose `problems` lists every bad row with its number and reason. Row numbers
are 1-based over data rows (CSV: the first line after the header is row 1), JSON objects, Label
Studio annotations or Argilla responses.

Accepted formats (`fmt`):

* ``csv`` — a header and one ranking per row. Columns: ``annotator_id``; ``task_id`` or
  ``prompt_id`` (or both, when they must agree); then either ``candidate_ids`` and ``ranks``
  (each ``;``-separated, e.g. ``c1;c2;c3`` and ``1;2;2``) or a pairwise choice ``chosen_id``,
  ``rejected_id``; optional ``tied`` (true/false; with a pairwise choice: no preference),
  ``started_at``, ``submitted_at`` (ISO 8601), ``duration_s``. Other columns are refused.
* ``json`` — a list of objects with the same fields (or ``{"rankings": [...]}``);
  ``candidate_ids``/``ranks`` may be lists.
* ``label-studio`` — a Label Studio JSON export: ``[{"id": 1, "data": {...}, "annotations":
  [{"completed_by": 3 | {"email": ...}, "result": [...], "lead_time": 8.1, "updated_at": ...,
  "was_cancelled": false}]}]``. ``data`` names ``task_id`` or ``prompt_id``. A Pairwise result
  ``{"type": "pairwise", "value": {"selected": "left" | "right"}}`` compares ``data.left_id`` and
  ``data.right_id`` (or ``data.left``/``data.right``); a Ranker result ``{"type": "ranker",
  "value": {"ranker": {"<bucket>": [ids...]}}}`` ranks the ids in order, buckets in order, the
  ``_`` (unsorted) bucket left out; every id of ``data.items`` (objects with ``id``) or
  ``data.candidate_ids`` must be ranked. The annotator is ``completed_by`` (its email, username
  or id), which must be an annotator name of the campaign. Cancelled annotations are skipped.
* ``argilla`` — Argilla records with a RankingQuestion (``[...]`` or ``{"records": [...]}``).
  v1: ``"responses": [{"user_id": ..., "status": "submitted", "values": {"<question>":
  {"value": [{"value": "<candidate_id>", "rank": 1}, ...]}}}]``; v2: ``"responses":
  {"<question>": [{"user_id": ..., "status": ..., "value": [...]}]}``. Equal ranks are ties; a
  plain list of ids is a strict order. The task is ``metadata``/``fields`` ``task_id`` or
  ``prompt_id``, else ``external_id`` as the task id. The annotator is the response's
  ``username`` or ``user_id``. Draft and discarded responses are skipped.

Rules for every row: the annotator is one of the campaign's (and, when an annotator uploads,
themselves); the task or prompt exists; every candidate belongs to that task (or prompt); ranks
run 1..m without gaps, tied candidates sharing a rank, equal ranks only with the tie flag; and
the same judgement (annotator, task or prompt, candidate set) appears once in the file and is
not already stored.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

from reward_model.service.bounds import capped, id_problem, shown, time_problem
from reward_model.service.checks import dedupe_key, in_ranked_order, ranking_problems
from reward_model.service.upload_external import read_argilla, read_label_studio
from reward_model.service.upload_formats import FileUnreadable, read_csv, read_json

NOT_YOURS = "not yours: "  # reasons that make the answer 403
READERS = {"csv": read_csv, "json": read_json, "label-studio": read_label_studio, "argilla": read_argilla}


@dataclass(frozen=True)
class TaskView:
    prompt_id: str
    candidate_ids: frozenset[str]


@dataclass(frozen=True)
class CampaignView:
    """What checking a file needs to know about a campaign (plain data, no database)."""

    name: str
    tasks: dict[str, TaskView]
    prompt_candidates: dict[str, frozenset[str]]
    annotators: frozenset[str]
    existing_keys: frozenset[str] = frozenset()
    uploader: str | None = None  # the annotator uploading; None for the admin
    assigned: frozenset[str] = frozenset()  # task ids handed to the uploader (an annotator ranks only those)


@dataclass(frozen=True)
class ParsedRow:
    row: int
    annotator_id: str
    task_id: str | None
    prompt_id: str
    candidate_ids: list[str]  # ranked order
    ranks: list[int]
    tied: bool
    started_at: datetime | None
    submitted_at: datetime | None
    duration_s: float | None
    dedupe_key: str


@dataclass
class ParsedUpload:
    sha256: str
    format: str
    rows: list[ParsedRow]
    skipped: int = 0


@dataclass
class UploadRejected(Exception):
    """The whole file is refused. `status` is 403 when it holds other annotators' rows, else 422."""

    message: str
    problems: list[dict] = field(default_factory=list)
    status: int = 422

    def __str__(self) -> str:
        return self.message

    def report(self) -> dict:
        """The message and the first problems (a file with 100,000 bad rows gets a short answer)."""
        listed, more = capped(self.problems)
        return {"message": self.message, "problems": listed, "more_problems": more}


def parse_rankings(data: bytes, fmt: str, view: CampaignView) -> ParsedUpload:
    """Every row of `data` (in format `fmt`) checked against `view`; see the module docstring."""
    if fmt not in READERS:
        raise UploadRejected(f"unknown format {fmt!r}; accepted: {sorted(READERS)}")
    try:
        raw_rows, unreadable, skipped = READERS[fmt](data)
    except FileUnreadable as exc:
        raise UploadRejected(f"{fmt} file refused: {exc}") from None
    except (TypeError, AttributeError, KeyError, IndexError) as exc:  # a shape no reader check foresaw: still the file's fault
        raise UploadRejected(f"{fmt} file refused: it does not have the structure of a {fmt} export ({type(exc).__name__}: {shown(str(exc))})") from None
    problems = [{"row": n, "reason": reason} for n, reason in unreadable]
    rows, seen, foreign = [], {}, False
    for number, fields in raw_rows:
        reasons, row = _check_row(number, fields, view)
        if row is not None and row.dedupe_key in seen:
            reasons.append(f"repeats the judgement of row {seen[row.dedupe_key]} (same annotator, task and candidates)")
        elif row is not None and row.dedupe_key in view.existing_keys:
            reasons.append("this judgement is already stored (earlier upload or the web page)")
        foreign |= any(reason.startswith(NOT_YOURS) for reason in reasons)
        if reasons:
            problems += [{"row": number, "reason": reason} for reason in reasons]
        elif row is not None:
            seen[row.dedupe_key] = number
            rows.append(row)
    if not problems and not rows:
        problems.append({"row": 0, "reason": "the file holds no rankings"})
    if problems:
        problems.sort(key=lambda p: p["row"])
        bad_rows = len({p["row"] for p in problems})
        raise UploadRejected(f"{fmt} file refused: {bad_rows} bad row(s); nothing was stored", problems, 403 if foreign else 422)
    return ParsedUpload(hashlib.sha256(data).hexdigest(), fmt, rows, skipped)


def _when(value, name: str, reasons: list[str]) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        problem = time_problem(moment, name)  # shifting to UTC can overflow (year 1 at +14:00)
    except (ValueError, OverflowError):
        reasons.append(f"{name} {shown(value)} is not an ISO 8601 time")
        return None
    if problem:
        reasons.append(problem)
        return None
    return moment


def _candidates(fields: dict, reasons: list[str]) -> tuple[list | None, list | None, bool | None]:
    ranked = fields.get("candidate_ids") is not None or fields.get("ranks") is not None
    pairwise = fields.get("chosen_id") is not None or fields.get("rejected_id") is not None
    if ranked == pairwise:
        reasons.append("give either candidate_ids with ranks, or chosen_id with rejected_id")
        return None, None, None
    if pairwise:
        if not fields.get("chosen_id") or not fields.get("rejected_id"):
            reasons.append("a pairwise row needs both chosen_id and rejected_id")
            return None, None, None
        tie = bool(fields.get("tied"))
        return [fields["chosen_id"], fields["rejected_id"]], [1, 1] if tie else [1, 2], tie
    if fields.get("candidate_ids") is None or fields.get("ranks") is None:
        reasons.append("candidate_ids and ranks must both be given")
        return None, None, None
    return [str(c) for c in fields["candidate_ids"]], list(fields["ranks"]), fields.get("tied")


def _check_row(number: int, fields: dict, view: CampaignView) -> tuple[list[str], ParsedRow | None]:
    reasons: list[str] = []
    annotator, task_id, prompt_id = (_id_field(fields, name, reasons) for name in ("annotator_id", "task_id", "prompt_id"))
    if not annotator:
        reasons += [] if fields.get("annotator_id") else ["annotator_id is missing"]
    elif annotator not in view.annotators:
        reasons.append(f"unknown annotator_id {annotator!r} in campaign {view.name!r}")
    elif view.uploader is not None and annotator != view.uploader:
        reasons.append(f"{NOT_YOURS}belongs to annotator {annotator!r}; you may upload only your own rows")
    allowed: frozenset[str] | None = None
    if task_id:
        task = view.tasks.get(task_id)
        if task is None:
            reasons.append(f"unknown task_id {task_id!r}")
        elif view.uploader is not None and task_id not in view.assigned:
            reasons.append(f"{NOT_YOURS}task {task_id!r} is not assigned to you; rank it when /api/next hands it to you")
        elif prompt_id and prompt_id != task.prompt_id:
            reasons.append(f"prompt_id {prompt_id!r} is not task {task_id!r}'s prompt {task.prompt_id!r}")
        else:
            prompt_id, allowed = task.prompt_id, task.candidate_ids
    elif prompt_id:
        allowed = view.prompt_candidates.get(prompt_id)
        if allowed is None:
            reasons.append(f"unknown prompt_id {prompt_id!r}")
    elif not (fields.get("task_id") or fields.get("prompt_id")):
        reasons.append("task_id or prompt_id is missing")
    ids, ranks, tied = _candidates(fields, reasons)
    if ids is not None and (bad := next(filter(None, (id_problem(c, "candidate id") for c in ids)), None)):
        reasons.append(bad)
    elif ids is not None:
        reasons += ranking_problems(ids, ranks, tied)
        unknown = [c for c in ids if allowed is not None and c not in allowed]
        if unknown:
            reasons.append(f"unknown candidate ids {unknown} for {'task ' + repr(task_id) if task_id else 'prompt ' + repr(prompt_id)}")
    started, submitted = _when(fields.get("started_at"), "started_at", reasons), _when(fields.get("submitted_at"), "submitted_at", reasons)
    duration = _duration(fields.get("duration_s"), started, submitted, reasons)
    if reasons or ids is None:
        return reasons, None
    ordered, ordered_ranks = in_ranked_order(ids, ranks)
    key = dedupe_key(annotator, task_id or f"prompt:{prompt_id}", ordered)
    row = ParsedRow(number, annotator, task_id, prompt_id, ordered, ordered_ranks, len(set(ranks)) < len(ranks),
                    started, submitted, duration, key)  # fmt: skip
    return reasons, row


def _id_field(fields: dict, name: str, reasons: list[str]) -> str | None:
    """An id field as text (tools export numeric ids), or None with a reason when it is no usable id."""
    value = fields.get(name)
    if value is None or value == "":
        return None
    value = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if problem := id_problem(value, name):
        reasons.append(problem)
        return None
    return value


def _duration(value, started, submitted, reasons: list[str]) -> float | None:
    if started and submitted and submitted < started:
        reasons.append("submitted_at is before started_at")
    if value in (None, ""):
        return (submitted - started).total_seconds() if started and submitted else None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        reasons.append(f"duration_s {shown(value)} is not a number")
        return None
    if not math.isfinite(seconds) or seconds < 0:
        reasons.append(f"duration_s {shown(value)} must be a finite number >= 0")
    return seconds
