"""Scheduled calls: calls an agent plans to make (or expects), with a reminder before them.

A scheduled call has an owner (the agent's user id), the other party's number in E.164, a start
time in the future and optionally a reminder time at or before it. It is then completed (with
what came of it), rescheduled to a new future time (its reminder goes out again), or cancelled.
Only a call still ``scheduled`` changes; anything else is a conflict
(:class:`ScheduledConflict`).

The functions take a :class:`~sqlalchemy.orm.Session` and leave the commit to the caller;
:class:`ScheduledCalls` runs each in a transaction of its own for the HTTP API, and
:class:`ReminderLoop` hands every due reminder to a callback once. Every check is made before
anything is written. Times given with a zone are converted to UTC; naive times are UTC.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Final, Literal

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from .contacts import normalise
from .models import Contact, Lead, ScheduledCall

__all__ = [
    "DIRECTIONS", "STATUSES", "ReminderLoop", "ScheduledCallView", "ScheduledCalls",
    "ScheduledConflict", "ScheduledError", "ScheduledNotFound", "cancel_scheduled",
    "check_text", "complete_scheduled", "create_scheduled", "due_reminders", "list_scheduled",
    "mark_reminded", "reschedule", "utc",
]

logger = logging.getLogger(__name__)

Direction = Literal["outbound", "inbound"]
Status = Literal["scheduled", "completed", "cancelled"]
DIRECTIONS: Final = ("outbound", "inbound")
STATUSES: Final = ("scheduled", "completed", "cancelled")

SUBJECT_LENGTH: Final = 255
OWNER_LENGTH: Final = 64
TEXT_LENGTH: Final = 4000
"""The longest description or result."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class ScheduledError(ValueError):
    """A scheduled call was given something it cannot take; ``reason`` says what."""

    status_code = 422

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ScheduledConflict(ScheduledError):
    """The call is no longer scheduled (completed or cancelled): it cannot change."""

    status_code = 409


class ScheduledNotFound(LookupError):
    """No scheduled call has the id given."""


@dataclass(frozen=True, slots=True)
class ScheduledCallView:
    """A scheduled call as read from the store (times naive UTC)."""

    id: str
    subject: str
    direction: str
    number: str
    record_kind: str | None
    record_id: str | None
    owner: str
    start_at: datetime
    reminder_at: datetime | None
    status: str
    description: str
    result: str
    created_at: datetime
    updated_at: datetime
    reminded_at: datetime | None

    @classmethod
    def of(cls, row: ScheduledCall) -> ScheduledCallView:
        """The view of a model row."""
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


def utc(value: datetime) -> datetime:
    """``value`` as a naive UTC time, as the tables keep times (naive input is UTC already)."""
    if value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _now(now: datetime | None) -> datetime:
    return utc(now) if now is not None else datetime.now(UTC).replace(tzinfo=None)


def check_text(value: str, what: str, limit: int, *, lines: bool = False) -> str:
    """``value`` stripped; :class:`ScheduledError` if longer than ``limit`` or holding control
    characters (line breaks too unless ``lines``)."""
    text = value.strip()
    if len(text) > limit:
        raise ScheduledError(f"{what} is longer than {limit} characters")
    # A subject or owner ends up in CSV exports and event payloads: a line break would forge rows.
    if (_CONTROL_BUT_LINES if lines else _CONTROL).search(text):
        raise ScheduledError(f"{what} must not contain control characters"
                             + ("" if lines else " or line breaks"))
    return text


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds") + "Z"


def _check_times(start_at: datetime, reminder_at: datetime | None, now: datetime) -> None:
    if start_at <= now:
        raise ScheduledError(f"start_at must be in the future ({_iso(start_at)} is not after "
                             f"{_iso(now)})")
    if reminder_at is not None and reminder_at > start_at:
        raise ScheduledError(f"reminder_at ({_iso(reminder_at)}) must not be after start_at "
                             f"({_iso(start_at)})")


def create_scheduled(
    session: Session,
    *,
    number: str,
    owner: str,
    start_at: datetime,
    region: str,
    subject: str = "",
    direction: str = "outbound",
    reminder_at: datetime | None = None,
    description: str = "",
    record_kind: str | None = None,
    record_id: str | None = None,
    now: datetime | None = None,
) -> ScheduledCall:
    """Add a scheduled call to ``session`` and return it.

    ``start_at`` must be after ``now`` (the current time by default) and ``reminder_at`` not
    after ``start_at`` (a reminder already due goes out at the next poll). ``number`` is any
    form a person writes; it is stored in E.164. A ``record_kind``/``record_id`` link must name
    an existing contact or lead. Raises :class:`ScheduledError` before anything is added.
    """
    stamp = _now(now)
    if direction not in DIRECTIONS:
        raise ScheduledError(f"direction must be outbound or inbound, not {direction!r}")
    e164 = normalise(number, region)
    if e164 is None:
        raise ScheduledError(f"{number!r} is not a valid phone number in region {region}")
    owner_id = check_text(owner, "owner", OWNER_LENGTH)
    if not owner_id:
        raise ScheduledError("owner must name the agent the call belongs to")
    start, reminder = utc(start_at), None if reminder_at is None else utc(reminder_at)
    _check_times(start, reminder, stamp)
    _check_link(session, record_kind, record_id)
    row = ScheduledCall(
        id=str(uuid.uuid4()), subject=check_text(subject, "subject", SUBJECT_LENGTH),
        direction=direction, number=e164, record_kind=record_kind, record_id=record_id,
        owner=owner_id, start_at=start, reminder_at=reminder, status="scheduled",
        description=check_text(description, "description", TEXT_LENGTH, lines=True),
        result="", created_at=stamp, updated_at=stamp, reminded_at=None,
    )
    session.add(row)
    session.flush()
    return row


