"""The fields of a CRM's Calls module on every call record, and the legs of each call.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24

Written out by hand, like the earlier revisions. Columns of ``calls``: ``subject``,
``call_type``, ``status``, ``who_kind`` and ``who_id`` (the contact or lead the call is
about), ``owner`` (indexed: the list's filter), ``purpose``, ``result``, ``description``,
``cost`` and ``revision``; and the table ``call_legs`` (one row per phone or number a call was
offered to).

Records already there get their type, status and owner worked out from what they hold (the
rules of ``crmsync.callfields``, written here in SQL so that this revision never changes),
ended ones their subject, with the caller's display name or the number (they are not linked
to contacts and leads: their outside numbers were never normalised). A row inserted later
by hand, without type or status, is taken as a completed inbound call (the columns' server
defaults; the PBX itself always writes both). Columns and a table that
exist already are left alone (a PBX that had these models but not yet this revision made them
with ``create_all``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
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


def _indexes(table: str) -> set[str]:
    if op.get_context().as_sql:
        return set()
    return {i["name"] for i in sa.inspect(op.get_bind()).get_indexes(table) if i["name"]}


_calls = sa.table(
    "calls",
    *(sa.column(name) for name in (
        "direction", "from_number", "from_name", "to_number", "caller_user", "callee_user",
        "answered_by", "ended_at", "disposition", "queue", "queue_result", "subject",
        "call_type", "status", "owner",
    )),
)


def _fill_type() -> None:
    """Type, status and owner of every record (the columns were just added)."""
    c = _calls.c
    missed = sa.and_(
        c.ended_at.is_not(None),
        c.direction != "outbound",
        c.answered_by.is_(None),
        sa.or_(
            c.disposition.in_(("no_answer", "cancelled")),
            sa.and_(c.queue.is_not(None),
                    sa.or_(c.queue_result.is_(None), c.queue_result != "answered")),
        ),
    )
    op.execute(
        _calls.update().values(
            call_type=sa.case(
                (c.direction == "outbound", "outbound"),
                (missed, "missed"),
                (c.direction == "internal", "internal"),
                else_="inbound",
            ),
            status=sa.case((c.ended_at.is_(None), "in_progress"), else_="completed"),
            owner=sa.case((c.direction == "outbound", c.caller_user),
                          else_=sa.func.coalesce(c.answered_by, c.callee_user)),
        )
    )


def _fill_subject() -> None:
    """The subject of every ended record without one."""
    c = _calls.c
    caller = sa.func.coalesce(sa.func.nullif(sa.func.trim(c.from_name), ""),
                              sa.func.nullif(c.from_number, ""), "an unknown caller")
    subject = sa.case(
        (c.call_type == "internal",
         sa.literal("Internal call ") + c.from_number + " → " + c.to_number),
        (c.call_type == "outbound",
         sa.literal("Outbound call to ")
         + sa.func.coalesce(sa.func.nullif(c.to_number, ""), "an unknown number")),
        (c.call_type == "missed", sa.literal("Missed call from ") + caller),
        else_=sa.literal("Inbound call from ") + caller,
    )
    op.execute(
        _calls.update().where(c.subject.is_(None), c.ended_at.is_not(None))
        .values(subject=sa.func.substr(subject, 1, 255))
    )


def upgrade() -> None:
    have = _columns("calls")
    new: list[sa.Column[object]] = [
        sa.Column("subject", sa.String(length=255), nullable=True),
        # A row a tool inserts by hand without them is a completed inbound call.
        sa.Column("call_type", sa.String(length=16), server_default="inbound", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="completed", nullable=False),
        sa.Column("who_kind", sa.String(length=8), nullable=True),
        sa.Column("who_id", sa.String(length=36), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("purpose", sa.String(length=64), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("revision", sa.Integer(), server_default=sa.text("1"), nullable=False),
    ]
    missing = [column for column in new if column.name not in have]
    if missing:
        with op.batch_alter_table("calls") as batch:
            for column in missing:
                batch.add_column(column)
    added = {column.name for column in missing}
    if "call_type" in added:
        _fill_type()
    if "subject" in added:
        _fill_subject()
    if "ix_calls_owner" not in _indexes("calls"):
        op.create_index("ix_calls_owner", "calls", ["owner"], unique=False)
    if "call_legs" not in _tables():
        op.create_table(
            "call_legs",
            sa.Column("id", sa.String(length=80), nullable=False),
            sa.Column("call_id", sa.String(length=36), nullable=False),
            sa.Column("kind", sa.String(length=16), nullable=False),
            sa.Column("user_id", sa.String(length=64), nullable=True),
            sa.Column("number", sa.String(length=64), nullable=True),
            sa.Column("started_at", sa.DateTime(), nullable=False),
            sa.Column("answered_at", sa.DateTime(), nullable=True),
            sa.Column("ended_at", sa.DateTime(), nullable=True),
            sa.Column("result", sa.String(length=16), nullable=False),
            sa.Column("sip_code", sa.Integer(), nullable=True),
            sa.Column("queue", sa.String(length=64), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_call_legs_call_id", "call_legs", ["call_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_call_legs_call_id", table_name="call_legs")
    op.drop_table("call_legs")
    with op.batch_alter_table("calls") as batch:
        batch.drop_index("ix_calls_owner")
        for name in ("revision", "cost", "description", "result", "purpose", "owner",
                     "who_id", "who_kind", "status", "call_type", "subject"):
            batch.drop_column(name)
