"""Queue (ACD) selection: who waits, in which order, and which agent is offered which caller.

A pure, sans-I/O core: nothing here sleeps, reads a clock or touches a socket. The host (the
call controller) feeds it what happened, with ``now`` in seconds on one monotonic clock, and
executes the plain action objects it returns: answer or refuse a caller, ring or stop ringing
an agent, bridge a call. Every rule is therefore testable on a virtual clock.

Agents are shared between the queues they belong to (the same :class:`Agent` object in each
:class:`QueueState`), so an agent ringing for one queue is not offered a call from another.
:func:`tick_all` offers across several queues fairly; :meth:`QueueState.tick` serves one queue.

Strategies choose among the *eligible* agents (available, not skipped for this caller):
``simultaneous`` rings them all; ``longest_idle`` the one idle longest since their last call
ended or since they came back from a pause or logout; ``fewest_calls`` the one with the fewest
answered calls today (ties: longest idle); ``round_robin`` the next in the configured order after
the agent last offered a call, an unavailable agent keeping their place and being passed over.
Ties always go to the agent listed first.

Assignment rules (:mod:`pbx.acdrules`) restrict who is offered a caller, with their own strategy,
until ``arrived + fallback_after`` (at once if nobody is allowed). Then ``fallback: all`` widens
the caller to every member (place kept, ringing agents keep ringing, the queue's strategy again);
``fallback: none`` takes them out of line with :class:`Unassigned`.

Fairness across queues: a waiting caller's *score* is ``waited_seconds * queue.weight``. An agent
free in several queues is offered the caller with the highest score first (ties: the earlier
arrival, then the queue name). With the default weight 1 the longest-waiting caller wins; a
queue of weight 2 ranks a caller who has waited 30 s with one who has waited 60 s elsewhere.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .acdtypes import (
    MAX_CALLERS,
    MAX_WAIT,
    STRATEGIES,
    AcdError,
    Action,
    Admitted,
    Agent,
    AgentBack,
    AgentPaused,
    AgentState,
    Connected,
    Full,
    IntervalFigures,
    LiveFigures,
    Offer,
    OfferCancelled,
    OfferExpired,
    OfferOutcome,
    QueueParams,
    Strategy,
    TimedOut,
    Unassigned,
    Waiting,
    WaitingView,
)

if TYPE_CHECKING:
    from pbx.acdrules import Assignment

__all__ = [
    "MAX_CALLERS", "MAX_WAIT", "STRATEGIES", "AcdError", "Action", "Admitted", "Agent",
    "AgentBack", "AgentPaused", "AgentState", "Connected", "Full", "IntervalFigures",
    "LiveFigures", "Offer", "OfferCancelled", "OfferExpired", "QueueParams", "QueueState",
    "Strategy", "TimedOut", "Unassigned", "Waiting", "WaitingView", "choose_queue_for_agent",
    "tick_all",
]


@dataclass(slots=True)
class _Counters:
    start: float
    offered: int = 0
    answered: int = 0
    answer_wait: float = 0.0
    answered_in_time: int = 0
    abandoned: int = 0
    abandoned_wait: float = 0.0
    full: int = 0
    timed_out: int = 0
    unassigned: int = 0




class QueueState:
    """One queue: its members in configured order, its waiting list and its figures."""

    def __init__(self, params: QueueParams, members: Iterable[Agent], now: float = 0.0) -> None:
        self.params = params
        self.members: list[Agent] = []
        for agent in members:
            if any(m.user_id == agent.user_id for m in self.members):
                raise AcdError(f"queue {params.name}: member {agent.user_id} listed twice")
            self.members.append(agent)
        self._waiting: list[Waiting] = []
        self._cursor = 0  # round robin: index in members of the next agent to try
        self._counters = _Counters(start=now)

    # --- callers ---------------------------------------------------------------------

    def arrive(
        self,
        call_id: str,
        caller: str,
        now: float,
        *,
        callback: bool = False,
        priority: int = 0,
        assignment: Assignment | None = None,
        readmit: bool = False,
    ) -> Admitted | Full:
        """A caller comes to the queue. Higher ``priority`` waits ahead of lower; equal
        priorities wait in arrival order. The 26th caller of a 25-caller queue is ``Full``.

        ``assignment`` (from :func:`pbx.acdrules.assign`) restricts who may be offered the
        caller until its fallback deadline; agents who are not members are ignored, and
        nobody left to offer reaches the deadline at once. None: every member.

        ``readmit``: a caller who was in line already comes back (a picked agent did not
        answer, a callback's customer is to be tried again): not counted again, and let in
        even when the queue filled up meanwhile, since the place was theirs."""
        if self._find(call_id) is not None:
            raise AcdError(f"call {call_id} is already waiting in queue {self.params.name}")
        if not readmit:
            self._counters.offered += 1
        if not readmit and len(self._waiting) >= self.params.max_callers:
            self._counters.full += 1
            return Full(call_id)
        index = len(self._waiting)
        while index > 0 and self._waiting[index - 1].priority < priority:
            index -= 1
        entry = Waiting(call_id, caller, now, callback, priority)
        if assignment is not None:
            if assignment.strategy not in (None, *STRATEGIES):
                raise AcdError(f"strategy {assignment.strategy!r}: use one of {STRATEGIES}")
            entry.strategy, entry.fallback = assignment.strategy, assignment.fallback
            entry.rule = assignment.rule
            if assignment.fallback_after is not None:
                entry.deadline = now + max(assignment.fallback_after, 0.0)
            if assignment.agents is not None:
                entry.allowed = frozenset(assignment.agents) & {a.user_id for a in self.members}
                if not entry.allowed:
                    entry.deadline = now  # nobody to offer: as if nobody answered in time
        self._waiting.insert(index, entry)
        return Admitted(call_id, index + 1)

    def count_full(self) -> None:
        """A caller came while the host's own count (callers still being answered included)
        said the queue was full: counted as offered and overflowed, like :meth:`arrive`'s
        ``Full``."""
        self._counters.offered += 1
        self._counters.full += 1

    def count_unassigned(self) -> None:
        """A caller whose assignment rule names nobody (sent away before joining the line)."""
        self._counters.offered += 1
        self._counters.unassigned += 1

    def __len__(self) -> int:
        return len(self._waiting)

    def set_callback(self, call_id: str) -> None:
        """The caller asked to be called back: they keep their place, no longer on the line."""
        self._need(call_id).callback = True

    def leave(self, call_id: str, now: float) -> float:
        """The caller hung up or left by the exit key (abandoned); returns their wait. Agents
        still ringing for them return to available (the host stops their ringing)."""
        entry = self._need(call_id)
        self._drop(entry, now)
        waited = now - entry.arrived
        self._counters.abandoned += 1
        self._counters.abandoned_wait += waited
        return waited

    def withdraw_offers(self, call_id: str, now: float) -> list[Action]:
        """Stop every offer ringing for the caller without counting it against the agents
        (the caller's line went away while their entry stays: a callback)."""
        entry = self._need(call_id)
        actions: list[Action] = [OfferCancelled(call_id, uid) for uid in sorted(entry.ringing)]
        for uid in list(entry.ringing):
            self._release(entry, self._member(uid), now)
        return actions

    def move_out(self, call_id: str, now: float) -> Waiting:
        """Take the caller out of line to go to another queue (not counted as abandoned).
        Agents ringing for them become available; the returned entry's ``ringing`` names
        them, so the host stops their ringing."""
        entry = self._need(call_id)
        ringing = set(entry.ringing)
        self._drop(entry, now)
        entry.ringing = ringing
        return entry

    def has(self, call_id: str) -> bool:
        """Whether the caller is waiting in this queue."""
        return self._find(call_id) is not None

    def waiting(self, now: float) -> list[WaitingView]:
        """The waiting list in order, with positions 1..n and waiting times."""
        return [
            WaitingView(
                w.call_id, w.caller, i, now - w.arrived, w.callback, tuple(sorted(w.ringing)),
                w.rule,
            )
            for i, w in enumerate(self._waiting, start=1)
        ]

    def position(self, call_id: str) -> int:
        """The caller's place in line (1 is next)."""
        return self._waiting.index(self._need(call_id)) + 1

    # --- time ------------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Everything due at ``now``: wrap-ups ending, offers ringing too long, waits past
        ``max_wait``, assignment fallbacks due, then new offers to the callers in line
        (longest waiter first)."""
        actions = self._housekeeping(now)
        for entry in list(self._waiting):
            offer = self._offer(entry, now)
            if offer is not None:
                actions.append(offer)
        return actions

    def _housekeeping(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for agent in self.members:
            wrapped = agent.state is AgentState.WRAP_UP and agent.wrap_until <= now
            if wrapped and self._after_call(agent, now):
                actions.append(AgentBack(agent.user_id))
        for entry in list(self._waiting):
            for user_id in sorted(entry.ringing):
                agent = self._member(user_id)
                if agent.offer_until <= now:
                    actions.append(OfferExpired(entry.call_id, user_id))
                    actions.extend(self._not_taken(entry, agent, now))
            waited = now - entry.arrived
            # A callback is not on the line: it keeps its place however long it takes.
            if waited >= self.params.max_wait and not entry.callback:
                ringing = tuple(sorted(entry.ringing))
                self._drop(entry, now)
                self._counters.timed_out += 1
                actions.append(TimedOut(entry.call_id, waited, ringing))
            elif entry.deadline is not None and entry.deadline <= now:
                actions.extend(self._fall_back(entry, now))
        return actions

    def _fall_back(self, entry: Waiting, now: float) -> list[Action]:
        # The rule's target had its time: widen to every member, or end the call politely.
        entry.deadline = None
        if entry.fallback == "all":
            entry.allowed = entry.strategy = None
            return []
        ringing = tuple(sorted(entry.ringing))
        self._drop(entry, now)
        self._counters.unassigned += 1
        return [Unassigned(entry.call_id, now - entry.arrived, ringing)]

    def _pending(self) -> list[Waiting]:
        return [w for w in self._waiting if not w.ringing]

    def _eligible(self, entry: Waiting, now: float, *, new_round: bool = True) -> list[Agent]:
        free = [a for a in self.members if a.state is AgentState.AVAILABLE and a.reachable]
        if entry.allowed is not None:
            free = [a for a in free if a.user_id in entry.allowed]
        ready = [a for a in free if entry.call_id not in a.skipped]
        if ready or not free:
            return ready
        # Every free agent has skipped this caller: start a new round once `retry` has passed
        # since the latest skip by any member (the agent whose offer ran out in this very tick
        # may not count as free yet), so an agent who just rejected or missed is not rung
        # again at once.
        last = max(a.skipped[entry.call_id] for a in self.members if entry.call_id in a.skipped)
        if now - last < self.params.retry:
            return []
        if new_round:
            for agent in self.members:
                agent.skipped.pop(entry.call_id, None)
        return free

    def _offer(self, entry: Waiting, now: float) -> Offer | None:
        if entry.ringing:
            return None
        eligible = self._eligible(entry, now)
        if not eligible:
            return None
        chosen = self._choose(eligible, entry.strategy or self.params.strategy)
        for agent in chosen:
            agent._enter(AgentState.RINGING, now)
            agent.offer_call = entry.call_id
            agent.offer_until = now + self.params.ring_timeout
            entry.ringing.add(agent.user_id)
        return Offer(entry.call_id, tuple(a.user_id for a in chosen), entry.callback)

    def _choose(self, eligible: list[Agent], strategy: Strategy) -> list[Agent]:
        if strategy == "simultaneous":
            return eligible
        order = {a.user_id: i for i, a in enumerate(self.members)}
        if strategy == "longest_idle":
            return [min(eligible, key=lambda a: (a.idle_since(), order[a.user_id]))]
        if strategy == "fewest_calls":
            return [
                min(eligible, key=lambda a: (a.calls_today, a.idle_since(), order[a.user_id]))
            ]
        # Round robin in the configured order: an unavailable agent keeps their place and is
        # passed over; the next round starts after the agent last offered a call.
        count = len(self.members)
        ids = {a.user_id for a in eligible}
        for step in range(count):
            index = (self._cursor + step) % count
            if self.members[index].user_id in ids:
                self._cursor = (index + 1) % count
                return [self.members[index]]
        raise AssertionError("an eligible agent is always a member")

    # --- agents ----------------------------------------------------------------------

    def offer_result(
        self, call_id: str, user_id: str, outcome: OfferOutcome, now: float
    ) -> list[Action]:
        """What became of an offer. ``answered``: the agent takes the call (others ringing
        for it stop). ``rejected`` / ``missed``: the agent is skipped for this caller and, at
        ``max_missed`` in a row, paused with reason "missed N offers"."""
        entry = self._need(call_id)
        agent = self._member(user_id)
        if user_id not in entry.ringing:
            raise AcdError(f"agent {user_id} is not being offered call {call_id}")
        if outcome == "answered":
            agent.missed_in_a_row = 0
            return self._connect(entry, agent, now)
        if outcome not in ("rejected", "missed"):
            raise AcdError(f"offer outcome {outcome!r}: use answered, rejected or missed")
        return self._not_taken(entry, agent, now)

    def pick(self, call_id: str, user_id: str, now: float) -> list[Action]:
        """The agent picks this waiting caller: connect them at once (anyone ringing for the
        caller stops; an offer ringing at the picking agent is withdrawn; an agent in wrap-up
        ends it early). Any member may pick, also a caller an assignment rule keeps for
        others. A paused agent may pick too (paused means no calls are *offered*), and is
        paused again with the same reason after the call."""
        entry = self._need(call_id)
        agent = self._member(user_id)
        actions: list[Action] = []
        if agent.state is AgentState.RINGING and agent.offer_call != call_id:
            other = self._ringing_here(agent)
            actions.append(OfferCancelled(other.call_id, user_id))
            self._release(other, agent, now)
        elif agent.state is AgentState.PAUSED:
            agent.after_call = (AgentState.PAUSED, agent.paused_reason)
        elif agent.state not in (AgentState.AVAILABLE, AgentState.RINGING, AgentState.WRAP_UP):
            raise AcdError(f"agent {user_id} is {agent.state.value} and cannot pick a call")
        return actions + self._connect(entry, agent, now)

    def call_ended(self, user_id: str, now: float) -> list[Action]:
        """The agent's queue call ended: wrap-up until ``now + wrap_up`` (none: back at once)."""
        agent = self._member(user_id)
        if agent.state is not AgentState.ON_CALL:
            raise AcdError(f"agent {user_id} is {agent.state.value}, not on a call")
        agent.last_call_end = now
        if self.params.wrap_up > 0:
            agent._enter(AgentState.WRAP_UP, now)
            agent.wrap_until = now + self.params.wrap_up
            return []
        return [AgentBack(user_id)] if self._after_call(agent, now) else []

    def pause(self, user_id: str, reason: str, now: float) -> list[Action]:
        """Pause the agent with ``reason``; on a call or in wrap-up, when that ends."""
        return self._leave_service(self._member(user_id), AgentState.PAUSED, reason, now)

    def logout(self, user_id: str, now: float) -> list[Action]:
        """Log the agent out; on a call or in wrap-up, when that ends."""
        return self._leave_service(self._member(user_id), AgentState.OFFLINE, None, now)

    def unpause(self, user_id: str, now: float) -> None:
        """A paused agent takes calls again (a pause still pending is dropped)."""
        agent = self._member(user_id)
        if agent.after_call is not None and agent.after_call[0] is AgentState.PAUSED:
            agent.after_call = None
        if agent.state is AgentState.PAUSED:
            self._back(agent, now)

    def login(self, user_id: str, now: float) -> None:
        """Log the agent in (a user not listed becomes a member at the end of the order)."""
        agent = next((a for a in self.members if a.user_id == user_id), None)
        if agent is None:
            agent = Agent(user_id, AgentState.OFFLINE, now)
            self.members.append(agent)
        if agent.after_call is not None and agent.after_call[0] is AgentState.OFFLINE:
            agent.after_call = None
        if agent.state is AgentState.OFFLINE:
            self._back(agent, now)

    # --- figures ---------------------------------------------------------------------

    def live(self, now: float) -> LiveFigures:
        """Waiting count, longest wait and members by state."""
        by_state = {state.value: 0 for state in AgentState}
        for agent in self.members:
            by_state[agent.state.value] += 1
        longest = max((now - w.arrived for w in self._waiting), default=0.0)
        return LiveFigures(len(self._waiting), longest, by_state)

    def interval(self, now: float, *, reset: bool = True) -> IntervalFigures:
        """The counters since the interval started; ``reset`` starts a new one at ``now``."""
        c = self._counters
        ended = c.answered + c.abandoned + c.timed_out + c.unassigned
        figures = IntervalFigures(
            start=c.start,
            end=now,
            offered=c.offered,
            answered=c.answered,
            abandoned=c.abandoned,
            abandoned_wait=c.abandoned_wait,
            overflowed=c.full + c.timed_out + c.unassigned,
            average_speed_of_answer=c.answer_wait / c.answered if c.answered else None,
            service_level=c.answered_in_time / ended if ended else None,
        )
        if reset:
            self._counters = _Counters(start=now)
        return figures

    # --- internals -------------------------------------------------------------------

    def _find(self, call_id: str) -> Waiting | None:
        return next((w for w in self._waiting if w.call_id == call_id), None)

    def _need(self, call_id: str) -> Waiting:
        entry = self._find(call_id)
        if entry is None:
            raise AcdError(f"call {call_id} is not waiting in queue {self.params.name}")
        return entry

    def _member(self, user_id: str) -> Agent:
        for agent in self.members:
            if agent.user_id == user_id:
                return agent
        raise AcdError(f"{user_id} is not a member of queue {self.params.name}")

    def _ringing_here(self, agent: Agent) -> Waiting:
        entry = self._find(agent.offer_call or "")
        if entry is None:
            raise AcdError(
                f"agent {agent.user_id} is ringing for call {agent.offer_call} of another queue"
            )
        return entry

    def _release(self, entry: Waiting, agent: Agent, now: float) -> None:
        entry.ringing.discard(agent.user_id)
        agent.offer_call = None
        self._after_call(agent, now)

    def _drop(self, entry: Waiting, now: float) -> None:
        """Take the caller out of line; agents ringing for them become available again."""
        for user_id in list(entry.ringing):
            self._release(entry, self._member(user_id), now)
        self._waiting.remove(entry)
        for agent in self.members:
            agent.skipped.pop(entry.call_id, None)

    def _connect(self, entry: Waiting, agent: Agent, now: float) -> list[Action]:
        actions: list[Action] = [
            OfferCancelled(entry.call_id, other)
            for other in sorted(entry.ringing - {agent.user_id})
        ]
        entry.ringing.discard(agent.user_id)
        self._drop(entry, now)
        agent.offer_call = None
        agent._enter(AgentState.ON_CALL, now)
        agent.calls_today += 1
        waited = now - entry.arrived
        self._counters.answered += 1
        self._counters.answer_wait += waited
        if waited <= self.params.service_level:
            self._counters.answered_in_time += 1
        actions.append(Connected(entry.call_id, agent.user_id, waited))
        return actions

    def _not_taken(self, entry: Waiting, agent: Agent, now: float) -> list[Action]:
        agent.skipped[entry.call_id] = now
        agent.missed_in_a_row += 1
        self._release(entry, agent, now)
        limit = self.params.max_missed
        if limit and agent.missed_in_a_row >= limit and agent.state is AgentState.AVAILABLE:
            reason = f"missed {agent.missed_in_a_row} offers"
            agent._enter(AgentState.PAUSED, now)
            agent.paused_reason = reason
            return [AgentPaused(agent.user_id, reason)]
        return []

    def _leave_service(
        self, agent: Agent, state: AgentState, reason: str | None, now: float
    ) -> list[Action]:
        actions: list[Action] = []
        if agent.state in (AgentState.ON_CALL, AgentState.WRAP_UP):
            agent.after_call = (state, reason)
            return actions
        if agent.state is AgentState.RINGING:
            entry = self._ringing_here(agent)
            actions.append(OfferCancelled(entry.call_id, agent.user_id))
            entry.ringing.discard(agent.user_id)
            agent.offer_call = None
        agent._enter(state, now)
        agent.paused_reason = reason
        return actions

    def _after_call(self, agent: Agent, now: float) -> bool:
        """Back to available (True), or into a pause or logout asked for meanwhile."""
        pending, agent.after_call = agent.after_call, None
        if pending is None:
            agent._enter(AgentState.AVAILABLE, now)
            return True
        agent._enter(pending[0], now)
        agent.paused_reason = pending[1]
        return False

    @staticmethod
    def _back(agent: Agent, now: float) -> None:
        agent._enter(AgentState.AVAILABLE, now)
        agent.paused_reason = None
        agent.missed_in_a_row = 0
        agent.available_since = now


def _score(queue: QueueState, entry: Waiting, now: float) -> tuple[float, float, str]:
    # Highest weighted wait first; ties go to the earlier arrival, then the queue name.
    return (-(now - entry.arrived) * queue.params.weight, entry.arrived, queue.params.name)


def choose_queue_for_agent(
    queues: Sequence[QueueState], user_id: str, now: float
) -> QueueState | None:
    """Of the queues ``user_id`` is a member of, the one whose first caller the agent could
    take has the highest score ``waited * weight`` (see the module docstring); None when no
    caller there could be offered to the agent."""
    best: tuple[tuple[float, float, str], QueueState] | None = None
    for queue in queues:
        if not any(a.user_id == user_id for a in queue.members):
            continue
        for entry in queue._pending():
            if user_id not in [a.user_id for a in queue._eligible(entry, now, new_round=False)]:
                continue
            score = _score(queue, entry, now)
            if best is None or score < best[0]:
                best = (score, queue)
            break
    return None if best is None else best[1]


def tick_all(queues: Sequence[QueueState], now: float) -> list[Action]:
    """:meth:`QueueState.tick` for several queues sharing agents, offered fairly: each
    queue keeps its own order, and across queues the caller with the highest weighted wait
    is offered first, so an agent free in several queues gets that caller.

    A heap of the queues' next callers makes one pass over the waiting callers (not one per
    queue per caller), and a queue with no free agent is passed over whole: a call centre of
    1,000 waiting callers ticks in well under a millisecond when everyone is busy."""
    actions: list[Action] = []
    for queue in queues:
        actions.extend(queue._housekeeping(now))
    lines: list[tuple[QueueState, list[Waiting]]] = []
    heap: list[tuple[tuple[float, float, str], int, int]] = []
    for queue in queues:
        if not any(a.state is AgentState.AVAILABLE and a.reachable for a in queue.members):
            continue
        line = queue._pending()
        if line:
            heap.append((_score(queue, line[0], now), len(lines), 0))
            lines.append((queue, line))
    heapq.heapify(heap)
    while heap:
        _, index, pos = heapq.heappop(heap)
        queue, line = lines[index]
        offer = queue._offer(line[pos], now)
        if offer is not None:
            actions.append(offer)
        if pos + 1 < len(line):
            heapq.heappush(heap, (_score(queue, line[pos + 1], now), index, pos + 1))
    return actions
