"""Folds call-record events into one row per call.

The call path already knows every time and duration, so each event is one statement on the
row's primary key: an INSERT when the call starts, UPDATEs when it is answered and when it ends.
No read, no ORM identity map: the writer thread spends its time in the database, not in Python.
"""

from __future__ import annotations

from sqlalchemy import Table, insert, update
from sqlalchemy.orm import Session

from pbx.records import CallAnswered, CallEnded, CallEvent, CallStarted

from .models import Call

_calls: Table = Call.__table__  # type: ignore[assignment]


def apply_event(session: Session, event: CallEvent) -> None:
    """Apply one event to the call's row (inside the caller's transaction)."""
    if isinstance(event, CallStarted):
        session.execute(
            insert(_calls).values(
                id=event.call_id,
                sip_call_id=event.sip_call_id,
                direction=event.direction,
                from_number=event.from_number,
                from_name=event.from_name,
                to_number=event.to_number,
                caller_user=event.caller_user,
                callee_user=event.callee_user,
                started_at=event.started_at,
                disposition="in_progress",
                hangup_cause="",
            )
        )
    elif isinstance(event, CallAnswered):
        session.execute(
            update(_calls)
            .where(_calls.c.id == event.call_id)
            .values(
                answered_at=event.answered_at,
                answered_by=event.answered_by,
                ring_seconds=event.ring_seconds,
            )
        )
    elif isinstance(event, CallEnded):
        session.execute(
            update(_calls)
            .where(_calls.c.id == event.call_id)
            .values(
                ended_at=event.ended_at,
                disposition=event.disposition,
                hangup_cause=event.hangup_cause,
                hangup_by=event.hangup_by,
                sip_code=event.sip_code,
                duration=event.duration,
                ring_seconds=event.ring_seconds,
            )
        )
