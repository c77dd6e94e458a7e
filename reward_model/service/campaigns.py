"""Campaigns: tasks built from a round, annotators and their tokens, and progress.

A campaign shows each chosen prompt's candidates in tasks of k: the prompt's candidates in a
seeded order, cut into runs of k, the last run topped up with the first ones so every task of a
prompt with at least k candidates shows k. Each task goes to `overlap` annotators; gold tasks
(known best candidate) go to every annotator. All tasks, gold included, get one seeded position:
the order they are handed out in. The same round, spec and seed give the same tasks.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reward_model.service.bounds import MAX_CANDIDATES, MAX_ROW_ID, Identifier, time_problem
from reward_model.service.models import Annotator, Campaign, Candidate, Submission, Task
from reward_model.service.round_source import read_round_candidates


CAMPAIGN_NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"


class GoldTask(BaseModel):
    """A task with a known answer: `answer` must be clearly best among `candidate_ids` (default:
    the answer and the prompt's next k-1 candidates in seeded order)."""

    model_config = ConfigDict(extra="forbid")
    prompt_id: Identifier
    answer: Identifier
    candidate_ids: list[Identifier] | None = Field(None, max_length=MAX_CANDIDATES)


class CampaignSpec(BaseModel):
    """What an admin asks for. Every field is checked against the round before anything is stored."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, pattern=CAMPAIGN_NAME_PATTERN)
    prompts: Literal["all"] | list[Identifier] = Field("all", max_length=10_000)
    k: int = Field(4, ge=2, le=MAX_CANDIDATES, description="Candidates per task.")
    overlap: int = Field(3, ge=1, le=50, description="Different annotators per (non-gold) task.")
    gold: list[GoldTask] = Field(default_factory=list, max_length=1000, description="Gold tasks; each goes to every annotator.")
    expires_at: datetime | None = Field(None, description="After this time nothing is handed out or stored (UTC if no zone).")
    seed: int = Field(0, ge=0, le=MAX_ROW_ID)

    @field_validator("expires_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
        try:
            problem = time_problem(value, "expires_at")
        except OverflowError:  # year 1 at +14:00 has no UTC time
            problem = f"expires_at {value.isoformat()} is outside the range of times"
        if problem:
            raise ValueError(problem)
        return value


class CampaignError(ValueError):
    """A campaign spec or annotator request that cannot be honoured; the message says why."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_campaign(session: Session, spec: CampaignSpec, round_dir: str | Path) -> Campaign:
    """Store the campaign, its candidates and its tasks (inside the caller's transaction)."""
    if session.scalar(select(Campaign).where(Campaign.name == spec.name)) is not None:
        raise CampaignError(f"campaign {spec.name!r} already exists")
    by_prompt: dict[str, list] = {}
    for candidate in read_round_candidates(round_dir):
        by_prompt.setdefault(candidate.prompt_id, []).append(candidate)
    prompts = sorted(by_prompt) if spec.prompts == "all" else list(dict.fromkeys(spec.prompts))
    unknown = [p for p in prompts if p not in by_prompt]
    if unknown:
        raise CampaignError(f"prompts not in the round's rendered candidates: {unknown}")
    campaign = Campaign(name=spec.name, round_dir=str(Path(round_dir).resolve()), k=spec.k, overlap=spec.overlap,
                        seed=spec.seed, expires_at=spec.expires_at, status="open")  # fmt: skip
    session.add(campaign)
    session.flush()
    for prompt in prompts:
        for c in by_prompt[prompt]:
            session.add(Candidate(campaign_id=campaign.id, candidate_id=c.candidate_id, prompt_id=prompt,
                                  mix_uri=c.mix_uri, vocals_uri=c.vocals_uri))  # fmt: skip
    tasks = [(p, ids, None) for p in prompts for ids in _prompt_tasks(p, [c.candidate_id for c in by_prompt[p]], spec)]
    tasks += [(g.prompt_id, _gold_candidates(g, by_prompt, prompts, spec), g.answer) for g in spec.gold]
    if not tasks:
        raise CampaignError("no task: every chosen prompt has fewer than 2 rendered candidates")
    order = list(range(len(tasks)))
    random.Random(f"{spec.seed}:order").shuffle(order)
    for number, (prompt, ids, answer) in enumerate(tasks, start=1):
        session.add(Task(campaign_id=campaign.id, task_key=f"{spec.name}:t{number:04d}", prompt_id=prompt,
                         candidate_ids=ids, is_gold=answer is not None, gold_answer=answer,
                         position=order[number - 1]))  # fmt: skip
    session.flush()
    return campaign


def _prompt_tasks(prompt: str, candidate_ids: list[str], spec: CampaignSpec) -> list[list[str]]:
    if len(candidate_ids) < 2:
        return []
    order = sorted(candidate_ids)
    random.Random(f"{spec.seed}:{prompt}").shuffle(order)
    size = min(spec.k, len(order))
    runs = [order[i : i + size] for i in range(0, len(order), size)]
    if len(runs[-1]) < size:
        runs[-1] += [c for c in order if c not in runs[-1]][: size - len(runs[-1])]
    return runs


def _gold_candidates(gold: GoldTask, by_prompt: dict, prompts: list[str], spec: CampaignSpec) -> list[str]:
    where = f"gold task for prompt {gold.prompt_id!r}"
    if gold.prompt_id not in prompts:
        raise CampaignError(f"{where}: the prompt is not in this campaign")
    known = {c.candidate_id for c in by_prompt[gold.prompt_id]}
    ids = gold.candidate_ids or [gold.answer] + [c for c in _prompt_tasks(gold.prompt_id, sorted(known), spec)[0] if c != gold.answer][: spec.k - 1]
    problems = [c for c in [gold.answer, *ids] if c not in known]
    if problems or gold.answer not in ids or len(set(ids)) != len(ids) or len(ids) < 2:
        raise CampaignError(f"{where}: answer {gold.answer!r} and candidates {ids} must be 2+ distinct candidates of the prompt including the answer (unknown: {problems})")
    shuffled = sorted(ids)
    random.Random(f"{spec.seed}:gold:{gold.answer}").shuffle(shuffled)
    return shuffled


@dataclass(frozen=True)
class GivenTask:
    """A task decided outside the service (e.g. by the simulated crowd), stored as given.
    `task_key` must be unique in the database; `gold_answer` set makes it a gold task."""

    task_key: str
    prompt_id: str
    candidate_ids: list[str]
    gold_answer: str | None = None


def create_campaign_from_tasks(session: Session, name: str, round_dir: str | Path, tasks: list[GivenTask],
                               overlap: int = 1) -> Campaign:  # fmt: skip
    """Store a campaign whose tasks are given rather than drawn (inside the caller's transaction).

    Like `create_campaign` with prompts "all": every rendered candidate of the round is stored;
    then `add_given_tasks(tasks)` (which may be empty: tasks can be added later)."""
    CampaignSpec(name=name)  # the same name rule; raises ValidationError
    if overlap < 1:
        raise CampaignError(f"overlap must be >= 1, got {overlap}")
    if session.scalar(select(Campaign).where(Campaign.name == name)) is not None:
        raise CampaignError(f"campaign {name!r} already exists")
    k = max([len(t.candidate_ids) for t in tasks] + [2])
    campaign = Campaign(name=name, round_dir=str(Path(round_dir).resolve()), k=k, overlap=overlap, seed=0,
                        expires_at=None, status="open")  # fmt: skip
    session.add(campaign)
    session.flush()
    session.add_all(Candidate(campaign_id=campaign.id, candidate_id=c.candidate_id, prompt_id=c.prompt_id,
                              mix_uri=c.mix_uri, vocals_uri=c.vocals_uri) for c in read_round_candidates(round_dir))  # fmt: skip
    session.flush()
    add_given_tasks(session, campaign, tasks)
    return campaign


def add_given_tasks(session: Session, campaign: Campaign, tasks: list[GivenTask]) -> None:
    """Store `tasks` in the campaign, handed out after its existing tasks in the given order.
    Each must show 2+ distinct stored candidates of its prompt (the gold answer among them)."""
    known: dict[str, set] = {}
    for prompt, candidate in session.execute(select(Candidate.prompt_id, Candidate.candidate_id).where(Candidate.campaign_id == campaign.id)):
        known.setdefault(prompt, set()).add(candidate)
    keys = [t.task_key for t in tasks]
    repeated = {key for key, n in Counter(keys).items() if n > 1}
    taken = set(session.scalars(select(Task.task_key).where(Task.task_key.in_(keys)))) if keys else set()
    problems = []
    for t in tasks:
        ids = list(t.candidate_ids)
        unknown = [c for c in ids if c not in known.get(t.prompt_id, set())]
        if not t.task_key or len(t.task_key) > 200 or t.task_key in taken or t.task_key in repeated:
            problems.append(f"task key {t.task_key!r} is empty, longer than 200 characters, repeated or already used")
        elif unknown or len(set(ids)) != len(ids) or len(ids) < 2:
            problems.append(f"task {t.task_key!r}: {ids} must be 2+ distinct rendered candidates of prompt {t.prompt_id!r} (unknown: {unknown})")
        elif t.gold_answer is not None and t.gold_answer not in ids:
            problems.append(f"task {t.task_key!r}: gold answer {t.gold_answer!r} is not one of its candidates")
    if problems:
        raise CampaignError("; ".join(problems[:20]) + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""))
    last = session.scalar(select(func.max(Task.position)).where(Task.campaign_id == campaign.id))
    start = 0 if last is None else last + 1
    session.add_all(Task(campaign_id=campaign.id, task_key=t.task_key, prompt_id=t.prompt_id, candidate_ids=list(t.candidate_ids),
                         is_gold=t.gold_answer is not None, gold_answer=t.gold_answer, position=start + i)
                    for i, t in enumerate(tasks))  # fmt: skip
    session.flush()


