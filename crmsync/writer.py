"""Folds call-record events into one row per call, written in batches.

A call emits three events (started, answered, ended); writing each as its own statement costs
the writer thread more than the whole SIP exchange costs the event loop. So the events of a
call are folded in memory into the row they describe, and :meth:`CallRecordFolder.flush`
(called every 200 ms) turns every row that changed into one upsert executemany. A record is
therefore in the database at most a fraction of a second after each event, and a call that
starts and ends between two flushes costs a single row write.

With webhooks configured (:meth:`CallRecordFolder.set_webhooks`), the same job also writes
the outbox rows of the events of the batch (:mod:`crmsync.outbox`), in the same transaction as
the call rows: a record and its events are committed together or not at all. Each event is
written once, with the call row as it was right after it, even when the whole call fell
between two flushes:

- ``call.started``, ``call.answered``: the call began, someone answered it;
- ``call.ended``: the call is over; the payload is its full, final record;
- ``call.missed``: an inbound or internal call nobody answered (disposition ``no_answer``,
  which includes queue callers who never reached an agent, or ``cancelled``: the caller gave
  up while it rang). An outbound call nobody answered is only a ``call.ended``;
- ``recording.ready``: the call ended with a recording (``recording_path``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Table, update
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
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

from .models import Call
from .outbox import PendingEvent, WebhookSpec, enqueue, utcnow

logger = logging.getLogger(__name__)

_calls: Table = Call.__table__  # type: ignore[assignment]

Row = dict[str, Any]


class CallRecordFolder:
    """Keeps the row of every call in progress; hands out write jobs for what changed.

    ``on_outbox_commit`` is called (from the writer thread) after a job that wrote outbox rows
    has been committed: the place to wake the webhook worker.
    """

    def __init__(self, on_outbox_commit: Callable[[], None] | None = None) -> None:
        self._rows: dict[str, Row] = {}
        self._dirty: set[str] = set()
        self._late: dict[str, Row] = {}
        self._events: list[PendingEvent] = []
        self._subscribers: Mapping[str, tuple[str, ...]] = {}
        self._on_outbox_commit = on_outbox_commit

    def __len__(self) -> int:
        return len(self._rows)

    def set_webhooks(self, webhooks: Iterable[WebhookSpec]) -> None:
        """The webhooks whose events go to the outbox from now on. A disabled one's events are
        stored too: they wait for it to be enabled again (the worker sends to enabled ones)."""
        subscribers: dict[str, list[str]] = {}
        for hook in webhooks:
            for name in hook.events:
                subscribers.setdefault(name, []).append(hook.name)
        # Replaced whole, never changed in place: a job already handed out keeps its own.
        self._subscribers = {name: tuple(hooks) for name, hooks in subscribers.items()}

    def adopt(self, rows: Iterable[Row]) -> None:
        """Take back rows of calls that were in progress when the PBX stopped (read from the
        database at start), so that their events replayed from the journal, or their ending
        by the recovery, apply to the whole row."""
        for row in rows:
            self._rows[row["id"]] = dict(row)

    def in_progress(self) -> list[str]:
        """Ids of calls whose row is not final yet."""
        return [cid for cid, row in self._rows.items() if row["ended_at"] is None]

    def row(self, call_id: str) -> Row | None:
        """A copy of the row of a call not yet final, or None."""
        row = self._rows.get(call_id)
        return dict(row) if row is not None else None

    def _note(self, name: str, call_id: str, at: datetime, row: Row) -> None:
        # A copy: the row goes on changing, the event keeps the call as it was.
        self._events.append(PendingEvent(name, call_id, at, dict(row)))

    def add(self, event: CallEvent) -> None:
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
            }
            self._rows[event.call_id] = new_row
            if "call.started" in subscribers:
                self._note("call.started", event.call_id, event.started_at, new_row)
        elif isinstance(event, CallLeg):
            return  # legs are not stored yet
        else:
            row = self._rows.get(event.call_id)
            if row is None:
                # The row was written final already (a queue's result after the caller hung
                # up): the change goes out as an update of that row.
                if not isinstance(event, CallTransferred):
                    row = self._late.setdefault(event.call_id, {})
                else:
                    return
            if isinstance(event, CallAnswered):
                row["answered_at"] = event.answered_at
                row["answered_by"] = event.answered_by
                row["ring_seconds"] = event.ring_seconds
                # The PBX answering (an IVR, a queue's music) is nobody's answer: the event
                # goes out when a person answers.
                if event.answered_by is not None and "call.answered" in subscribers \
                        and event.call_id in self._rows:
                    self._note("call.answered", event.call_id, event.answered_at, row)
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
                    keys=event.keys[:64] if event.keys else None,
                )
                if subscribers and event.call_id in self._rows:
                    self._note_end(event, row, subscribers)
        if event.call_id in self._rows:
            self._dirty.add(event.call_id)

    def _note_end(self, event: CallEnded, row: Row,
                  subscribers: Mapping[str, tuple[str, ...]]) -> None:
        snapshot = dict(row)
        names = ["call.ended"]
        if _missed(row):
            names.append("call.missed")
        if row["recording_path"]:
            names.append("recording.ready")
        for name in names:
            if name in subscribers:
                self._events.append(PendingEvent(name, event.call_id, event.ended_at, snapshot))

    def flush(self) -> Callable[[Session], None] | None:
        """A writer job upserting every row that changed since the last flush (and writing
        the outbox rows of its events), or None."""
        if not self._dirty and not self._late:
            return None
        late, self._late = self._late, {}
        events, self._events = self._events, []
        subscribers = self._subscribers
        on_commit = self._on_outbox_commit
        rows = [dict(self._rows[cid]) for cid in self._dirty]
        for cid in self._dirty:
            if self._rows[cid]["ended_at"] is not None:
                del self._rows[cid]  # final: nothing will change it again
        self._dirty = set()

        def job(session: Session) -> None:
            if rows:
                upsert(session)
            for cid, fields in late.items():
                session.execute(update(_calls).where(_calls.c.id == cid).values(**fields))
            # After the call rows, in their transaction: an event never exists without its
            # record, and a record is never committed without its events.
            if events and enqueue(session, events, subscribers, utcnow()) and on_commit:
                sa_event.listen(session, "after_commit", committed, once=True)

        def committed(_session: Session) -> None:
            assert on_commit is not None
            try:
                on_commit()
            except Exception:
                # The rows are committed; a worker that missed this finds them at its poll.
                logger.exception("outbox commit hook failed")

        def upsert(session: Session) -> None:
            dialect = session.get_bind().dialect.name
            ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
            stmt = ins(_calls)
            # A legal hold is set through the API, never by the call path: an update of a row
            # still in progress must not lift it.
            cols = {c: stmt.excluded[c] for c in rows[0] if c not in ("id", "legal_hold")}
            session.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=cols), rows)

        return job


def _missed(row: Row) -> bool:
    """Whether an ended call is a missed call: inbound or internal, and nobody answered."""
    if row["direction"] == "outbound" or row["answered_by"] is not None:
        return False
    if row["disposition"] in ("no_answer", "cancelled"):
        return True
    # A queue caller the PBX answered to wait, who never reached an agent.
    return row["queue"] is not None and row["queue_result"] != "answered"
