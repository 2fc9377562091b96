"""SQLAlchemy models of the records the PBX keeps: one row per logical call with its legs,
the CRM's contacts and leads with their phone numbers, and the outbox of call events for
webhooks with its deliveries and their log of attempts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from . import callfields


class Base(DeclarativeBase):
    pass


def _derived(derive: Callable[[Mapping[str, Any]], object]) -> Callable[
        [DefaultExecutionContext], object]:
    """A column default worked out from the other columns of the row being inserted, for a
    row written without the column (by code that does not know the CRM's fields)."""
    def default(context: DefaultExecutionContext) -> object:
        return derive(context.get_current_parameters())  # type: ignore[no-untyped-call]
    return default


def _final_subject(row: Mapping[str, Any]) -> str | None:
    return callfields.subject(row) if row.get("ended_at") is not None else None


class Call(Base):
    """One logical call, from the first INVITE to the last BYE (times are UTC).

    The columns from ``subject`` on are those of a CRM's Calls module (:mod:`crmsync.callfields`
    derives the automatic ones); ``purpose``, ``result``, ``description`` and ``cost`` are
    written by people (the API) and imports, never by the PBX's call path.
    """

    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sip_call_id: Mapped[str] = mapped_column(String(255), index=True)
    direction: Mapped[str] = mapped_column(String(16))
    from_number: Mapped[str] = mapped_column(String(64), index=True)
    from_name: Mapped[str] = mapped_column(String(255), default="")
    to_number: Mapped[str] = mapped_column(String(64), index=True)
    caller_user: Mapped[str | None] = mapped_column(String(64), nullable=True)
    callee_user: Mapped[str | None] = mapped_column(String(64), nullable=True)
    answered_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    duration: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Talk time in seconds (answer to end); 0 for unanswered calls."""
    ring_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    disposition: Mapped[str] = mapped_column(String(16), default="in_progress")
    hangup_cause: Mapped[str] = mapped_column(String(255), default="")
    hangup_by: Mapped[str | None] = mapped_column(String(16), nullable=True)
    sip_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    recording_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    recording_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    transferred_to: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The user the call was last transferred to (None if it never was)."""
    transfers: Mapped[int] = mapped_column(Integer, default=0)
    keys: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """Keys the caller pressed while the PBX answered (menu choices), in order."""
    queue: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    """The queue the caller waited in last (None: never queued)."""
    queue_result: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """answered, abandoned, timeout, unassigned, full, moved or exit."""
    queue_wait: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Seconds the caller waited in that queue."""
    queue_rule: Mapped[str | None] = mapped_column(String(64), nullable=True)
    callback_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Times the PBX dialled the callback number."""
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Kept as it is: retention and erasure leave the call and its recording alone."""
    recording_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """Why the call has no recording though recording was on: ``quota`` (the recording
    quota was reached), ``expired`` (deleted by retention), ``erased`` (by an erasure
    request); None otherwise."""
    recording_deleted_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    subject: Mapped[str | None] = mapped_column(String(255), nullable=True,
                                                default=_derived(_final_subject))
    """"Inbound call from Ichiro Tanaka" and the like, set when the call ends (None until
    then) unless someone wrote one first; a subject written through the API stays."""
    call_type: Mapped[str] = mapped_column(String(16), default=_derived(callfields.call_type),
                                           server_default="inbound")
    """inbound | outbound | missed | internal (missed: inbound or internal, nobody answered).
    A row inserted by hand in SQL without it is taken as a completed inbound call."""
    status: Mapped[str] = mapped_column(String(16), default=_derived(callfields.call_status),
                                        server_default="completed")
    """in_progress | completed."""
    who_kind: Mapped[str | None] = mapped_column(String(8), nullable=True)
    """contact | lead: the kind of CRM record ``who_id`` is (None: not linked)."""
    who_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    """The contact or lead the call is about: matched by the outside party's number (contacts
    first), or linked through the API."""
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True,
                                              default=_derived(callfields.call_owner))
    """User id of the agent the call belongs to (:func:`crmsync.callfields.call_owner`)."""
    purpose: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """Why the call was made or taken (prospecting, support...), as the agent files it."""
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    """What came of the call, in the agent's words."""
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    cost: Mapped[float | None] = mapped_column(Float, nullable=True)
    """What the call cost; for imports and the CRM to fill (the PBX has no tariffs)."""
    revision: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    """1 as the call path writes the record; one more for every later change (a result that
    came after the end, an annotation through the API): the ``call.updated`` webhook event
    carries it."""