def valid_annotator_name(name: str) -> bool:
    """1-100 letters, digits, '-', '_', '.', '@'."""
    return bool(name) and len(name) <= 100 and name.replace("-", "").replace("_", "").replace(".", "").replace("@", "").isalnum()


def add_annotators(session: Session, campaign: Campaign, names: list[str]) -> dict[str, str]:
    """New annotators and their plain tokens (returned once; only their sha256 is stored)."""
    taken = set(session.scalars(select(Annotator.name).where(Annotator.campaign_id == campaign.id)))
    clashes = sorted(set(names) & taken) + sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise CampaignError(f"annotator names already used in campaign {campaign.name!r} (or repeated): {clashes}")
    bad = [n for n in names if not valid_annotator_name(n)]
    if bad:
        raise CampaignError(f"annotator names must be 1-100 letters, digits, '-', '_', '.', '@': {bad}")
    tokens = {name: secrets.token_urlsafe(32) for name in names}
    session.add_all(Annotator(campaign_id=campaign.id, name=n, token_sha256=hash_token(t)) for n, t in tokens.items())
    session.flush()
    return tokens


def campaign_by_name(session: Session, name: str) -> Campaign:
    campaign = session.scalar(select(Campaign).where(Campaign.name == name))
    if campaign is None:
        raise LookupError(f"no campaign named {name!r}")
    return campaign


