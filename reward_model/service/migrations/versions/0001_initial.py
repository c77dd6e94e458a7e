"""The first schema: campaigns, candidates, tasks, annotators, assignments, uploads, submissions.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _cascade(table: str) -> sa.ForeignKey:
    return sa.ForeignKey(f"{table}.id", ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "campaign",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("round_dir", sa.String(1000), nullable=False),
        sa.Column("k", sa.Integer, nullable=False),
        sa.Column("overlap", sa.Integer, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("expires_at", TZ, nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "candidate",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("campaign_id", sa.Integer, _cascade("campaign"), nullable=False, index=True),
        sa.Column("candidate_id", sa.String(200), nullable=False),
        sa.Column("prompt_id", sa.String(200), nullable=False),
        sa.Column("mix_uri", sa.String(1000), nullable=False),
        sa.Column("vocals_uri", sa.String(1000), nullable=True),
        sa.UniqueConstraint("campaign_id", "candidate_id"),
    )
    op.create_table(
        "task",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("campaign_id", sa.Integer, _cascade("campaign"), nullable=False, index=True),
        sa.Column("task_key", sa.String(200), nullable=False, unique=True),
        sa.Column("prompt_id", sa.String(200), nullable=False),
        sa.Column("candidate_ids", sa.JSON, nullable=False),
        sa.Column("is_gold", sa.Boolean, nullable=False),
        sa.Column("gold_answer", sa.String(200), nullable=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("slots_taken", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_task_campaign_position", "task", ["campaign_id", "position"])
    op.create_table(
        "annotator",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("campaign_id", sa.Integer, _cascade("campaign"), nullable=False, index=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("campaign_id", "name"),
    )
    op.create_table(
        "assignment",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("task_id", sa.Integer, _cascade("task"), nullable=False, index=True),
        sa.Column("annotator_id", sa.Integer, _cascade("annotator"), nullable=False, index=True),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("served_at", TZ, nullable=False),
        sa.UniqueConstraint("task_id", "annotator_id"),
        sa.UniqueConstraint("task_id", "slot"),
    )
    op.create_table(
        "upload",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("campaign_id", sa.Integer, _cascade("campaign"), nullable=False, index=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("format", sa.String(20), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("uploaded_by", sa.String(100), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("campaign_id", "sha256"),
    )
    op.create_table(
        "submission",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("campaign_id", sa.Integer, _cascade("campaign"), nullable=False, index=True),
        sa.Column("annotator_id", sa.Integer, _cascade("annotator"), nullable=False, index=True),
        sa.Column("task_id", sa.Integer, _cascade("task"), nullable=True),
        sa.Column("prompt_id", sa.String(200), nullable=False),
        sa.Column("candidate_ids", sa.JSON, nullable=False),
        sa.Column("ranks", sa.JSON, nullable=False),
        sa.Column("tied", sa.Boolean, nullable=False),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("submitted_at", TZ, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=True),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("upload_id", sa.Integer, _cascade("upload"), nullable=True),
        sa.Column("upload_row", sa.Integer, nullable=True),
        sa.Column("dedupe_key", sa.String(64), nullable=False),
        sa.UniqueConstraint("campaign_id", "dedupe_key"),
    )


def downgrade() -> None:
    for table in ("submission", "upload", "assignment", "annotator", "task", "candidate", "campaign"):
        op.drop_table(table)
