"""Handing tasks to annotators and storing what they rank on the web page.

An annotator first finishes the task they hold (an assignment without a submission); then gets
the lowest-position task they have neither had nor ranked (an admin may have uploaded their
ranking of it) that still has a free slot (gold tasks always do).
A slot is claimed by one conditional UPDATE of the task's slot counter (`slots_taken < overlap`),
atomic in SQLite and PostgreSQL alike, so two servers racing for the last slot cannot both win;
the loser moves on to the next task. (task, slot) is also unique in the database.
On PostgreSQL a request first takes the lowest free task that no other request is claiming
(one row, FOR UPDATE SKIP LOCKED), so concurrent annotators spread over tasks instead of queueing
on one row; when every candidate is being claimed it falls back to reading them without locks
and claiming one, which waits for the other transaction and re-checks the counter. "No task"
is therefore said only when no free slot is left, or after 20 claims in a row were lost to
tasks filling up (skipping locked rows alone told annotators there was no work while tasks
still had room).
"""

from __future__ import annotations

import contextlib
import random

from sqlalchemy import bindparam, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reward_model.service.checks import dedupe_key, in_ranked_order, ranking_problems
from reward_model.service.models import Annotator, Assignment, Submission, Task, as_utc, utc_now


class SubmissionRejected(ValueError):
    """A web submission that cannot be stored; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


# Statements built once with bind parameters: they run on every request, and building a
# SQLAlchemy statement costs more than running it on SQLite.
_UNSUBMITTED = ~exists().where(Submission.task_id == Assignment.task_id, Submission.annotator_id == bindparam("annotator"))
_HELD = select(Task).join(Assignment, Assignment.task_id == Task.id).where(
    Assignment.annotator_id == bindparam("annotator"), _UNSUBMITTED).order_by(Task.position).limit(1)  # fmt: skip
_NOT_HAD = (
    ~exists().where(Assignment.task_id == Task.id, Assignment.annotator_id == bindparam("annotator")),
    ~exists().where(Submission.task_id == Task.id, Submission.annotator_id == bindparam("annotator")),
)  # tasks this annotator has neither been handed nor ranked (an admin may have uploaded their ranking)
_OPEN = (Task.campaign_id == bindparam("campaign"), Task.has_room)  # walked in position order on ix_task_hand_out
_FIRST_ELIGIBLE = select(Task).where(*_OPEN, *_NOT_HAD).order_by(Task.position).limit(4)
_FIRST_UNCLAIMED = _FIRST_ELIGIBLE.limit(1).with_for_update(skip_locked=True)
_HAD = select(Assignment.task_id).where(Assignment.annotator_id == bindparam("annotator")).union(
    select(Submission.task_id).where(Submission.annotator_id == bindparam("annotator"), Submission.task_id.is_not(None)))  # fmt: skip
_COUNTS = select(
    select(func.count()).where(Submission.annotator_id == bindparam("annotator"), Submission.task_id.is_not(None)).scalar_subquery(),
    select(func.count()).select_from(Task).where(*_OPEN).scalar_subquery(),
    select(func.count()).select_from(Task).where(*_OPEN, Task.id.in_(_HAD)).scalar_subquery(),
)  # done; open tasks; open tasks this annotator had (each a short index walk, not a scan of the campaign)
_CLAIM = (
    update(Task).where(Task.id == bindparam("task"), Task.is_gold | (Task.slots_taken < bindparam("overlap")))
    .values(slots_taken=Task.slots_taken + 1, has_room=Task.is_gold | (Task.slots_taken + 1 < bindparam("overlap")))
    .returning(Task.slots_taken)
    .execution_options(synchronize_session=False)
)  # fmt: skip  (SET reads the row's old values, in SQLite and PostgreSQL alike)


# The task (by key) with this annotator's assignment and, if any, their stored ranking of it.
_HELD_WITH_SUBMISSION = (
    select(Task, Assignment, Submission)
    .join(Assignment, Assignment.task_id == Task.id)
    .outerjoin(Submission, (Submission.campaign_id == Task.campaign_id) & (Submission.dedupe_key == bindparam("key")))
    .where(Task.task_key == bindparam("task_key"), Task.campaign_id == bindparam("campaign"), Assignment.annotator_id == bindparam("annotator"))
)


def _params(annotator: Annotator) -> dict:
    return {"annotator": annotator.id, "campaign": annotator.campaign_id, "overlap": annotator.campaign.overlap}


def _claim(session: Session, task: Task, annotator: Annotator) -> bool:
    """Take a slot of `task`: a conditional UPDATE (atomic in both databases), then the assignment."""
    slots = session.execute(_CLAIM, {"task": task.id, "overlap": annotator.campaign.overlap}).scalar()
    if slots is None:
        return False
    session.execute(insert(Assignment).values(task_id=task.id, annotator_id=annotator.id, slot=slots - 1, served_at=utc_now()))
    return True


def next_task(session: Session, annotator: Annotator, attempts: int = 5) -> Task | None:
    """The task this annotator should rank now, claiming a slot if needed; None when nothing is left."""
    held = session.scalars(_HELD, {"annotator": annotator.id}).first()
    if held is not None:
        return held
    # SQLite writes are serialised by the service, so only PostgreSQL can see this annotator
    # claim the same task twice at once (two tabs); a savepoint keeps that from failing the request.
    sqlite = session.get_bind().dialect.name == "sqlite"
    guard = contextlib.nullcontext if sqlite else session.begin_nested
    if not sqlite and (unclaimed := session.scalars(_FIRST_UNCLAIMED, _params(annotator)).first()) is not None:
        with contextlib.suppress(IntegrityError), guard():  # the row is locked by us: only this annotator's other tab can race
            if _claim(session, unclaimed, annotator):
                return unclaimed
    for _ in range(attempts):  # each round looks at a few tasks; lost races send us to the next ones
        found = session.scalars(_FIRST_ELIGIBLE, _params(annotator)).all()
        if not found:
            return None
        for task in found:
            try:
                with guard():
                    if _claim(session, task, annotator):
                        return task
            except IntegrityError:
                continue
    return None


def annotator_progress(session: Session, annotator: Annotator, holds_task: bool | None = None) -> dict:
    """done / total for the page: total = done + the task held + tasks still open to them."""
    done, open_tasks, had_open = session.execute(_COUNTS, _params(annotator)).one()
    open_tasks -= had_open
    if holds_task is None:
        holds_task = session.scalars(_HELD, {"annotator": annotator.id}).first() is not None
    return {"done": done, "total": done + int(holds_task) + open_tasks}


def display_order(task: Task, annotator: Annotator, seed: int) -> list[str]:
    """The task's candidates in a per-annotator seeded order, so no song always comes first."""
    ids = list(task.candidate_ids)
    random.Random(f"{seed}:{task.task_key}:{annotator.name}").shuffle(ids)
    return ids