def progress(session: Session, campaign: Campaign) -> dict:
    """Judgements stored against judgements wanted, overall and per annotator."""
    annotators = session.scalars(select(Annotator).where(Annotator.campaign_id == campaign.id).order_by(Annotator.name)).all()
    gold = session.scalar(select(func.count()).where(Task.campaign_id == campaign.id, Task.is_gold)) or 0
    regular = session.scalar(select(func.count()).where(Task.campaign_id == campaign.id, ~Task.is_gold)) or 0
    done = dict(session.execute(select(Submission.annotator_id, func.count()).where(Submission.campaign_id == campaign.id)
                                .group_by(Submission.annotator_id)).all())  # fmt: skip
    return {
        "campaign": campaign.name,
        "status": "expired" if campaign.is_expired() else campaign.status,
        "tasks": regular + gold,
        "gold_tasks": gold,
        "judgements_wanted": regular * campaign.overlap + gold * len(annotators),
        "submissions": sum(done.values()),
        "annotators": [{"annotator_id": a.name, "submissions": done.get(a.id, 0)} for a in annotators],
    }


def task_progress(session: Session, campaign: Campaign) -> list[dict]:
    """Per task, in hand-out order: handed out (slots taken), judgements stored, judgements wanted."""
    annotators = session.scalar(select(func.count()).where(Annotator.campaign_id == campaign.id)) or 0
    stored = dict(session.execute(select(Submission.task_id, func.count()).where(Submission.campaign_id == campaign.id)
                                  .group_by(Submission.task_id)).all())  # fmt: skip
    tasks = session.scalars(select(Task).where(Task.campaign_id == campaign.id).order_by(Task.position))
    return [{"task_id": t.task_key, "prompt_id": t.prompt_id, "gold": t.is_gold, "handed_out": t.slots_taken,
             "judgements": stored.get(t.id, 0), "wanted": annotators if t.is_gold else campaign.overlap} for t in tasks]  # fmt: skip
