"""Folds call-record events into one row per call."""

from __future__ import annotations

from sqlalchemy.orm import Session

from pbx.records import CallAnswered, CallEnded, CallEvent, CallStarted

from .models import Call


def apply_event(session: Session, event: CallEvent) -> None:
    """Apply one event to the call's row (inside the caller's transaction)."""
    if isinstance(event, CallStarted):
        session.merge(
            Call(
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
            )
        )
        return
    call = session.get(Call, event.call_id)
    if call is None:  # the started event was lost with a crash before it was written
        return
    if isinstance(event, CallAnswered):
        call.answered_at = event.answered_at
        call.answered_by = event.answered_by
        call.ring_seconds = (event.answered_at - call.started_at).total_seconds()
    elif isinstance(event, CallEnded):
        call.ended_at = event.ended_at
        call.disposition = event.disposition
        call.hangup_cause = event.hangup_cause
        call.hangup_by = event.hangup_by
        call.sip_code = event.sip_code
        if call.answered_at is not None:
            call.duration = max(0.0, (event.ended_at - call.answered_at).total_seconds())
        else:
            call.duration = 0.0
            call.ring_seconds = (event.ended_at - call.started_at).total_seconds()
