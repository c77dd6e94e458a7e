"""The SIMULATED crowd's rankings go through the annotation service like people's do.

`submit_simulated_rankings(round_dir, rankings)` takes `SimulatedCrowd.rank`'s rankings and:

1. opens the round's annotation database (default `sqlite:///<round>/rankings/annotations.db`,
   migrated to the newest revision) and creates, or reuses, the campaign `campaign_name` for the
   round, whose tasks are the crowd's own tasks (given, not drawn): task key
   `<campaign>:<crowd task_id>`, the prompt, the candidates shown (the set most of the task's rows
   rank, restricted to the round's rendered candidates of the prompt), the gold flag and answer.
   Tasks already stored are kept as they are; new task ids are added;
2. registers the crowd's annotators (its `annotator_id`s, e.g. `sim-000`) that are not there yet.
   The schema has no "simulated" mark on annotators: the campaign is the simulated crowd's, and
   every row this function returns says `simulated = True`;
3. writes the rankings as the service's CSV upload format (one row per ranking, frame row n =
   CSV row n; the crowd's competition ranks with ties, e.g. 1, 1, 3, become the service's dense
   ranks 1, 1, 2: the same order and pairs) and stores it with `imports.store_upload`, the route's admin upload, under the
   same checks (`uploads.parse_rankings`). Steps 1-3 are one transaction: a refused file stores
   nothing, not even the campaign. The same rankings again are the "already imported" no-op (the
   same bytes); rankings that repeat stored judgements in a different file are refused, as for
   people. Rows whose gold flag or answer disagree with their task are refused in the same report;
4. exports the campaign's rankings with `export.rankings_table` (RANKINGS_SCHEMA, oldest first,
   `excluded` marking annotators failing gold) and returns them as a DataFrame, task ids without
   the campaign prefix and `simulated = True`: the caller trains on what went through the service.

Raises `UploadRejected` (its `problems` name each bad row), `CampaignError` (a campaign of that
name for another round, or a malformed campaign name).
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from numbers import Integral
from pathlib import Path

import pandas as pd
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from reward_model.service.campaigns import (
    CampaignError,
    GivenTask,
    add_annotators,
    add_given_tasks,
    create_campaign_from_tasks,
    valid_annotator_name,
)
from reward_model.service.db import Database, default_url
from reward_model.service.export import rankings_table
from reward_model.service.imports import campaign_view, store_upload
from reward_model.service.models import Annotator, Campaign, Candidate, Task
from reward_model.service.round_source import read_round_candidates
from reward_model.service.uploads import UploadRejected, parse_rankings

REQUIRED = ("annotator_id", "task_id", "prompt_id", "candidate_ids", "ranks")
UPLOAD_COLUMNS = ["annotator_id", "task_id", "prompt_id", "candidate_ids", "ranks", "tied", "duration_s"]


def submit_simulated_rankings(round_dir: str | Path, rankings: pd.DataFrame, db_url: str | None = None,
                              campaign_name: str = "simulated-crowd") -> pd.DataFrame:  # fmt: skip
    """Store the simulated crowd's `rankings` through the service's upload path and return the
    campaign's rankings as exported (RANKINGS_SCHEMA columns); see the module doc."""
    missing = [c for c in REQUIRED if c not in rankings.columns]
    if missing:
        raise UploadRejected(f"simulated rankings refused: columns {missing} are missing; nothing was stored")
    rows = [_plain_row(r) for r in rankings.to_dict("records")]
    prefix = f"{campaign_name}:"
    data = _upload_csv(rows, prefix)
    db = Database(db_url or default_url(round_dir))
    try:
        try:
            with db.write() as session:
                campaign = _campaign(session, campaign_name, round_dir, rows, prefix)
                gold_problems = _gold_problems(session, campaign, rows, prefix)
                if gold_problems:
                    _refuse(session, campaign, data, gold_problems)
                store_upload(session, campaign_name, data, "csv", uploader=None)
        except IntegrityError:
            raise UploadRejected("the simulated rankings conflict with rankings stored at the same moment; nothing was stored, retry", status=409) from None
        with db.read() as session:
            table = rankings_table(session, session.scalar(select(Campaign).where(Campaign.name == campaign_name)))
    finally:
        db.dispose()
    out = pd.DataFrame(table.to_pylist(), columns=table.column_names)
    out["task_id"] = out["task_id"].map(lambda t: t[len(prefix):] if isinstance(t, str) and t.startswith(prefix) else t)
    out["simulated"] = True
    return out


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT


