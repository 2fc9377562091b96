"""The outbox: call events waiting for webhooks, and the store the webhook worker drains.

Theory of operation. The record writer (:mod:`crmsync.writer`) calls :func:`enqueue` inside
the transaction that writes the call rows, so an event exists exactly when its call row does:
one ``outbox`` row per event (its JSON body, its idempotency key ``<call id>:<event>``, or
``<call id>:call.updated:<revision>`` for a change after the record was final) and one
``webhook_deliveries`` row per webhook that wants it. A delivery is ``pending`` until a
POST of it gets a 2xx (``delivered``) or it has failed ``max_attempts`` times (``dead``; a
replay makes it pending again).

The worker claims due rows by moving their ``next_attempt_at`` past the POST's timeout (a
lease) in the same statement that selects them, so two workers sharing a database never send
a row at the same time, and a row whose worker died becomes due again when its lease lapses.
The outcome of each POST is written afterwards; a crash in between means the row is sent once
more with the same idempotency key (at-least-once delivery).

Everything here blocks: call it from a worker thread, never from the event loop.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from sqlalchemy import CursorResult, Engine, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from .models import OutboxEvent, WebhookAttempt, WebhookDelivery, insert_for

__all__ = [
    "EVENTS",
    "AttemptInfo",
    "Claim",
    "DeliveryInfo",
    "Due",
    "OutboxStore",
    "Outcome",
    "PendingEvent",
    "RetryPolicy",
    "RetrySpec",
    "Synced",
    "Transition",
    "WebhookSpec",
    "enqueue",
    "idempotency_key",
    "iso_utc",
    "payload_json",
    "retry_delay",
    "subscribers_of",
    "utcnow",
]

EVENTS: Final = (
    "call.started", "call.answered", "call.ended", "call.missed", "recording.ready",
    "call.updated",
)
"""Every event a webhook can receive."""

_outbox: Table = OutboxEvent.__table__  # type: ignore[assignment]
_deliveries: Table = WebhookDelivery.__table__  # type: ignore[assignment]
_attempts: Table = WebhookAttempt.__table__  # type: ignore[assignment]

_CHUNK = 500  # bound parameters per IN (...): far below SQLite's limit
_ERROR_LENGTH = 512


class WebhookSpec(Protocol):
    """What the outbox needs to know of a webhook (``pbx.config_crm.Webhook`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def secret(self) -> str: ...
    @property
    def events(self) -> Collection[str]: ...
    @property
    def timeout(self) -> float: ...
    @property
    def enabled(self) -> bool: ...


class RetrySpec(Protocol):
    """The back-off of failed deliveries (``pbx.config_crm.RetrySection`` is one)."""

    @property
    def max_attempts(self) -> int: ...
    @property
    def first_delay(self) -> float: ...
    @property
    def max_delay(self) -> float: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A :class:`RetrySpec` with the defaults of the ``crm.retry`` config section."""

    max_attempts: int = 12
    first_delay: float = 1.0
    max_delay: float = 600.0


def retry_delay(attempts: int, retry: RetrySpec, jitter: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt.

    ``first_delay * 2**(attempts-1)``, capped at ``max_delay``, less up to 20 % (``jitter`` in
    [0, 1)) so that deliveries failed together by one outage do not all return at once.
    """
    exponent = min(max(attempts - 1, 0), 60)  # 2**60 s is beyond any max_delay
    delay = min(retry.max_delay, retry.first_delay * 2.0**exponent)
    return delay * (1.0 - 0.2 * min(max(jitter, 0.0), 1.0))


def utcnow() -> datetime:
    """The current time as the database stores it: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def iso_utc(value: datetime) -> str:
    """``2026-11-21T09:00:00.000Z``: ISO 8601 in UTC (naive values are taken as UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"


def idempotency_key(call_id: str, event: str, revision: int | None = None) -> str:
    """The key a receiver deduplicates by: the same for every webhook and every attempt.

    ``<call id>:<event>``; a ``call.updated`` event happens once per revision of the record,
    so its key ends with the revision: ``<call id>:call.updated:<revision>``.
    """
    return f"{call_id}:{event}" if revision is None else f"{call_id}:{event}:{revision}"


def subscribers_of(webhooks: Iterable[WebhookSpec]) -> dict[str, tuple[str, ...]]:
    """Event name to the names of the webhooks that want it (enabled or not: a disabled
    webhook's events are stored and wait for it)."""
    subscribers: dict[str, list[str]] = {}
    for hook in webhooks:
        for name in hook.events:
            subscribers.setdefault(name, []).append(hook.name)
    return {name: tuple(hooks) for name, hooks in subscribers.items()}


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """A call event the writer has seen and not yet written to the outbox."""

    event: str
    call_id: str
    occurred_at: datetime
    call: Mapping[str, Any]
    """The call row as it was right after the event (column name to value)."""
    legs: Sequence[Mapping[str, Any]] | None = None
    """The call's legs (``call.ended``, ``call.missed``, ``call.updated``); None: not sent."""
    revision: int | None = None
    """The record's revision a ``call.updated`` event is about (part of its key)."""

    @property
    def key(self) -> str:
        return idempotency_key(self.call_id, self.event, self.revision)


def _json_value(value: object) -> object:
    return iso_utc(value) if isinstance(value, datetime) else value


def payload_json(pending: PendingEvent) -> str:
    """The JSON body of an event: ``{"event", "id", "occurred_at", "call": {...}}``, and
    ``"legs": [{...}, ...]`` for the events that carry them."""
    body: dict[str, object] = {
        "event": pending.event,
        "id": pending.key,
        "occurred_at": iso_utc(pending.occurred_at),
        "call": {name: _json_value(value) for name, value in pending.call.items()},
    }
    if pending.legs is not None:
        body["legs"] = [{name: _json_value(value) for name, value in leg.items()}
                        for leg in pending.legs]
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def enqueue(session: Session, events: Sequence[PendingEvent],
            subscribers: Mapping[str, Sequence[str]], now: datetime) -> int:
    """Write ``events`` and a pending delivery for each webhook subscribed to each (from
    ``subscribers``, event name to webhook names) in ``session``'s transaction.

    Writing an event twice changes nothing (its key is unique). Returns the number of
    deliveries written (or found there already).
    """
    wanted = [p for p in events if subscribers.get(p.event)]
    if not wanted:
        return 0
    rows = [
        {"event": p.event, "call_id": p.call_id, "idempotency_key": p.key,
         "payload": payload_json(p), "created_at": now}
        for p in wanted
    ]
    stmt = insert_for(session, _outbox).on_conflict_do_nothing(index_elements=["idempotency_key"])
    session.execute(stmt, rows)
    ids: dict[str, int] = {}
    keys = [p.key for p in wanted]
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start:start + _CHUNK]
        found = session.execute(
            select(_outbox.c.idempotency_key, _outbox.c.id)
            .where(_outbox.c.idempotency_key.in_(chunk))
        )
        ids.update((key, outbox_id) for key, outbox_id in found)
    deliveries = [
        {"outbox_id": ids[p.key], "webhook": hook, "status": "pending", "attempts": 0,
         "next_attempt_at": now, "created_at": now}
        for p in wanted
        for hook in subscribers[p.event]
    ]
    stmt = insert_for(session, _deliveries).on_conflict_do_nothing(
        index_elements=["outbox_id", "webhook"]
    )
    session.execute(stmt, deliveries)
    return len(deliveries)


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery claimed for one POST."""

    delivery_id: int
    webhook: str
    event: str
    key: str
    payload: str
    attempts: int
    """Attempts made before this one."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What came of one POST of a delivery."""

    due: Due
    at: datetime
    status_code: int | None
    error: str | None
    """Why it failed; None for a 2xx."""
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Claim:
    """Claim up to ``limit`` due deliveries of ``webhook``, leased for ``lease`` seconds."""

    webhook: str
    limit: int
    lease: float


@dataclass(frozen=True, slots=True)
class Transition:
    """A delivery that became delivered or dead, or was scheduled for another attempt."""

    outcome: Outcome
    status: str
    attempts: int
    next_attempt_at: datetime | None


@dataclass(frozen=True, slots=True)
class Synced:
    claimed: list[Due]
    transitions: list[Transition]
    next_due: datetime | None
    """When the earliest pending row of the webhooks not at their limit is due (None: none)."""


@dataclass(frozen=True, slots=True)
class DeliveryInfo:
    """A delivery as the API shows it."""

    id: int
    webhook: str
    event: str
    call_id: str
    idempotency_key: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    """One entry of the delivery log."""

    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


_REPLAYABLE = frozenset(("dead", "delivered"))


class OutboxStore:
    """Blocking access to the outbox for the webhook worker and the API."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def sync(self, outcomes: Sequence[Outcome], *, retry: RetrySpec,
             jitter: Iterable[float], claims: Sequence[Claim] = (),
             busy: Collection[int] = (), release: Collection[int] = ()) -> Synced:
        """In one transaction: record ``outcomes`` (and their log entries), give back the
        claims of ``release`` (due at once, no attempt counted), and claim new due rows.

        ``busy`` are the deliveries being sent right now; they are never claimed twice.
        ``jitter`` yields one number in [0, 1) per failed outcome.
        """
        now = utcnow()
        with Session(self._engine) as session, session.begin():
            transitions = self._record(session, outcomes, retry, iter(jitter), now)
            if release:
                for chunk in _chunks(list(release)):
                    session.execute(
                        update(_deliveries)
                        .where(_deliveries.c.id.in_(chunk), _deliveries.c.status == "pending")
                        .values(next_attempt_at=now)
                    )
            claimed: list[Due] = []
            open_hooks: list[str] = []
            for claim in claims:
                got = self._claim(session, claim, busy, now)
                claimed += got
                if len(got) < claim.limit:
                    open_hooks.append(claim.webhook)
            next_due = None
            if open_hooks:
                skip = [*busy, *(d.delivery_id for d in claimed)]
                query = select(func.min(_deliveries.c.next_attempt_at)).where(
                    _deliveries.c.status == "pending", _deliveries.c.webhook.in_(open_hooks)
                )
                if skip:
                    query = query.where(_deliveries.c.id.not_in(skip))
                next_due = session.execute(query).scalar()
        return Synced(claimed, transitions, next_due)

    def _record(self, session: Session, outcomes: Sequence[Outcome], retry: RetrySpec,
                jitter: Any, now: datetime) -> list[Transition]:
        if not outcomes:
            return []
        transitions: list[Transition] = []
        params: list[dict[str, Any]] = []
        for outcome in outcomes:
            attempts = outcome.due.attempts + 1
            next_at: datetime | None = None
            if outcome.ok:
                status = "delivered"
            elif attempts >= retry.max_attempts:
                status = "dead"
            else:
                status = "pending"
                delay = retry_delay(attempts, retry, next(jitter, 0.0))
                next_at = now + timedelta(seconds=delay)
            transitions.append(Transition(outcome, status, attempts, next_at))
            params.append({
                "b_id": outcome.due.delivery_id, "b_status": status, "b_attempts": attempts,
                "b_next": next_at or now, "b_code": outcome.status_code,
                "b_error": _clip(outcome.error),
                "b_delivered": outcome.at if outcome.ok else None,
            })
        # Only a pending row changes: a row another worker already delivered stays delivered.
        session.execute(
            update(_deliveries)
            .where(_deliveries.c.id == bindparam("b_id"), _deliveries.c.status == "pending")
            .values(status=bindparam("b_status"), attempts=bindparam("b_attempts"),
                    next_attempt_at=bindparam("b_next"), last_status_code=bindparam("b_code"),
                    last_error=bindparam("b_error"), delivered_at=bindparam("b_delivered")),
            params,
        )
        session.execute(insert(_attempts), [
            {"delivery_id": o.due.delivery_id, "at": o.at, "status_code": o.status_code,
             "error": _clip(o.error), "duration_ms": o.duration_ms}
            for o in outcomes
        ])
        return transitions

    def _claim(self, session: Session, claim: Claim, busy: Collection[int],
               now: datetime) -> list[Due]:
        if claim.limit <= 0:
            return []
        due = (
            select(_deliveries.c.id)
            .where(_deliveries.c.status == "pending", _deliveries.c.webhook == claim.webhook,
                   _deliveries.c.next_attempt_at <= now)
            .order_by(_deliveries.c.next_attempt_at, _deliveries.c.id)
            .limit(claim.limit)
        )
        if busy:
            due = due.where(_deliveries.c.id.not_in(list(busy)))
        if session.get_bind().dialect.name == "postgresql":
            # Several PBX nodes on one database: each takes rows the others have not locked.
            due = due.with_for_update(skip_locked=True)
        # A CTE, not ``id IN (subquery)``: PostgreSQL may run such a subquery once per row it
        # updates, and its LIMIT then bounds each run instead of the whole claim. The outer
        # conditions are checked again on the row that gets updated, so a row another worker
        # leased in the meantime is not taken.
        chosen = due.cte("due_deliveries")
        rows = session.execute(
            update(_deliveries)
            .where(_deliveries.c.id == chosen.c.id,
                   _deliveries.c.status == "pending", _deliveries.c.next_attempt_at <= now)
            .values(next_attempt_at=now + timedelta(seconds=claim.lease))
            .returning(_deliveries.c.id, _deliveries.c.outbox_id, _deliveries.c.attempts)
        ).all()
        if not rows:
            return []
        events = {
            row.id: row
            for row in session.execute(
                select(_outbox.c.id, _outbox.c.event, _outbox.c.idempotency_key,
                       _outbox.c.payload)
                .where(_outbox.c.id.in_({r.outbox_id for r in rows}))
            )
        }
        claimed = []
        for delivery_id, outbox_id, attempts in sorted(rows):
            ev = events[outbox_id]
            claimed.append(Due(delivery_id, claim.webhook, ev.event, ev.idempotency_key,
                               ev.payload, attempts))
        return claimed

    def replay(self, delivery_ids: Collection[int] | None = None, *,
               statuses: Collection[str] = ("dead",), webhook: str | None = None,
               event: str | None = None, call_id: str | None = None) -> list[int]:
        """Make matching deliveries pending and due now, with their attempts reset; returns
        their ids.

        Only ``dead`` and ``delivered`` rows can be replayed (a pending one is on its way
        already). A replayed delivery is sent with its original idempotency key, so a
        receiver that deduplicates ignores one it has already processed.
        """
        wanted = set(statuses)
        if not wanted or not wanted <= _REPLAYABLE:
            raise ValueError("only dead or delivered deliveries can be replayed")
        query = select(_deliveries.c.id).where(_deliveries.c.status.in_(wanted))
        if delivery_ids is not None:
            if not delivery_ids:
                return []
            query = query.where(_deliveries.c.id.in_(list(delivery_ids)))
        if webhook is not None:
            query = query.where(_deliveries.c.webhook == webhook)
        if event is not None or call_id is not None:
            of_outbox = select(_outbox.c.id)
            if event is not None:
                of_outbox = of_outbox.where(_outbox.c.event == event)
            if call_id is not None:
                of_outbox = of_outbox.where(_outbox.c.call_id == call_id)
            query = query.where(_deliveries.c.outbox_id.in_(of_outbox.scalar_subquery()))
        now = utcnow()
        with Session(self._engine) as session, session.begin():
            ids = sorted(session.execute(query).scalars())
            for chunk in _chunks(ids):
                session.execute(
                    update(_deliveries)
                    .where(_deliveries.c.id.in_(chunk), _deliveries.c.status.in_(wanted))
                    .values(status="pending", attempts=0, next_attempt_at=now,
                            delivered_at=None)
                )
        return ids

    def prune_events(self, before: datetime, batch: int = 5000) -> int:
        """Delete deliveries delivered before ``before`` (with their log) and events left with
        no delivery; returns how many events went. Dead and pending ones stay (they still have
        something to say or to send). In batches, each its own transaction."""
        gone = 0
        while True:
            with Session(self._engine) as session, session.begin():
                ids = list(session.scalars(
                    select(_deliveries.c.id)
                    .where(_deliveries.c.status == "delivered",
                           _deliveries.c.delivered_at < before)
                    .limit(batch)))
                if ids:
                    session.execute(delete(_attempts).where(_attempts.c.delivery_id.in_(ids)))
                    session.execute(delete(_deliveries).where(_deliveries.c.id.in_(ids)))
                orphans = list(session.scalars(
                    select(_outbox.c.id)
                    .where(_outbox.c.created_at < before,
                           ~select(_deliveries.c.id)
                           .where(_deliveries.c.outbox_id == _outbox.c.id).exists())
                    .limit(batch)))
                if orphans:
                    session.execute(delete(_outbox).where(_outbox.c.id.in_(orphans)))
                gone += len(orphans)
            if len(ids) < batch and len(orphans) < batch:
                return gone

    def prune(self, before: datetime) -> int:
        """Delete the log entries of deliveries delivered before ``before``; returns how many.

        Dead and pending deliveries keep their whole log: it says why they are not through.
        """
        done = select(_deliveries.c.id).where(
            _deliveries.c.status == "delivered", _deliveries.c.delivered_at < before
        )
        with Session(self._engine) as session, session.begin():
            result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                delete(_attempts).where(_attempts.c.delivery_id.in_(done.scalar_subquery()))
            )
            return result.rowcount or 0

    def deliveries(self, *, status: str | None = None, webhook: str | None = None,
                   call_id: str | None = None, limit: int = 100,
                   before_id: int | None = None) -> list[DeliveryInfo]:
        """Deliveries newest first (``before_id`` pages on), optionally filtered."""
        d, o = _deliveries.c, _outbox.c
        query = (
            select(d.id, d.webhook, o.event, o.call_id, o.idempotency_key, d.status,
                   d.attempts, d.next_attempt_at, d.last_status_code, d.last_error,
                   d.delivered_at, d.created_at)
            .join_from(_deliveries, _outbox, d.outbox_id == o.id)
            .order_by(d.id.desc())
            .limit(max(1, min(limit, 1000)))
        )
        if status is not None:
            query = query.where(d.status == status)
        if webhook is not None:
            query = query.where(d.webhook == webhook)
        if call_id is not None:
            query = query.where(o.call_id == call_id)
        if before_id is not None:
            query = query.where(d.id < before_id)
        with Session(self._engine) as session:
            return [DeliveryInfo(**row._asdict()) for row in session.execute(query)]

    def attempts(self, delivery_id: int) -> list[AttemptInfo]:
        """The delivery log of one delivery, oldest first."""
        a = _attempts.c
        with Session(self._engine) as session:
            return [
                AttemptInfo(*row)
                for row in session.execute(
                    select(a.at, a.status_code, a.error, a.duration_ms)
                    .where(a.delivery_id == delivery_id)
                    .order_by(a.id)
                )
            ]


def _chunks(values: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start:start + _CHUNK]


def _clip(error: str | None) -> str | None:
    return error if error is None or len(error) <= _ERROR_LENGTH else error[:_ERROR_LENGTH]
