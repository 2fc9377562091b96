"""Folds call-record events into one row per call, written in batches.

A call emits a handful of events (started, legs, answered, ended); writing each as its own
statement costs the writer thread more than the whole SIP exchange costs the event loop. So
the events of a call are folded in memory into the row they describe, and
:meth:`CallRecordFolder.flush` (called every 200 ms) turns every row that changed into one
upsert executemany, and every leg that changed into one more. A record is therefore in the
database at most a fraction of a second after each event, and a call that starts and ends
between two flushes costs a single row write.

The row carries the fields of a CRM's Calls module (:mod:`crmsync.callfields`): type, status
and owner are worked out in the folder at every change; the link to the contact or lead of the
outside party's number is looked up in the write job, on the writer thread, with one query for
every row of the batch not linked yet; the subject is given when the call ends, naming that
record when there is one. What people write through the API is never overwritten: the folder
never writes ``purpose``, ``result``, ``description`` or ``revision``, and writes a subject, a
link or a cost only where the row has none.

The legs of a call (:class:`pbx.records.CallLeg`: ring-group members, queue offers, transfers,
callback attempts) are kept with its row until the row is final; legs still open when the call
ends end with it.

With webhooks configured (:meth:`CallRecordFolder.set_webhooks`), the same job also writes
the outbox rows of the events of the batch (:mod:`crmsync.outbox`), in the same transaction as
the call rows: a record and its events are committed together or not at all. Each event is
written once, with the call row as it was right after it, even when the whole call fell
between two flushes:

- ``call.started``, ``call.answered``: the call began, someone answered it;
- ``call.ended``: the call is over; the payload is its full, final record and its legs;
- ``call.missed``: an inbound or internal call nobody answered (disposition ``no_answer``,
  which includes queue callers who never reached an agent, or ``cancelled``: the caller gave
  up while it rang), with its legs. An outbound call nobody answered is only a ``call.ended``;
- ``recording.ready``: the call ended with a recording (``recording_path``);
- ``call.updated``: the record changed after it was final (a queue's result or a leg that came
  after the caller hung up): its revision went up by one; the payload is the whole record as
  stored now, and its legs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import phonenumbers
from sqlalchemy import Table, bindparam, case, func, update
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from pbx.records import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallLeg,
    CallQueued,
    CallStarted,
    CallTransferred,
    RecordingSkipped,
)

from . import callfields
from .callstore import (
    Link,
    apply_late,
    find_links,
    leg_view,
    read_legs,
    record_names,
    updated_event,
    upsert_legs,
)
from .contacts import normalise
from .models import Call, CallLegRecord, insert_for
from .outbox import PendingEvent, WebhookSpec, enqueue, subscribers_of, utcnow

logger = logging.getLogger(__name__)

_calls: Table = Call.__table__  # type: ignore[assignment]
_legs: Table = CallLegRecord.__table__  # type: ignore[assignment]

Row = dict[str, Any]

# The columns the folder keeps and writes. Not here: subject, who_kind and who_id (the write
# job gives them), and what only people and imports write. ``cost`` is written only where
# the row has none (an outside call's price by its trunk's rates; a person may set another).
_COLUMNS: Final = (
    "id", "sip_call_id", "direction", "from_number", "from_name", "to_number", "caller_user",
    "callee_user", "answered_by", "started_at", "answered_at", "ended_at", "duration",
    "ring_seconds", "disposition", "hangup_cause", "hangup_by", "sip_code", "recording_path",
    "recording_seconds", "transferred_to", "transfers", "keys", "queue", "queue_result",
    "queue_wait", "queue_rule", "callback_number", "callback_attempts", "recording_state",
    "recording_deleted_at", "legal_hold", "call_type", "status", "owner", "cost",
)
# What the job reads back for the events' payloads: the columns the folder does not keep.
_STORED: Final = ("subject", "who_kind", "who_id", "purpose", "result", "description", "cost",
                  "revision")


def _derive(row: Row) -> None:
    row["call_type"] = callfields.call_type(row)
    row["status"] = callfields.call_status(row)
    row["owner"] = callfields.call_owner(row)


def _leg_row(event: CallLeg) -> Row:
    return {
        "id": event.leg_id, "call_id": event.call_id, "kind": event.kind,
        "user_id": event.user, "number": event.number, "started_at": event.started_at,
        "answered_at": event.answered_at, "ended_at": event.ended_at, "result": event.result,
        "sip_code": event.sip_code, "queue": event.queue,
    }


@functools.lru_cache(maxsize=8192)
def _e164(number: str, region: str) -> str | None:
    # The same callers call again and again; parsing a number is the dear part of a link.
    return normalise(number, region)


@dataclass(slots=True)
class _Plan:
    """What a write job sends, worked out on its first run (a retried job sends the same)."""

    params: list[Row]
    named: dict[str, tuple[tuple[str, str] | None, str]]
    """Of each final row: the record its subject names (None: none) and that subject."""


class CallRecordFolder:
    """Keeps the row of every call in progress; hands out write jobs for what changed.

    ``on_outbox_commit`` is called (from the writer thread) after a job that wrote outbox rows
    has been committed: the place to wake the webhook worker. ``region`` (ISO country code) is
    where national numbers are dialled: the outside party's number is matched to contacts and
    leads in E.164.
    """

    def __init__(self, on_outbox_commit: Callable[[], None] | None = None,
                 region: str = "US") -> None:
        region = region.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {region!r}: use an ISO country code such as JP")
        self._region = region
        self.lookup_order: tuple[str, ...] = ("contact", "lead")
        """Which kinds of record a call's number is linked to, first found first
        (``crm.lookup_order``; replaced whole on a reload)."""
        self._rows: dict[str, Row] = {}
        self._dirty: set[str] = set()
        self._late: dict[str, Row] = {}
        self._legs: dict[str, dict[str, Row]] = {}
        """The legs of each row in memory, by leg id."""
        self._leg_writes: dict[str, Row] = {}
        """Legs changed since the last flush, by leg id."""
        self._late_legs: dict[str, dict[str, Row]] = {}
        self._adopted: set[str] = set()
        self._seeds: dict[str, tuple[str, str]] = {}
        self._events: list[PendingEvent] = []
        self._subscribers: Mapping[str, tuple[str, ...]] = {}
        self._on_outbox_commit = on_outbox_commit
        # The links found so far of rows not final yet. Read and written only by write jobs,
        # which the writer thread runs one at a time, in the order they were handed out.
        self._links: dict[str, Link] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def set_webhooks(self, webhooks: Iterable[WebhookSpec]) -> None:
        """The webhooks whose events go to the outbox from now on. A disabled one's events are
        stored too: they wait for it to be enabled again (the worker sends to enabled ones)."""
        # Replaced whole, never changed in place: a job already handed out keeps its own.
        self._subscribers = subscribers_of(webhooks)

    def adopt(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Take back rows of calls that were in progress when the PBX stopped (read from the
        database at start), so that their events replayed from the journal, or their ending
        by the recovery, apply to the whole row."""
        for row in rows:
            cid = row["id"]
            kept = {name: row.get(name) for name in _COLUMNS}
            self._rows[cid] = kept
            self._adopted.add(cid)  # legs written before the stop are in the database only
            if row.get("who_kind") is not None and row.get("who_id") is not None:
                self._seeds[cid] = (row["who_kind"], row["who_id"])

    def in_progress(self) -> list[str]:
        """Ids of calls whose row is not final yet."""
        return [cid for cid, row in self._rows.items() if row["ended_at"] is None]

    def row(self, call_id: str) -> Row | None:
        """A copy of the row of a call not yet final, or None (used by the start-up recovery;
        keep it)."""
        row = self._rows.get(call_id)
        return dict(row) if row is not None else None

    def _note(self, name: str, call_id: str, at: datetime, row: Row) -> None:
        # A copy: the row goes on changing, the event keeps the call as it was.
        self._events.append(PendingEvent(name, call_id, at, dict(row)))

    def add(self, event: CallEvent) -> None:
        """Fold ``event`` in; its texts must fit their columns already (:func:`crmsync.fit.fit`,
        which the PBX applies to every event before anything else sees it)."""
        subscribers = self._subscribers
        if isinstance(event, CallStarted):
            new_row: Row = {
                "id": event.call_id,
                "sip_call_id": event.sip_call_id,
                "direction": event.direction,
                "from_number": event.from_number,
                "from_name": event.from_name,
                "to_number": event.to_number,
                "caller_user": event.caller_user,
                "callee_user": event.callee_user,
                "answered_by": None,
                "started_at": event.started_at,
                "answered_at": None,
                "ended_at": None,
                "duration": None,
                "ring_seconds": None,
                "disposition": "in_progress",
                "hangup_cause": "",
                "hangup_by": None,
                "sip_code": None,
                "recording_path": None,
                "recording_seconds": None,
                "transferred_to": None,
                "transfers": 0,
                "keys": None,
                "queue": None,
                "queue_result": None,
                "queue_wait": None,
                "queue_rule": None,
                "callback_number": None,
                "callback_attempts": 0,
                "recording_state": None,
                "recording_deleted_at": None,
                "legal_hold": False,
                "cost": None,
            }
            _derive(new_row)
            self._rows[event.call_id] = new_row
            self._dirty.add(event.call_id)
            if "call.started" in subscribers:
                self._note("call.started", event.call_id, event.started_at, new_row)
            return
        if isinstance(event, CallLeg):
            self._add_leg(event)
            return
        row = self._rows.get(event.call_id)
        live = row is not None
        if row is None:
            # The row was written final already (a queue's result after the caller hung
            # up): the change goes out as an update of that row.
            if isinstance(event, CallTransferred):
                return
            row = self._late.setdefault(event.call_id, {})
        if isinstance(event, CallAnswered):
            row["answered_at"] = event.answered_at
            row["answered_by"] = event.answered_by
            row["ring_seconds"] = event.ring_seconds
        elif isinstance(event, CallQueued):
            row.update(queue=event.queue, queue_result=event.result,
                       queue_wait=event.waited, queue_rule=event.rule)
            if event.callback_number is not None:
                row["callback_number"] = event.callback_number
                row["callback_attempts"] = event.callback_attempts
        elif isinstance(event, RecordingSkipped):
            row["recording_state"] = event.reason
        elif isinstance(event, CallTransferred):
            row["transferred_to"] = event.to_user
            row["transfers"] += 1
        elif isinstance(event, CallEnded):
            row.update(
                ended_at=event.ended_at,
                disposition=event.disposition,
                hangup_cause=event.hangup_cause,
                hangup_by=event.hangup_by,
                sip_code=event.sip_code,
                duration=event.duration,
                ring_seconds=event.ring_seconds,
                recording_path=event.recording_path,
                recording_seconds=event.recording_seconds,
                keys=event.keys or None,
            )
            if event.cost is not None:
                row["cost"] = event.cost  # an outside call's price (its trunk's rates)
        if not live:
            return  # the late path works the derived fields out from the stored row
        _derive(row)
        self._dirty.add(event.call_id)
        # The PBX answering (an IVR, a queue's music) is nobody's answer: the event goes out
        # when a person answers.
        if isinstance(event, CallAnswered) and event.answered_by is not None \
                and "call.answered" in subscribers:
            self._note("call.answered", event.call_id, event.answered_at, row)
        elif isinstance(event, CallEnded):
            self._end_legs(event.call_id, event.ended_at)
            if subscribers:
                self._note_end(event, row, subscribers)

    def _add_leg(self, event: CallLeg) -> None:
        leg = _leg_row(event)
        row = self._rows.get(event.call_id)
        if row is None:
            self._late_legs.setdefault(event.call_id, {})[leg["id"]] = leg
            return
        if leg["ended_at"] is None and row["ended_at"] is not None:
            leg["ended_at"] = row["ended_at"]  # the call ended already: so did its legs
        self._legs.setdefault(event.call_id, {})[leg["id"]] = leg
        self._leg_writes[leg["id"]] = leg

    def _end_legs(self, call_id: str, ended_at: datetime) -> None:
        for leg in self._legs.get(call_id, {}).values():
            if leg["ended_at"] is None:
                leg["ended_at"] = ended_at
                self._leg_writes[leg["id"]] = leg

    def _note_end(self, event: CallEnded, row: Row,
                  subscribers: Mapping[str, tuple[str, ...]]) -> None:
        snapshot = dict(row)
        legs = [leg_view(leg) for leg in
                sorted(self._legs.get(event.call_id, {}).values(),
                       key=lambda leg: (leg["started_at"], leg["id"]))]
        names = ["call.ended"]
        if callfields.is_missed(row):
            names.append("call.missed")
        if row["recording_path"]:
            names.append("recording.ready")
        for name in names:
            if name in subscribers:
                self._events.append(PendingEvent(
                    name, event.call_id, event.ended_at, snapshot,
                    legs if name != "recording.ready" else None))

    def flush(self) -> Callable[[Session], None] | None:
        """A writer job upserting every row and leg that changed since the last flush (and
        writing the outbox rows of its events), or None."""
        if not (self._dirty or self._late or self._leg_writes or self._late_legs):
            return None
        late, self._late = self._late, {}
        late_legs, self._late_legs = self._late_legs, {}
        events, self._events = self._events, []
        seeds, self._seeds = self._seeds, {}
        subscribers = self._subscribers
        on_commit = self._on_outbox_commit
        rows = [dict(self._rows[cid]) for cid in self._dirty]
        legs = [dict(leg) for leg in self._leg_writes.values()]
        self._leg_writes = {}
        recovered: dict[str, datetime] = {}
        for cid in self._dirty:
            ended_at = self._rows[cid]["ended_at"]
            if ended_at is not None:
                # Final: nothing will change it again.
                del self._rows[cid]
                self._legs.pop(cid, None)
                if cid in self._adopted:
                    self._adopted.discard(cid)
                    recovered[cid] = ended_at
        self._dirty = set()
        plan: _Plan | None = None

        def job(session: Session) -> None:
            nonlocal plan
            if plan is None:
                plan = self._plan(session, rows, seeds)
            stored = _upsert(session, plan.params, returning=bool(events or plan.named)) \
                if rows else {}
            if plan.named:
                _rename(session, plan, stored)
            upsert_legs(session, legs)
            recovered_legs = _end_recovered(session, recovered) if recovered else {}
            pending = _complete(events, stored, recovered_legs)
            if late or late_legs:
                now = utcnow()
                for cid in sorted(set(late) | set(late_legs)):
                    changed = apply_late(session, cid, late.get(cid, {}),
                                         list(late_legs.get(cid, {}).values()))
                    if changed is not None and "call.updated" in subscribers:
                        pending.append(updated_event(*changed, now))
            # After the call rows, in their transaction: an event never exists without its
            # record, and a record is never committed without its events.
            if pending and enqueue(session, pending, subscribers, utcnow()) and on_commit:
                sa_event.listen(session, "after_commit", committed, once=True)

        def committed(_session: Session) -> None:
            assert on_commit is not None
            try:
                on_commit()
            except Exception:
                # The rows are committed; a worker that missed this finds them at its poll.
                logger.exception("outbox commit hook failed")

        return job

    def _plan(self, session: Session, rows: Sequence[Row],
              seeds: Mapping[str, tuple[str, str]]) -> _Plan:
        """(Writer thread.) Link the rows not linked yet, in one query, and give the final
        rows their subject."""
        links = self._links
        if seeds:
            names = record_names(session, seeds.values())
            for cid, (kind, record_id) in seeds.items():
                if kind in ("contact", "lead") and cid not in links:
                    links[cid] = Link(kind, record_id,  # type: ignore[arg-type]
                                      names.get((kind, record_id), ""))
        wanted: dict[str, str] = {}
        for row in rows:
            number = callfields.outside_number(row)
            if row["id"] not in links and number is not None:
                e164 = _e164(number, self._region)
                if e164 is not None:
                    wanted[row["id"]] = e164
        found = find_links(session, wanted.values(),
                           self.lookup_order) if wanted else {}  # type: ignore[arg-type]
        params: list[Row] = []
        named: dict[str, tuple[tuple[str, str] | None, str]] = {}
        for row in rows:
            cid = row["id"]
            fresh = found.get(wanted[cid]) if cid in wanted else None
            if fresh is not None:
                links[cid] = fresh
            link = links.get(cid)
            subject = None
            if row["ended_at"] is not None:
                subject = callfields.subject(row, link.name if link else None)
                named[cid] = ((link.kind, link.id) if link else None, subject)
                links.pop(cid, None)
            params.append({
                **row,
                # Only a link found now is sent; the statement keeps one the row has.
                "who_kind": fresh.kind if fresh is not None else None,
                "who_id": fresh.id if fresh is not None else None,
                "subject": subject,
            })
        return _Plan(params, named)


