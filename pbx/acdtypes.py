"""The queue core's vocabulary: agents and their states, a queue's parameters, waiting callers,
the actions the host carries out, and the figures it reports (see :mod:`pbx.acd`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Literal

MAX_CALLERS: Final = 25
"""The design's cap on callers waiting in one queue; config may only set lower values."""
MAX_WAIT: Final = 1500.0
"""The design's cap on one caller's wait (25 minutes); config may only set lower values."""
STRATEGIES: Final = ("simultaneous", "longest_idle", "fewest_calls", "round_robin")
"""How a queue chooses among its eligible agents."""

Strategy = Literal["simultaneous", "longest_idle", "fewest_calls", "round_robin"]
OfferOutcome = Literal["answered", "rejected", "missed"]


class AcdError(ValueError):
    """A request the queue cannot carry out (unknown call or agent, wrong state, bad value)."""


class AgentState(StrEnum):
    """What an agent is doing; only ``available`` agents are offered callers."""

    AVAILABLE = "available"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"
    OFFLINE = "offline"


@dataclass(slots=True)
class Agent:
    """One agent, shared by every queue they are a member of."""

    user_id: str
    state: AgentState = AgentState.AVAILABLE
    since: float = 0.0
    """When the agent entered ``state``."""
    calls_today: int = 0
    last_call_end: float | None = None
    missed_in_a_row: int = 0
    """Offers rejected or missed since the last answered one (auto-pause counts these)."""
    paused_reason: str | None = None
    skipped: dict[str, float] = field(default_factory=dict)
    """Call ids this agent rejected or missed, with when: not offered those calls again soon."""
    available_since: float = 0.0
    """When the agent last came back from paused or offline (idle time counts from here too)."""
    offer_call: str | None = None
    offer_until: float = 0.0
    wrap_until: float = 0.0
    after_call: tuple[AgentState, str | None] | None = None
    """A pause or logout asked for during a call, applied when the call ends."""

    reachable: bool = True
    """Set by the host: the agent's phone is registered, their presence is available and
    they are on no other call. Unreachable agents keep their state but are not offered calls."""

    def idle_since(self) -> float:
        """Since when the agent has been idle: their last call's end or their return."""
        if self.last_call_end is None:
            return self.available_since
        return max(self.last_call_end, self.available_since)

    def new_day(self) -> None:
        """Start a new day's count for the ``fewest_calls`` strategy."""
        self.calls_today = 0

    def _enter(self, state: AgentState, now: float) -> None:
        self.state = state
        self.since = now


@dataclass(frozen=True, slots=True)
class QueueParams:
    """One queue's selection parameters (the ``queues.<name>`` config, times in seconds)."""

    name: str
    strategy: Strategy = "longest_idle"
    max_callers: int = MAX_CALLERS
    max_wait: float = MAX_WAIT
    ring_timeout: float = 20.0
    """How long one offer rings before it counts as missed."""
    wrap_up: float = 0.0
    max_missed: int = 3
    """Offers missed in a row before the agent is paused; 0 never pauses."""
    weight: float = 1.0
    retry: float = 5.0
    """After every eligible agent skipped a caller, wait this long before offering them again."""
    service_level: float = 20.0
    """The service level counts callers answered within this many seconds."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise AcdError(f"strategy {self.strategy!r}: use one of {', '.join(STRATEGIES)}")
        if not 1 <= self.max_callers <= MAX_CALLERS:
            raise AcdError(f"max_callers {self.max_callers}: use 1 to {MAX_CALLERS}")
        if not 0 < self.max_wait <= MAX_WAIT:
            raise AcdError(f"max_wait {self.max_wait}: use more than 0 and at most {MAX_WAIT} s")
        for key in ("ring_timeout", "weight"):
            if not getattr(self, key) > 0:
                raise AcdError(f"{key} {getattr(self, key)}: must be more than 0")
        for key in ("wrap_up", "retry", "service_level", "max_missed"):
            if not getattr(self, key) >= 0:
                raise AcdError(f"{key} {getattr(self, key)}: must not be negative")


@dataclass(slots=True)
class Waiting:
    """A caller in the waiting list."""

    call_id: str
    caller: str
    arrived: float
    callback: bool
    priority: int
    ringing: set[str] = field(default_factory=set)
    """Agents being offered this caller right now."""
    allowed: frozenset[str] | None = None
    """The only agents who may be offered this caller (an assignment rule); None: all."""
    strategy: Strategy | None = None
    """How the allowed agents are chosen; None: the queue's strategy."""
    deadline: float | None = None
    """When ``fallback`` applies if the caller is still waiting; None: never."""
    fallback: Literal["all", "none"] = "all"
    rule: str | None = None
    """The assignment rule that matched, for the API and records."""