def _check_link(session: Session, kind: str | None, record_id: str | None) -> None:
    if kind is None and record_id is None:
        return
    if kind not in ("contact", "lead") or not record_id:
        raise ScheduledError("a linked record needs record_kind (contact or lead) and record_id")
    model = Contact if kind == "contact" else Lead
    if session.get(model, record_id) is None:
        raise ScheduledError(f"no {kind} with id {record_id!r}")


def _open(session: Session, call_id: str, action: str) -> ScheduledCall:
    row = session.get(ScheduledCall, call_id, with_for_update=True)
    if row is None:
        raise ScheduledNotFound(f"no scheduled call with id {call_id!r}")
    if row.status != "scheduled":
        raise ScheduledConflict(f"the call is {row.status}: it cannot be {action}")
    return row


def complete_scheduled(session: Session, call_id: str, result: str = "", *,
                       now: datetime | None = None) -> ScheduledCall:
    """Mark the call completed with ``result`` (what came of it)."""
    text = check_text(result, "result", TEXT_LENGTH, lines=True)
    row = _open(session, call_id, "completed")
    row.status, row.result, row.updated_at = "completed", text, _now(now)
    session.flush()
    return row


def reschedule(session: Session, call_id: str, start_at: datetime,
               reminder_at: datetime | None = None, *,
               now: datetime | None = None) -> ScheduledCall:
    """Move the call to ``start_at`` (in the future) with a new reminder (None: none); the
    reminder goes out again even if the old one had."""
    stamp = _now(now)
    start, reminder = utc(start_at), None if reminder_at is None else utc(reminder_at)
    _check_times(start, reminder, stamp)
    row = _open(session, call_id, "rescheduled")
    row.start_at, row.reminder_at, row.reminded_at, row.updated_at = start, reminder, None, stamp
    session.flush()
    return row


def cancel_scheduled(session: Session, call_id: str, reason: str = "", *,
                     now: datetime | None = None) -> ScheduledCall:
    """Cancel the call; ``reason`` is kept as its result. Its reminder no longer goes out."""
    text = check_text(reason, "reason", TEXT_LENGTH, lines=True)
    row = _open(session, call_id, "cancelled")
    row.status, row.result, row.updated_at = "cancelled", text, _now(now)
    session.flush()
    return row


def list_scheduled(session: Session, *, owner: str | None = None, status: str | None = None,
                   start_from: datetime | None = None, start_to: datetime | None = None,
                   limit: int = 100) -> list[ScheduledCall]:
    """Scheduled calls by owner, status and start time (``start_from`` <= start <
    ``start_to``), earliest first, at most ``limit``."""
    if status is not None and status not in STATUSES:
        raise ScheduledError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    query = select(ScheduledCall)
    if owner is not None:
        query = query.where(ScheduledCall.owner == owner)
    if status is not None:
        query = query.where(ScheduledCall.status == status)
    if start_from is not None:
        query = query.where(ScheduledCall.start_at >= utc(start_from))
    if start_to is not None:
        query = query.where(ScheduledCall.start_at < utc(start_to))
    query = query.order_by(ScheduledCall.start_at, ScheduledCall.id).limit(limit)
    return list(session.scalars(query))


def due_reminders(session: Session, now: datetime | None = None,
                  limit: int = 100) -> list[ScheduledCall]:
    """Scheduled calls whose reminder is due at ``now`` and has not gone out, oldest first."""
    query = (select(ScheduledCall)
             .where(ScheduledCall.status == "scheduled",
                    ScheduledCall.reminder_at <= _now(now),
                    ScheduledCall.reminded_at.is_(None))
             .order_by(ScheduledCall.reminder_at, ScheduledCall.id).limit(limit))
    return list(session.scalars(query))


def mark_reminded(session: Session, ids: Collection[str], now: datetime | None = None) -> int:
    """Record that the reminders of ``ids`` went out; returns how many were still unmarked."""
    if not ids:
        return 0
    result = session.execute(
        update(ScheduledCall)
        .where(ScheduledCall.id.in_(list(ids)), ScheduledCall.reminded_at.is_(None))
        .values(reminded_at=_now(now)),
        execution_options={"synchronize_session": False},
    )
    return int(getattr(result, "rowcount", 0) or 0)