def _plain_row(row: dict) -> dict:
    """A frame row with plain Python values (lists for list cells, None for missing cells)."""
    out = {}
    for key, value in row.items():
        if hasattr(value, "tolist"):  # numpy arrays and scalars
            value = value.tolist()
        out[key] = None if not isinstance(value, (list, tuple)) and _missing(value) else value
    return out


def _text(value) -> str:
    return "" if value is None else str(value)


def _joined(value) -> str:
    if isinstance(value, (list, tuple)):
        return ";".join(str(int(v)) if isinstance(v, Integral) and not isinstance(v, bool) else str(v) for v in value)
    return _text(value)


def _service_ranks(ranks):
    """The crowd ties like sports tables do (1, 1, 3: the next rank counts the tied ones); the
    service wants dense ranks (1, 1, 2). Competition ranks are re-encoded, which keeps every
    pair's order; anything else goes as it is, for the upload check to judge."""
    if not isinstance(ranks, (list, tuple)) or not ranks or not all(isinstance(r, Integral) and not isinstance(r, bool) for r in ranks):
        return ranks
    ranks = [int(r) for r in ranks]
    if any(r != 1 + sum(other < r for other in ranks) for r in ranks):
        return ranks  # not competition ranks (dense ones with ties, or malformed)
    dense = {r: i for i, r in enumerate(sorted(set(ranks)), start=1)}
    return [dense[r] for r in ranks]


def _tied(row: dict) -> str:
    tied = row.get("tied")
    if tied is None and isinstance(row.get("ranks"), (list, tuple)):  # not given: what the ranks say
        tied = len(set(row["ranks"])) < len(row["ranks"])
    return "" if tied is None else str(bool(tied)).lower()


def _upload_csv(rows: list[dict], prefix: str) -> bytes:
    """The service's CSV upload format, one ranking per line, in frame order (deterministic bytes)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(UPLOAD_COLUMNS)
    for r in rows:
        duration = r.get("duration_s")
        writer.writerow([
            _text(r["annotator_id"]),
            "" if r["task_id"] is None else prefix + str(r["task_id"]),
            _text(r["prompt_id"]),
            _joined(r["candidate_ids"]),
            _joined(_service_ranks(r["ranks"])),
            _tied(r),
            "" if duration is None else repr(float(duration)) if isinstance(duration, (int, float)) else str(duration),
        ])  # fmt: skip
    return out.getvalue().encode("utf-8")


def _gold(row: dict) -> str | None:
    """The row's gold answer, None when the row does not say its task is gold."""
    return None if not row.get("is_gold") or row.get("gold_answer") is None else str(row["gold_answer"])


