"""Recording governance: legal holds, why a call has no recording, and the audit log.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21

Written out by hand, like the earlier revisions: three columns of ``calls`` (``legal_hold``,
``recording_state``, ``recording_deleted_at``) and the ``audit_log`` table. Columns and a table
that exist already are left alone (a PBX that had these models but not yet this revision made
them with ``create_all``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def _columns(table: str) -> set[str]:
    if op.get_context().as_sql:  # offline: rendering SQL, there is no database to look at
        return set()
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def _tables() -> set[str]:
    if op.get_context().as_sql:
        return set()
    return set(sa.inspect(op.get_bind()).get_table_names())


def upgrade() -> None:
    have = _columns("calls")
    new: list[sa.Column[object]] = [
        sa.Column("legal_hold", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("recording_state", sa.String(length=16), nullable=True),
        sa.Column("recording_deleted_at", sa.DateTime(), nullable=True),
    ]
    missing = [c for c in new if c.name not in have]
    if missing:
        with op.batch_alter_table("calls") as batch:
            for column in missing:
                batch.add_column(column)
    if "audit_log" not in _tables():
        op.create_table(
            "audit_log",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("at", sa.DateTime(), nullable=False),
            sa.Column("actor", sa.String(length=64), nullable=False),
            sa.Column("action", sa.String(length=32), nullable=False),
            sa.Column("target", sa.String(length=255), nullable=False),
            sa.Column("details", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_audit_log_at", "audit_log", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("recording_deleted_at")
        batch.drop_column("recording_state")
        batch.drop_column("legal_hold")