def _upsert(session: Session, params: list[Row], *, returning: bool) -> dict[str, Row]:
    """One upsert of every row; with ``returning``, the stored columns the folder does not
    keep, by call id (for the payloads of the batch's events)."""
    stmt = insert_for(session, _calls)
    new, old = stmt.excluded, _calls.c
    # A legal hold is set through the API, never by the call path: an update of a row still in
    # progress must not lift it. A subject or link someone wrote stays (the row has one).
    cols: dict[str, Any] = {
        name: new[name] for name in params[0]
        if name not in ("id", "legal_hold", "subject", "who_kind", "who_id", "cost")
    }
    cols["subject"] = func.coalesce(old.subject, new.subject)
    if "cost" in params[0]:  # a cost someone wrote stays; the PBX's own fills an empty one
        cols["cost"] = func.coalesce(old.cost, new.cost)
    cols["who_kind"] = case((old.who_id.is_(None), new.who_kind), else_=old.who_kind)
    cols["who_id"] = func.coalesce(old.who_id, new.who_id)
    stmt = stmt.on_conflict_do_update(index_elements=["id"], set_=cols)
    if not returning:
        session.execute(stmt, params)
        return {}
    result = session.execute(stmt.returning(old.id, *(old[name] for name in _STORED)), params)
    return {row["id"]: dict(row) for row in result.mappings()}


