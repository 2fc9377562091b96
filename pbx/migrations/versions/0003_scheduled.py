"""Scheduled calls: the calls agents plan, with their reminders.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Written out by hand, like the earlier revisions: ``scheduled_calls`` (one row per planned call:
its owner, start and reminder times, status and result).

A table that exists already is left as it is: a PBX that had this model but not yet this
revision made it with ``create_all`` (and may hold scheduled calls in it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def _exists(table: str) -> bool:
    if op.get_context().as_sql:  # offline: rendering SQL, there is no database to look at
        return False
    return table in sa.inspect(op.get_bind()).get_table_names()


def upgrade() -> None:
    if _exists("scheduled_calls"):
        return
    op.create_table(
        "scheduled_calls",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("number", sa.String(length=16), nullable=False),
        sa.Column("record_kind", sa.String(length=8), nullable=True),
        sa.Column("record_id", sa.String(length=36), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("start_at", sa.DateTime(), nullable=False),
        sa.Column("reminder_at", sa.DateTime(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("reminded_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_scheduled_calls_number", "scheduled_calls", ["number"], unique=False)
    op.create_index("ix_scheduled_calls_start_at", "scheduled_calls", ["start_at"],
                    unique=False)
    # The agent's list: their calls in time order.
    op.create_index("ix_scheduled_calls_owner_start", "scheduled_calls",
                    ["owner", "start_at"], unique=False)
    # The reminder poll: scheduled calls whose reminder is due.
    op.create_index("ix_scheduled_calls_due", "scheduled_calls", ["status", "reminder_at"],
                    unique=False)


def downgrade() -> None:
    for index in ("ix_scheduled_calls_due", "ix_scheduled_calls_owner_start",
                  "ix_scheduled_calls_start_at", "ix_scheduled_calls_number"):
        op.drop_index(index, table_name="scheduled_calls")
    op.drop_table("scheduled_calls")