# --- actions the host carries out -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admitted:
    """The caller waits at ``position`` (1 is next): answer and play music."""

    call_id: str
    position: int


@dataclass(frozen=True, slots=True)
class Full:
    """The queue is full: send the caller to ``on_full`` (or end politely)."""

    call_id: str


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The caller reached ``max_wait``: send them to ``on_timeout``; stop ringing ``agents``."""

    call_id: str
    waited: float
    agents: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Offer:
    """Ring ``agents`` (together) for the caller; ``callback``: ring the agent, then dial out."""

    call_id: str
    agents: tuple[str, ...]
    callback: bool


@dataclass(frozen=True, slots=True)
class OfferExpired:
    """``agent`` did not answer within ``ring_timeout``: stop ringing them (counts as missed)."""

    call_id: str
    agent: str


@dataclass(frozen=True, slots=True)
class OfferCancelled:
    """Someone else took the caller: stop ringing ``agent`` (not counted against them)."""

    call_id: str
    agent: str


@dataclass(frozen=True, slots=True)
class Connected:
    """Bridge the caller with ``agent``; the caller waited ``waited`` seconds."""

    call_id: str
    agent: str
    waited: float


@dataclass(frozen=True, slots=True)
class AgentBack:
    """The agent's wrap-up ended: they take calls again."""

    agent: str


@dataclass(frozen=True, slots=True)
class AgentPaused:
    """The agent was paused automatically with ``reason``."""

    agent: str
    reason: str


@dataclass(frozen=True, slots=True)
class Unassigned:
    """The assignment rule's target found nobody in time and its fallback is ``none``: end the
    call politely; stop ringing ``agents``."""

    call_id: str
    waited: float
    agents: tuple[str, ...]


Action = (
    Admitted | Full | TimedOut | Offer | OfferExpired | OfferCancelled | Connected | AgentBack
    | AgentPaused | Unassigned
)


@dataclass(frozen=True, slots=True)
class WaitingView:
    """One line of the waiting list as the API shows it."""

    call_id: str
    caller: str
    position: int
    waited: float
    callback: bool
    offered_to: tuple[str, ...]
    rule: str | None = None
    """The assignment rule that matched the caller, if it has a name."""


@dataclass(frozen=True, slots=True)
class LiveFigures:
    """The queue right now."""

    waiting: int
    longest_wait: float
    agents: dict[str, int]
    """Members by state (every :class:`AgentState` value is a key)."""


@dataclass(frozen=True, slots=True)
class IntervalFigures:
    """Counters since the interval started.

    ``offered`` counts callers who came to the queue (admitted or not); ``overflowed`` those sent
    away because it was full, they reached ``max_wait`` or their assignment rule found nobody
    (:class:`Unassigned`). ``service_level`` is the share of callers whose wait ended in the
    interval (answered, abandoned, timed out or unassigned) who were answered within
    ``service_level`` seconds; None when no wait ended. Callers moved to another queue
    (:meth:`QueueState.move_out`) count as offered only.
    """

    start: float
    end: float
    offered: int
    answered: int
    abandoned: int
    abandoned_wait: float
    """Total seconds abandoned callers had waited."""
    overflowed: int
    average_speed_of_answer: float | None
    service_level: float | None