def _rename(session: Session, plan: _Plan, stored: dict[str, Row]) -> None:
    """Name in the subject the record a final row is linked to, when someone linked it to
    another one while the call went on (the subject was just given, naming the PBX's own)."""
    wrong: dict[str, tuple[str, str] | None] = {}
    for cid, (ref, subject) in plan.named.items():
        got = stored[cid]
        linked = (got["who_kind"], got["who_id"]) if got["who_id"] is not None else None
        if got["subject"] == subject and linked != ref:
            wrong[cid] = linked
    if not wrong:
        return
    names = record_names(session, [ref for ref in wrong.values() if ref is not None])
    rows = {row["id"]: row for row in plan.params if row["id"] in wrong}
    for cid, ref in wrong.items():
        subject = callfields.subject(rows[cid], names.get(ref) if ref else None)
        session.execute(update(_calls).where(_calls.c.id == cid).values(subject=subject))
        stored[cid]["subject"] = subject


def _end_recovered(session: Session, ended: Mapping[str, datetime]) -> dict[str, list[Row]]:
    """End the open legs of calls taken back after a restart (those written before it are in
    the database only), and read all their legs for the events."""
    session.execute(
        update(_legs)
        .where(_legs.c.call_id == bindparam("b_call"), _legs.c.ended_at.is_(None))
        .values(ended_at=bindparam("b_end")),
        [{"b_call": cid, "b_end": at} for cid, at in ended.items()],
    )
    return read_legs(session, list(ended))


def _complete(events: Sequence[PendingEvent], stored: Mapping[str, Row],
              recovered_legs: Mapping[str, list[Row]]) -> list[PendingEvent]:
    """The batch's events with the whole record: the row as the event left it, and the columns
    the folder does not keep as stored now."""
    out = []
    for ev in events:
        legs = ev.legs
        if legs is not None and ev.call_id in recovered_legs:
            legs = [leg_view(leg) for leg in recovered_legs[ev.call_id]]
        out.append(PendingEvent(ev.event, ev.call_id, ev.occurred_at,
                                {**ev.call, **stored.get(ev.call_id, {})}, legs))
    return out