class ScheduledCalls:
    """The scheduled calls of the database behind ``engine``, one transaction per call.

    ``region`` (ISO country code) is where written numbers are dialled from. Every method
    blocks; the HTTP API calls them in worker threads. Bad input raises
    :class:`ScheduledError`, a finished call :class:`ScheduledConflict`, an unknown id
    :class:`ScheduledNotFound`.
    """

    def __init__(self, engine: Engine, region: str) -> None:
        self._engine = engine
        self._region = region

    def create(self, values: Mapping[str, object]) -> ScheduledCallView:
        """A new scheduled call from ``values`` (the keyword arguments of
        :func:`create_scheduled` but ``region`` and ``session``)."""
        with Session(self._engine) as session, session.begin():
            row = create_scheduled(session, region=self._region, **values)  # type: ignore[arg-type]
            return ScheduledCallView.of(row)

    def get(self, call_id: str) -> ScheduledCallView:
        """One scheduled call."""
        with Session(self._engine) as session:
            row = session.get(ScheduledCall, call_id)
            if row is None:
                raise ScheduledNotFound(f"no scheduled call with id {call_id!r}")
            return ScheduledCallView.of(row)

    def find(self, *, owner: str | None = None, status: str | None = None,
             start_from: datetime | None = None, start_to: datetime | None = None,
             limit: int = 100) -> Sequence[ScheduledCallView]:
        """As :func:`list_scheduled`."""
        with Session(self._engine) as session:
            rows = list_scheduled(session, owner=owner, status=status, start_from=start_from,
                                  start_to=start_to, limit=limit)
            return [ScheduledCallView.of(row) for row in rows]

    def complete(self, call_id: str, result: str) -> ScheduledCallView:
        """As :func:`complete_scheduled`."""
        with Session(self._engine) as session, session.begin():
            return ScheduledCallView.of(complete_scheduled(session, call_id, result))

    def reschedule(self, call_id: str, start_at: datetime,
                   reminder_at: datetime | None) -> ScheduledCallView:
        """As :func:`reschedule`."""
        with Session(self._engine) as session, session.begin():
            return ScheduledCallView.of(reschedule(session, call_id, start_at, reminder_at))

    def cancel(self, call_id: str, reason: str) -> ScheduledCallView:
        """As :func:`cancel_scheduled`."""
        with Session(self._engine) as session, session.begin():
            return ScheduledCallView.of(cancel_scheduled(session, call_id, reason))

    def due_reminders(self, now: datetime | None = None,
                      limit: int = 100) -> list[ScheduledCallView]:
        """As :func:`due_reminders`."""
        with Session(self._engine) as session:
            return [ScheduledCallView.of(row) for row in due_reminders(session, now, limit)]

    def mark_reminded(self, ids: Collection[str], now: datetime | None = None) -> int:
        """As :func:`mark_reminded`."""
        with Session(self._engine) as session, session.begin():
            return mark_reminded(session, ids, now)


OnReminder = Callable[[ScheduledCallView], Awaitable[None] | None]


class ReminderLoop:
    """Every ``interval`` seconds, hands each due reminder to ``on_reminder`` once.

    The database is read and written in a worker thread. A reminder is marked as sent after
    its callback returned (or raised, which is logged): a callback that keeps failing does not
    repeat every poll, and a PBX stopped between the two sends it again at the next start.
    ``on_reminder`` may be a plain function or a coroutine function.
    """

    def __init__(self, store: ScheduledCalls, on_reminder: OnReminder, *,
                 interval: float = 5.0, batch: int = 100,
                 clock: Callable[[], datetime] | None = None) -> None:
        if interval <= 0 or batch < 1:
            raise ValueError("interval must be positive and batch at least 1")
        self._store = store
        self._on_reminder = on_reminder
        self._interval = interval
        self._batch = batch
        self._clock = clock or (lambda: datetime.now(UTC).replace(tzinfo=None))
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="reminders")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start polling on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop polling (a poll under way is abandoned) and release the worker thread."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def run_once(self) -> int:
        """Send every reminder due now (in batches); returns how many went out."""
        loop = asyncio.get_running_loop()
        sent = 0
        while True:
            now = self._clock()
            due = await loop.run_in_executor(self._pool, self._store.due_reminders, now,
                                             self._batch)
            for row in due:
                try:
                    outcome = self._on_reminder(row)
                    if inspect.isawaitable(outcome):
                        await outcome
                except Exception:
                    logger.exception("reminder of scheduled call %s failed", row.id)
            if due:
                ids = [row.id for row in due]
                await loop.run_in_executor(self._pool, self._store.mark_reminded, ids, now)
                sent += len(due)
            if len(due) < self._batch:
                return sent

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # the database may be briefly unavailable: try at the next poll
                logger.exception("reading due reminders failed")
            await asyncio.sleep(self._interval)