def _given_tasks(rows: list[dict], prefix: str, known: dict[str, set], stored: set[str]) -> list[GivenTask]:
    """The frame's tasks not stored yet, in order of first appearance. A task shows the candidate
    set most of its rows rank and is gold with the answer most rows give; candidates that are not
    rendered candidates of the prompt are left out (rows naming them are then refused by the upload
    check), and a task left with fewer than 2 candidates is not created (its rows are refused)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["task_id"] is not None and isinstance(r["candidate_ids"], (list, tuple)):
            groups.setdefault(prefix + str(r["task_id"]), []).append(r)
    tasks = []
    for key, group in groups.items():
        if key in stored:
            continue
        prompt = Counter(_text(r["prompt_id"]) for r in group).most_common(1)[0][0]
        shown = Counter(tuple(sorted(map(str, r["candidate_ids"]))) for r in group).most_common(1)[0][0]
        ids = [c for c in shown if c in known.get(prompt, set())]
        answer = Counter(_gold(r) for r in group).most_common(1)[0][0]
        if len(ids) >= 2 and len(key) <= 200:
            tasks.append(GivenTask(key, prompt, ids, answer if answer in ids else None))
    return tasks


def _campaign(session, name: str, round_dir: str | Path, rows: list[dict], prefix: str) -> Campaign:
    """The round's campaign `name` (created if new) with the frame's tasks and annotators added."""
    campaign = session.scalar(select(Campaign).where(Campaign.name == name))
    if campaign is not None and Path(campaign.round_dir) != Path(round_dir).resolve():
        raise CampaignError(f"campaign {name!r} belongs to round {campaign.round_dir}, not {Path(round_dir).resolve()}")
    if campaign is None:
        known: dict[str, set] = {}
        for c in read_round_candidates(round_dir):
            known.setdefault(c.prompt_id, set()).add(c.candidate_id)
        tasks = _given_tasks(rows, prefix, known, set())
        per_task = Counter(prefix + str(r["task_id"]) for r in rows if r["task_id"] is not None)
        try:
            campaign = create_campaign_from_tasks(session, name, round_dir, tasks, overlap=max(list(per_task.values()) + [1]))
        except ValidationError as exc:
            raise CampaignError(f"campaign {name!r} not created: {exc.errors()[0]['msg']}") from None
    else:
        known = {}
        for prompt, candidate in session.execute(select(Candidate.prompt_id, Candidate.candidate_id).where(Candidate.campaign_id == campaign.id)):
            known.setdefault(prompt, set()).add(candidate)
        stored = set(session.scalars(select(Task.task_key).where(Task.campaign_id == campaign.id)))
        add_given_tasks(session, campaign, _given_tasks(rows, prefix, known, stored))
    taken = set(session.scalars(select(Annotator.name).where(Annotator.campaign_id == campaign.id)))
    names = dict.fromkeys(_text(r["annotator_id"]) for r in rows)
    new = [n for n in names if n not in taken and valid_annotator_name(n)]  # others: refused by the upload check
    if new:
        add_annotators(session, campaign, new)  # their tokens are never shown: nobody logs in as the crowd
    return campaign


def _gold_problems(session, campaign: Campaign, rows: list[dict], prefix: str) -> list[dict]:
    """Rows whose gold flag or answer is not their (stored) task's: the upload format cannot say it."""
    tasks = {t.task_key: t for t in session.scalars(select(Task).where(Task.campaign_id == campaign.id))}
    problems = []
    for number, r in enumerate(rows, start=1):
        task = tasks.get(prefix + str(r["task_id"])) if r["task_id"] is not None else None
        if task is None:
            continue  # unknown tasks are the upload check's to report
        said, stored = (bool(r.get("is_gold")), _gold(r)), (bool(task.is_gold), task.gold_answer)
        if said != stored:
            problems.append({"row": number, "reason": f"is_gold/gold_answer {said} disagree with task {task.task_key!r}'s {stored}"})
    return problems


def _refuse(session, campaign: Campaign, data: bytes, problems: list[dict]) -> None:
    """Raise one report: the gold problems and whatever the upload check finds besides."""
    try:
        parse_rankings(data, "csv", campaign_view(session, campaign))
    except UploadRejected as exc:
        problems = problems + exc.problems
    problems.sort(key=lambda p: p["row"])
    bad_rows = len({p["row"] for p in problems})
    raise UploadRejected(f"simulated rankings refused: {bad_rows} bad row(s); nothing was stored", problems)
