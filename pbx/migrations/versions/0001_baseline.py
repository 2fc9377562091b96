"""Baseline: the tables as the PBX created them before its schema had revisions.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Written out by hand so that it never changes when the models do: call records (``calls``), the
CRM's contacts, leads and their phone numbers, registrations that survive a restart, and agent
presence. Defaults are applied by the application (SQLAlchemy ``default=``), not by the
database, so no column has a server default.

Each table has its own function so that :mod:`pbx.schema` can add the tables missing from a
database made before revisions existed (those were created one group at a time by the PBX
versions that introduced them).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _calls() -> sa.Table:
    table = op.create_table(
        "calls",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("sip_call_id", sa.String(length=255), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("from_number", sa.String(length=64), nullable=False),
        sa.Column("from_name", sa.String(length=255), nullable=False),
        sa.Column("to_number", sa.String(length=64), nullable=False),
        sa.Column("caller_user", sa.String(length=64), nullable=True),
        sa.Column("callee_user", sa.String(length=64), nullable=True),
        sa.Column("answered_by", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("answered_at", sa.DateTime(), nullable=True),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("ring_seconds", sa.Float(), nullable=True),
        sa.Column("disposition", sa.String(length=16), nullable=False),
        sa.Column("hangup_cause", sa.String(length=255), nullable=False),
        sa.Column("hangup_by", sa.String(length=16), nullable=True),
        sa.Column("sip_code", sa.Integer(), nullable=True),
        sa.Column("recording_path", sa.String(length=1024), nullable=True),
        sa.Column("recording_seconds", sa.Float(), nullable=True),
        sa.Column("transferred_to", sa.String(length=64), nullable=True),
        sa.Column("transfers", sa.Integer(), nullable=False),
        sa.Column("keys", sa.String(length=64), nullable=True),
        sa.Column("queue", sa.String(length=64), nullable=True),
        sa.Column("queue_result", sa.String(length=16), nullable=True),
        sa.Column("queue_wait", sa.Float(), nullable=True),
        sa.Column("queue_rule", sa.String(length=64), nullable=True),
        sa.Column("callback_number", sa.String(length=64), nullable=True),
        sa.Column("callback_attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_calls_from_number", "calls", ["from_number"], unique=False)
    op.create_index("ix_calls_queue", "calls", ["queue"], unique=False)
    op.create_index("ix_calls_sip_call_id", "calls", ["sip_call_id"], unique=False)
    op.create_index("ix_calls_started_at", "calls", ["started_at"], unique=False)
    op.create_index("ix_calls_to_number", "calls", ["to_number"], unique=False)
    return table


def _contacts() -> sa.Table:
    table = op.create_table(
        "contacts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("first_name", sa.String(length=255), nullable=False),
        sa.Column("last_name", sa.String(length=255), nullable=False),
        sa.Column("company", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_contacts_updated_at", "contacts", ["updated_at"], unique=False)
    return table


def _leads() -> sa.Table:
    table = op.create_table(
        "leads",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("first_name", sa.String(length=255), nullable=False),
        sa.Column("last_name", sa.String(length=255), nullable=False),
        sa.Column("company", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_leads_updated_at", "leads", ["updated_at"], unique=False)
    return table


def _phone_numbers() -> sa.Table:
    table = op.create_table(
        "phone_numbers",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_kind", sa.String(length=8), nullable=False),
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.Column("number_e164", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=32), nullable=False),
        sa.Column("raw", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # Caller lookup compares E.164 numbers; a record's numbers are read by (kind, id).
    op.create_index(
        "ix_phone_numbers_number_e164", "phone_numbers", ["number_e164"], unique=False
    )
    op.create_index(
        "ix_phone_numbers_record", "phone_numbers", ["owner_kind", "record_id"], unique=False
    )
    return table


def _registrations() -> sa.Table:
    table = op.create_table(
        "registrations",
        sa.Column("aor", sa.String(length=128), nullable=False),
        sa.Column("uri", sa.String(length=512), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("q", sa.Float(), nullable=True),
        sa.Column("call_id", sa.String(length=255), nullable=False),
        sa.Column("cseq", sa.Integer(), nullable=False),
        sa.Column("instance", sa.String(length=255), nullable=True),
        sa.Column("reg_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("user_agent", sa.String(length=255), nullable=False),
        sa.Column("params", sa.String(length=512), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("aor", "uri"),
    )
    return table


def _presence() -> sa.Table:
    table = op.create_table(
        "presence",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )
    return table


CREATE: dict[str, Callable[[], sa.Table]] = {
    "calls": _calls,
    "contacts": _contacts,
    "leads": _leads,
    "phone_numbers": _phone_numbers,
    "registrations": _registrations,
    "presence": _presence,
}
"""Each baseline table by name, with the function that creates it and its indexes."""


def upgrade() -> None:
    for create in CREATE.values():
        create()


def downgrade() -> None:
    for name in reversed(CREATE):
        # Dropping a table drops its indexes with it, on SQLite and PostgreSQL alike.
        op.drop_table(name)