class CallLegRecord(Base):
    """One phone or number a call was offered to, and what became of it (times are UTC).

    A ring group's members, a queue's offers, the phone a transfer handed the call to and each
    attempt of a callback are legs of their call (see :class:`pbx.records.CallLeg`).
    """

    __tablename__ = "call_legs"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    """The leg's id (``CallLeg.leg_id``)."""
    call_id: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    """ring | queue | transfer | callback | outside"""
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The user whose phones rang, if a user's."""
    number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The number dialled, for a leg to an outside number."""
    started_at: Mapped[datetime] = mapped_column(DateTime)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    result: Mapped[str] = mapped_column(String(16))
    """answered | no_answer | busy | rejected | cancelled | elsewhere | failed"""
    sip_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    queue: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Contact(Base):
    """A person or company the CRM knows; its phone numbers are rows of ``phone_numbers``."""

    __tablename__ = "contacts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    first_name: Mapped[str] = mapped_column(String(255), default="")
    last_name: Mapped[str] = mapped_column(String(255), default="")
    company: Mapped[str] = mapped_column(String(255), default="")
    email: Mapped[str] = mapped_column(String(320), default="")
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """User id of the agent who owns the record (None when nobody does)."""
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class Lead(Base):
    """A prospect not yet qualified into a contact; same fields plus a status."""

    __tablename__ = "leads"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    first_name: Mapped[str] = mapped_column(String(255), default="")
    last_name: Mapped[str] = mapped_column(String(255), default="")
    company: Mapped[str] = mapped_column(String(255), default="")
    email: Mapped[str] = mapped_column(String(320), default="")
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(32), default="new")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class PhoneNumber(Base):
    """One phone number of a contact or a lead.

    A number may belong to several records (a switchboard shared by colleagues), so it is not
    unique; caller lookup goes through the index on ``number_e164``.
    """

    __tablename__ = "phone_numbers"
    __table_args__ = (Index("ix_phone_numbers_record", "owner_kind", "record_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_kind: Mapped[str] = mapped_column(String(8))
    """contact | lead"""
    record_id: Mapped[str] = mapped_column(String(36))
    number_e164: Mapped[str] = mapped_column(String(16), index=True)
    """The number in E.164 (``+81312345678``), as lookups compare it."""
    label: Mapped[str] = mapped_column(String(32), default="")
    """What kind of number it is for the user, e.g. mobile or work."""
    raw: Mapped[str] = mapped_column(String(64), default="")
    """The number as it was written (``03-1234-5678``), shown back unchanged."""


# SQLite numbers rows itself only for INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
_SERIAL = BigInteger().with_variant(Integer(), "sqlite")


class OutboxEvent(Base):
    """One call event to push to webhooks, written in the transaction of its call row.

    The payload is the exact JSON body every webhook receives for it.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_outbox_idempotency_key"),
    )

    id: Mapped[int] = mapped_column(_SERIAL, primary_key=True, autoincrement=True)
    event: Mapped[str] = mapped_column(String(32))
    """call.started | call.answered | call.ended | call.missed | recording.ready |
    call.updated"""
    call_id: Mapped[str] = mapped_column(String(36), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(80))
    """``<call id>:<event>`` (``<call id>:call.updated:<revision>``), the same for every
    webhook and every attempt."""
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class WebhookDelivery(Base):
    """The state of one outbox event for one webhook."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("outbox_id", "webhook", name="uq_webhook_deliveries_outbox_webhook"),
        # The worker's poll: pending rows of a webhook that are due, oldest first.
        Index("ix_webhook_deliveries_due", "status", "webhook", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(_SERIAL, primary_key=True, autoincrement=True)
    outbox_id: Mapped[int] = mapped_column(
        _SERIAL, ForeignKey("outbox.id", ondelete="CASCADE")
    )
    webhook: Mapped[str] = mapped_column(String(64))
    """The name of the webhook in ``crm.webhooks``."""
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """pending | delivered | dead"""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Attempts that got an answer or failed since the row was created or last replayed."""
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime)
    """When a pending row is due; while a worker sends it, when its claim lapses."""
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(512), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class WebhookAttempt(Base):
    """The delivery log: one row per POST of a delivery, whatever came of it."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(_SERIAL, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        _SERIAL, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(DateTime)
    """When the POST started (UTC)."""
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The HTTP status of the answer; None if there was none (timeout, refused, reset)."""
    error: Mapped[str | None] = mapped_column(String(512), nullable=True)
    """Why the attempt failed; None when it succeeded."""
    duration_ms: Mapped[int] = mapped_column(Integer)


class ScheduledCall(Base):
    """A call an agent plans to make (or expects), with its reminder; times are UTC."""

    __tablename__ = "scheduled_calls"
    __table_args__ = (
        # The agent's list: their calls in time order.
        Index("ix_scheduled_calls_owner_start", "owner", "start_at"),
        # The reminder poll: scheduled calls whose reminder is due.
        Index("ix_scheduled_calls_due", "status", "reminder_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    subject: Mapped[str] = mapped_column(String(255), default="")
    direction: Mapped[str] = mapped_column(String(16))
    """outbound | inbound (a call the agent expects)"""
    number: Mapped[str] = mapped_column(String(16), index=True)
    """The other party's number in E.164."""
    record_kind: Mapped[str | None] = mapped_column(String(8), nullable=True)
    """contact | lead, when the call is about a CRM record."""
    record_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    owner: Mapped[str] = mapped_column(String(64))
    """User id of the agent the call belongs to."""
    start_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    reminder_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    """When to remind the owner (at or before ``start_at``); None: no reminder."""
    status: Mapped[str] = mapped_column(String(16), default="scheduled")
    """scheduled | completed | cancelled"""
    description: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[str] = mapped_column(Text, default="")
    """What came of the call (or why it was cancelled)."""
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    reminded_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    """When the reminder went out; None until then (and again after a reschedule)."""


class UserRecord(Base):
    """A user of the PBX, as the config has them (written at start and at each reload), so
    that the CRM and reports can name a call's owner or agent. Users removed from the config
    stay, inactive: old calls still name them."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    extension: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    role: Mapped[str] = mapped_column(String(16), default="agent")
    department: Mapped[str | None] = mapped_column(String(64), nullable=True)
    caller_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class AuditEntry(Base):
    """Who did what to the records that the law cares about (erasure, legal holds)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    """The API key's name (or ``pbx`` for the PBX's own jobs)."""
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(255))
    details: Mapped[str] = mapped_column(Text, default="")
    """JSON: what was affected."""


def insert_for(session: Session, table: Any) -> Any:
    """An INSERT of ``table`` (a Table or a model) that knows ``ON CONFLICT`` (upserts) in the
    dialect of ``session``'s database: PostgreSQL's, else SQLite's."""
    ins = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    return ins(table)
