"""What the queues show to the outside (the HTTP API, the CLI): plain views and the control
interface the queue manager (:class:`pbx.queues.Queues`) offers.

Views are frozen snapshots taken on the event loop; nothing in them refers back to live state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .acd import IntervalFigures, LiveFigures

__all__ = [
    "AgentView", "CallerRecord", "QueueControl", "QueueControlError", "QueueNotFound",
    "QueueView", "WaitingCall",
]


class CallerRecord(Protocol):
    """The CRM record a caller's number matched (supplied by crmsync's look-up)."""

    @property
    def kind(self) -> str: ...

    @property
    def record_id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def owner(self) -> str | None: ...


class QueueControlError(ValueError):
    """A request the queues cannot carry out; the message says why (for a 4xx answer)."""


class QueueNotFound(QueueControlError, LookupError):
    """No such queue, waiting call or agent."""


@dataclass(frozen=True, slots=True)
class WaitingCall:
    """One caller in a queue's waiting list."""

    call_id: str
    queue: str
    position: int
    """1 is next."""
    caller_number: str
    caller_name: str
    crm_kind: str | None
    """``contact`` or ``lead`` when the caller's number matched a CRM record."""
    crm_id: str | None
    crm_name: str | None
    crm_owner: str | None
    waited: float
    """Seconds since the caller arrived."""
    callback: bool
    """The caller hung up and waits for a callback (keeping their place)."""
    callback_number: str | None
    offered_to: tuple[str, ...]
    """Agents being rung for this caller right now."""
    rule: str | None
    """The assignment rule that matched the caller, if any."""


@dataclass(frozen=True, slots=True)
class AgentView:
    """One agent as supervisors see them."""

    user_id: str
    name: str
    extension: str
    state: str
    """available, ringing, on_call, wrap_up, paused or offline."""
    paused_reason: str | None
    since: float
    """Seconds in this state."""
    calls_today: int
    queues: tuple[str, ...]
    registered: bool


@dataclass(frozen=True, slots=True)
class QueueView:
    """One queue right now and over the current interval."""

    name: str
    strategy: str
    max_callers: int
    max_wait: float
    live: LiveFigures
    interval: IntervalFigures


class QueueControl(Protocol):
    """What the HTTP API may ask of the queues. Every method runs on the event loop and
    returns at once; an impossible request raises :class:`QueueControlError` (unknown names:
    :class:`QueueNotFound`) with a message fit for the caller of the API."""

    def queues(self) -> list[QueueView]: ...

    def queue(self, name: str) -> QueueView: ...

    def waiting(self, name: str) -> list[WaitingCall]: ...

    def pick(self, name: str, call_id: str, agent: str) -> None:
        """Connect the waiting call to ``agent``'s phone at once."""

    def move(self, name: str, call_id: str, to_queue: str) -> None:
        """Move the waiting call to the end of ``to_queue``'s line (a supervisor's action)."""

    def agents(self) -> list[AgentView]: ...

    def agent(self, user_id: str) -> AgentView: ...

    def login(self, user_id: str) -> AgentView: ...

    def logout(self, user_id: str) -> AgentView: ...

    def pause(self, user_id: str, reason: str) -> AgentView: ...

    def unpause(self, user_id: str) -> AgentView: ...
