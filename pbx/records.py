"""Call-record events: what the call path tells the record keeper (crmsync) about each call.

The call path never waits for the database: it hands these frozen events to a ``RecordSink``
and moves on (DESIGN.md, "crmsync never awaits the call path").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CallStarted:
    call_id: str
    """The PBX's own id of the logical call (also the key of its record)."""
    sip_call_id: str
    direction: str
    """internal | inbound | outbound"""
    from_number: str
    from_name: str
    to_number: str
    caller_user: str | None
    callee_user: str | None
    started_at: datetime


@dataclass(frozen=True, slots=True)
class CallAnswered:
    call_id: str
    answered_at: datetime
    answered_by: str | None
    """User id of the party that answered."""
    ring_seconds: float
    """From the first INVITE to the answer."""


@dataclass(frozen=True, slots=True)
class CallEnded:
    call_id: str
    ended_at: datetime
    disposition: str
    """answered | no_answer | busy | cancelled | unavailable | failed"""
    hangup_cause: str
    """Human-readable cause, e.g. "caller hung up" or "callee rejected: 486 Busy Here"."""
    hangup_by: str | None
    """caller | callee | system"""
    sip_code: int | None
    duration: float
    """Talk time in seconds, answer to end; 0 for an unanswered call."""
    ring_seconds: float
    """From the first INVITE to the answer, or to the end for an unanswered call."""
    recording_path: str | None = None
    """The call's stereo recording (caller left, callee right), if it was recorded."""
    recording_seconds: float | None = None
    keys: str | None = None
    """The keys the caller pressed while the PBX itself answered (menus, services)."""
    cost: float | None = None
    """What an answered outside call costs by its trunk's ``rates`` (None: no rate)."""


@dataclass(frozen=True, slots=True)
class CallTransferred:
    call_id: str
    at: datetime
    from_user: str
    """The user whose phone handed the call over (the transferor)."""
    to_user: str
    """The user whose phone now has the call."""
    kind: str
    """blind | attended"""


@dataclass(frozen=True, slots=True)
class CallQueued:
    """What became of the call in a queue (one event per queue it waited in; the last wins)."""

    call_id: str
    queue: str
    result: str
    """answered | abandoned | timeout | unassigned | full | moved | exit"""
    waited: float
    """Seconds the caller waited in the queue."""
    agent: str | None = None
    """The agent who took the call (``answered``)."""
    rule: str | None = None
    """The assignment rule that matched the caller."""
    callback_number: str | None = None
    """The number the caller asked to be called back at, if they did."""
    callback_attempts: int = 0
    """Times the PBX dialled that number so far."""


@dataclass(frozen=True, slots=True)
class RecordingSkipped:
    """The call was not recorded though recording was on (``reason``: ``quota``)."""

    call_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class CallLeg:
    """One phone or number the call was offered to, and what became of it.

    A ring group's members, a queue's offers, the target of a transfer and each attempt of a
    callback are legs of the one call record (not records of their own). A leg is emitted when
    its outcome is known; an answered leg is emitted at the answer with ``ended_at`` None, and
    again (same ``leg_id``) if it ends before the call does (a transfer); legs still open when
    the call ends end with it.
    """

    call_id: str
    leg_id: str
    """Unique per leg; a later event with the same id replaces the leg."""
    kind: str
    """ring (a user's phones, directly or as a ring-group member) | queue (a queue's offer to
    an agent) | transfer (the phone a transfer handed the call to) | callback (the PBX dialling
    a queue caller back) | outside (a number dialled through a trunk)"""
    user: str | None
    """The user whose phones rang, if a user's."""
    number: str | None
    """The number dialled, for a leg to an outside number."""
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    result: str
    """answered | no_answer | busy | rejected | cancelled (the caller gave up) | elsewhere
    (answered on another leg) | failed"""
    sip_code: int | None = None
    queue: str | None = None


CallEvent = (
    CallStarted | CallAnswered | CallEnded | CallTransferred | CallQueued | RecordingSkipped
    | CallLeg
)


class RecordSink(Protocol):
    def emit(self, event: CallEvent) -> None:
        """Accept an event without blocking (the implementation queues it)."""