def submit_ranking(session: Session, annotator: Annotator, task_key: str, candidate_ids: list, ranks: list,
                   tied: bool | None = None) -> Submission:  # fmt: skip
    """Store (or replace: an annotator may change their own ranking) a ranking of an assigned task."""
    campaign = annotator.campaign
    if campaign.status != "open" or campaign.is_expired():
        raise SubmissionRejected(f"campaign {campaign.name!r} is closed or expired", 410)
    key = dedupe_key(annotator.name, task_key, [str(c) for c in candidate_ids])
    held = session.execute(_HELD_WITH_SUBMISSION, {"task_key": task_key, "campaign": campaign.id, "annotator": annotator.id, "key": key}).first()
    if held is None:
        raise SubmissionRejected(f"task {task_key!r} is not assigned to you", 403)
    task, assignment, submission = held
    problems = ranking_problems(candidate_ids, ranks, tied)
    if not problems and sorted(candidate_ids) != sorted(task.candidate_ids):
        problems.append(f"candidate ids {sorted(candidate_ids)} are not the task's {sorted(task.candidate_ids)}")
    if problems:
        raise SubmissionRejected(f"ranking of task {task_key!r}: " + "; ".join(problems))
    ordered, ordered_ranks = in_ranked_order(list(candidate_ids), list(ranks))
    now = utc_now()
    if submission is None:
        submission = Submission(campaign_id=campaign.id, annotator_id=annotator.id, task_id=task.id, prompt_id=task.prompt_id,
                                source="web", dedupe_key=key, started_at=assignment.served_at)  # fmt: skip
        session.add(submission)
    submission.candidate_ids, submission.ranks = ordered, ordered_ranks
    submission.tied = len(set(ordered_ranks)) < len(ordered_ranks)
    submission.submitted_at = now
    submission.duration_s = (now - as_utc(assignment.served_at)).total_seconds()
    session.flush()
    return submission


def submission_view(submission: Submission) -> dict:
    return {
        "id": submission.id,
        "task_id": submission.task.task_key if submission.task else None,
        "prompt_id": submission.prompt_id,
        "candidate_ids": list(submission.candidate_ids),
        "ranks": list(submission.ranks),
        "tied": submission.tied,
        "duration_s": submission.duration_s,
        "source": submission.source,
        "submitted_at": as_utc(submission.submitted_at).isoformat(),
    }
