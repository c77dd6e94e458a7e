"""The annotation service's tables (SQLAlchemy 2 ORM). The schema itself is created by the
Alembic migrations in `migrations/`, never by `create_all`, so SQLite and PostgreSQL databases
always match a numbered revision.

Public identifiers are strings: a task is named by `task_key` ("<campaign>:t0001") and an
annotator by `name` (unique within its campaign); integer primary keys stay internal.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, TypeDecorator, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without a zone; every stored datetime is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)


class UTCDateTime(TypeDecorator):
    """An aware datetime stored as UTC: PostgreSQL's timestamptz does this itself; SQLite keeps no
    zone, so a time is shifted to UTC before it is written and read back as UTC (12:00+02:00 is
    stored as 10:00 and reads back as 10:00+00:00, the same instant)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else as_utc(value).astimezone(timezone.utc)  # a naive time is taken as UTC

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return as_utc(value)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime}


class Campaign(Base):
    __tablename__ = "campaign"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    round_dir: Mapped[str] = mapped_column(String(1000))
    k: Mapped[int] = mapped_column(Integer)  # candidates per task
    overlap: Mapped[int] = mapped_column(Integer)  # annotators per (non-gold) task
    seed: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="open")  # open | closed
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    tasks: Mapped[list[Task]] = relationship(back_populates="campaign", order_by="Task.position")

    def is_expired(self, now: datetime | None = None) -> bool:
        expires = as_utc(self.expires_at)
        return expires is not None and (now or utc_now()) >= expires


class Candidate(Base):
    """A song of the campaign's round that tasks may show; the only audio the service will serve."""

    __tablename__ = "candidate"
    __table_args__ = (UniqueConstraint("campaign_id", "candidate_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), index=True)
    candidate_id: Mapped[str] = mapped_column(String(200))
    prompt_id: Mapped[str] = mapped_column(String(200))
    mix_uri: Mapped[str] = mapped_column(String(1000))
    vocals_uri: Mapped[str | None] = mapped_column(String(1000), nullable=True)


class Task(Base):
    __tablename__ = "task"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), index=True)
    task_key: Mapped[str] = mapped_column(String(200), unique=True)
    prompt_id: Mapped[str] = mapped_column(String(200))
    candidate_ids: Mapped[list] = mapped_column(JSON)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    gold_answer: Mapped[str | None] = mapped_column(String(200), nullable=True)
    position: Mapped[int] = mapped_column(Integer)  # seeded hand-out order
    slots_taken: Mapped[int] = mapped_column(Integer, default=0)  # assignments so far (claimed by a conditional UPDATE)
    has_room: Mapped[bool] = mapped_column(Boolean, default=True)  # a slot is free (gold: always); set by the same UPDATE

    campaign: Mapped[Campaign] = relationship(back_populates="tasks")


class Annotator(Base):
    __tablename__ = "annotator"
    __table_args__ = (UniqueConstraint("campaign_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)  # the plain token is never stored
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    campaign: Mapped[Campaign] = relationship()


class Assignment(Base):
    """A task handed to an annotator, in the slot it claimed (0-based; unique per task)."""

    __tablename__ = "assignment"
    __table_args__ = (UniqueConstraint("task_id", "annotator_id"), UniqueConstraint("task_id", "slot"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotator.id", ondelete="CASCADE"), index=True)
    slot: Mapped[int] = mapped_column(Integer)
    served_at: Mapped[datetime] = mapped_column(default=utc_now)

    task: Mapped[Task] = relationship()


class Upload(Base):
    __tablename__ = "upload"
    __table_args__ = (UniqueConstraint("campaign_id", "sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(20))
    rows: Mapped[int] = mapped_column(Integer)
    uploaded_by: Mapped[str] = mapped_column(String(100))  # "admin" or "annotator:<name>"
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class Submission(Base):
    """One ranking. `dedupe_key` (annotator, task or prompt, the candidate set) is unique per
    campaign: the database refuses a second copy of the same judgement from any source."""

    __tablename__ = "submission"
    __table_args__ = (UniqueConstraint("campaign_id", "dedupe_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotator.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"), nullable=True)
    prompt_id: Mapped[str] = mapped_column(String(200))
    candidate_ids: Mapped[list] = mapped_column(JSON)  # in ranked order
    ranks: Mapped[list] = mapped_column(JSON)  # 1..m, tied candidates share a rank
    tied: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    submitted_at: Mapped[datetime] = mapped_column(default=utc_now)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    source: Mapped[str] = mapped_column(String(10))  # web | upload
    upload_id: Mapped[int | None] = mapped_column(ForeignKey("upload.id", ondelete="CASCADE"), nullable=True)
    upload_row: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dedupe_key: Mapped[str] = mapped_column(String(64))  # sha256 of (annotator, scope, sorted candidates)

    annotator: Mapped[Annotator] = relationship()
    task: Mapped[Task | None] = relationship()
