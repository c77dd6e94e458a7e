"""task.has_room: a slot is free (gold tasks: always), indexed with the hand-out order, so the
next task is found by walking the open tasks in position order instead of every task of the
campaign (the filled ones grow to most of them as a campaign proceeds).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task") as batch:
        batch.add_column(sa.Column("has_room", sa.Boolean, nullable=False, server_default=sa.true()))
    op.execute("UPDATE task SET has_room = (is_gold OR slots_taken < (SELECT overlap FROM campaign WHERE campaign.id = task.campaign_id))")
    op.create_index("ix_task_hand_out", "task", ["campaign_id", "has_room", "position"])


def downgrade() -> None:
    op.drop_index("ix_task_hand_out", table_name="task")
    with op.batch_alter_table("task") as batch:
        batch.drop_column("has_room")
