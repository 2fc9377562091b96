"""Folds call-record events into one row per call, written in batches.

A call emits three events (started, answered, ended); writing each as its own statement costs
the writer thread more than the whole SIP exchange costs the event loop. So the events of a
call are folded in memory into the row they describe, and :meth:`CallRecordFolder.flush`
(called every 200 ms) turns every row that changed into one upsert executemany. A record is
therefore in the database at most a fraction of a second after each event, and a call that
starts and ends between two flushes costs a single row write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Table, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pbx.records import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallQueued,
    CallStarted,
    CallTransferred,
)

from .models import Call

_calls: Table = Call.__table__  # type: ignore[assignment]

Row = dict[str, Any]


class CallRecordFolder:
    """Keeps the row of every call in progress; hands out write jobs for what changed."""

    def __init__(self) -> None:
        self._rows: dict[str, Row] = {}
        self._dirty: set[str] = set()
        self._late: dict[str, Row] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, event: CallEvent) -> None:
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
            }
            self._rows[event.call_id] = new_row
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
            elif isinstance(event, CallQueued):
                row.update(queue=event.queue, queue_result=event.result,
                           queue_wait=event.waited, queue_rule=event.rule)
                if event.callback_number is not None:
                    row["callback_number"] = event.callback_number
                    row["callback_attempts"] = event.callback_attempts
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
        if event.call_id in self._rows:
            self._dirty.add(event.call_id)

    def flush(self) -> Callable[[Session], None] | None:
        """A writer job upserting every row that changed since the last flush, or None."""
        if not self._dirty and not self._late:
            return None
        late, self._late = self._late, {}
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

        def upsert(session: Session) -> None:
            dialect = session.get_bind().dialect.name
            ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
            stmt = ins(_calls)
            cols = {c: stmt.excluded[c] for c in rows[0] if c != "id"}
            session.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=cols), rows)

        return job
