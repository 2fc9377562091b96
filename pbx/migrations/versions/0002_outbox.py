"""The outbox of call events for webhooks, their deliveries and the delivery log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Written out by hand, like the baseline: ``outbox`` (one row per call event, its JSON body and
idempotency key), ``webhook_deliveries`` (one row per event and webhook: pending, delivered or
dead) and ``webhook_attempts`` (one row per POST).

A table that exists already is left as it is: a PBX that had these models but not yet this
revision made them with ``create_all`` (and may have queued events in them).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def _serial() -> sa.types.TypeEngine[int]:
    # SQLite numbers rows itself only for INTEGER PRIMARY KEY; PostgreSQL gets BIGSERIAL.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _exists(table: str) -> bool:
    if op.get_context().as_sql:  # offline: rendering SQL, there is no database to look at
        return False
    return table in sa.inspect(op.get_bind()).get_table_names()


def upgrade() -> None:
    if not _exists("outbox"):
        _outbox()
    if not _exists("webhook_deliveries"):
        _deliveries()
    if not _exists("webhook_attempts"):
        _attempts()


def _outbox() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("call_id", sa.String(length=36), nullable=False),
        sa.Column("idempotency_key", sa.String(length=80), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key", name="uq_outbox_idempotency_key"),
    )
    op.create_index("ix_outbox_call_id", "outbox", ["call_id"], unique=False)


def _deliveries() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("outbox_id", _serial(), nullable=False),
        sa.Column("webhook", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=512), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["outbox_id"], ["outbox.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("outbox_id", "webhook", name="uq_webhook_deliveries_outbox_webhook"),
    )
    # The worker's poll: pending rows of a webhook that are due, oldest first.
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries",
                    ["status", "webhook", "next_attempt_at"], unique=False)


def _attempts() -> None:
    op.create_table(
        "webhook_attempts",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", _serial(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=512), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["delivery_id"], ["webhook_deliveries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_webhook_attempts_delivery_id", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_outbox_call_id", table_name="outbox")
    op.drop_table("outbox")
