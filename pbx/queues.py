"""Call queues on live calls: the host of the pure ACD core (:mod:`pbx.acd`).

Callers routed to a queue are answered by the PBX (a :class:`pbx.localcall.LocalCall` running
the waiting service of :mod:`pbx.queuewait`: music, announcements, the caller's keys). This
module keeps one :class:`~pbx.acd.QueueState` per configured queue, with :class:`~pbx.acd.Agent`
objects shared between the queues an agent belongs to, feeds it what happens (arrivals, phones
answering or refusing, calls ending, agents' states) and carries out the actions it returns:
an offer rings the agents' phones through :meth:`pbx.calls.CallController.bridge_local` while
the caller keeps hearing the music; the agent who answers gets the caller moved to them by a
re-INVITE, under the same call record.

Admission is decided synchronously when the INVITE arrives (waiting callers plus callers still
being answered), so a queue's ``max_callers`` holds exactly under concurrent arrivals.
An agent is offered calls only while *reachable*: logged in to the queue, a phone registered,
presence available and not on another call; the core sees the others as not eligible.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from .acd import (
    AcdError,
    Action,
    Agent,
    AgentBack,
    AgentPaused,
    AgentState,
    Connected,
    Offer,
    OfferCancelled,
    OfferExpired,
    QueueParams,
    QueueState,
    TimedOut,
    Unassigned,
    tick_all,
)
from .callstate import Call, Fork, Outsider, RingStep
from .queueops import QueueOperations
from .queueviews import (
    CallerRecord,
    QueueNotFound,
)
from .records import CallQueued
from .routing import route_target

if TYPE_CHECKING:
    from sip.message import Request
    from sip.transaction import Peer

    from .calls import CallController
    from .config import Config, User
    from .config_queues import QueueConfig
    from .localcall import LocalCall
    from .originate import Origination
    from .sipapp import SipApp

logger = logging.getLogger(__name__)

#: How often the queues look at the time (offers expiring, waits ending, wrap-ups).
TICK = 0.25
#: Queue-to-queue hops one caller may take (on_full/on_timeout naming another queue).
MAX_HOPS = 5
#: Handling times remembered per queue for the estimated wait.
_HANDLED = 20


@dataclass(eq=False)
class QueueCaller:
    """A caller in (or on the way into) a queue."""

    local: LocalCall
    queue: str
    hops: int = 0
    arrived: float = 0.0
    """Monotonic time of arrival (the queue's clock)."""
    admitted: bool = False
    crm: CallerRecord | None = None
    did: str | None = None
    rule: str | None = None
    offering: Call | None = None
    """The call ringing agents for this caller now."""
    picked_by: str | None = None
    """An agent who picked this caller from the list: the ringing is theirs alone."""
    connected_to: str | None = None
    outcome: str | None = None
    """Set by the queue for the waiting service: ``timeout``, ``unassigned``, ``moved``."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    callback_number: str | None = None
    callback_attempts: int = 0
    waited: float = 0.0
    """Seconds the caller waited until an agent answered."""
    left: bool = False
    """The waiting service let the caller go (see pbx.queuewait._leave)."""
    callback_offer: Origination | None = None
    """The agents' phones ringing for this callback now."""

    @property
    def caller_number(self) -> str:
        return self.local.caller.extension

    @property
    def caller_name(self) -> str:
        caller = self.local.caller
        if isinstance(caller, Outsider):
            return caller.name
        return caller.name


class Queues:
    """Every queue of the configuration, on live calls (see the module docstring)."""

    def __init__(self, app: SipApp, controller: CallController) -> None:
        self.app = app
        self.controller = controller
        self.agents: dict[str, Agent] = {}
        self.states: dict[str, QueueState] = {}
        self.callers: dict[str, QueueCaller] = {}
        self._reserved: dict[str, set[str]] = {}
        self._connected: dict[str, tuple[str, str]] = {}
        """Bridged queue calls: call id -> (queue, agent)."""
        self.dialling: set[str] = set()
        """Callbacks whose agent answered and whose customer is being dialled."""
        self._handled: dict[str, list[float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._day: date | None = None
        self._kick: asyncio.Handle | None = None
        self.lookup: Callable[[str], tuple[CallerRecord | None, str | None]] | None = None
        """Blocking CRM look-up of a caller's number (match, last agent); run in a thread."""
        self.ops = QueueOperations(self)
        """Agents' and supervisors' actions (feature codes, the HTTP API)."""
        self.apply_config(app.config)

    # -- configuration ------------------------------------------------------------------------
    def apply_config(self, config: Config) -> None:
        """Build the queues of ``config``; on a reload agents keep their state and callers
        their place (a queue that is gone takes no new callers; those waiting stay)."""
        now = self.app.now()
        for name, qc in config.queues.items():
            params = _params(name, qc)
            members = [self._agent(uid, now) for uid in qc.members]
            state = self.states.get(name)
            if state is None:
                self.states[name] = QueueState(params, members, now)
                self._reserved.setdefault(name, set())
                continue
            state.params = params
            keep = {a.user_id for a in members}
            state.members = members + [
                a for a in state.members
                if a.user_id not in keep and a.state in (AgentState.RINGING, AgentState.ON_CALL)
            ]

    def _agent(self, user_id: str, now: float) -> Agent:
        agent = self.agents.get(user_id)
        if agent is None:
            agent = Agent(user_id, AgentState.AVAILABLE, now, available_since=now)
            self.agents[user_id] = agent
        return agent

    def config(self, name: str) -> QueueConfig | None:
        return self.app.config.queues.get(name)

    # -- running ------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = self.app.spawn(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self.tick()
            except Exception:
                logger.exception("queue tick failed")

    def kick(self) -> None:
        """Tick soon (an arrival, an agent back): offers go out without waiting for the clock."""
        if self._kick is None:
            self._kick = asyncio.get_running_loop().call_soon(self._kicked)

    def _kicked(self) -> None:
        self._kick = None
        self.tick()

    def tick(self) -> None:
        now = self.app.now()
        self._new_day(now)
        self._drop_unanswered()
        self._sync_agents()
        self._run_actions(tick_all(list(self.states.values()), now), now)
        self.app.flush()

    def _new_day(self, now: float) -> None:
        """At local midnight (``dialplan.timezone``) the figures start a new interval and
        the agents' calls-today counts (``fewest_calls``) start from zero."""
        today = local_time(self.app.config).date()
        if today == self._day:
            return
        if self._day is not None:
            logger.info("queues: a new day (%s): figures and calls today start again", today)
            for state in self.states.values():
                state.interval(now, reset=True)
            for agent in self.agents.values():
                agent.new_day()
        self._day = today

    def _drop_unanswered(self) -> None:
        """Callers counted for admission who never got to wait (cancelled before the PBX
        answered, no media port): their place is free again."""
        for ids in self._reserved.values():
            for call_id in list(ids):
                caller = self.callers.get(call_id)
                if caller is None or caller.local.state == "ended":
                    ids.discard(call_id)
                    if caller is not None and not caller.admitted:
                        self.callers.pop(call_id, None)

    def _sync_agents(self) -> None:
        """Who can take a call now: reachable agents only (see the module docstring)."""
        busy = self.controller.busy_users()
        app = self.app
        for agent in self.agents.values():
            uid = agent.user_id
            agent.reachable = (
                uid not in busy and app.presence.available(uid) and bool(app.lookup(uid))
            )
        # An agent whose caller was transferred away is free for the queue again.
        for call_id, (queue, uid) in list(self._connected.items()):
            if call_id in self.dialling:
                continue
            call = self.controller.calls.get(call_id)
            if call is None or uid not in (call.callee.id, call.caller.id):
                self._agent_done(call_id, queue, uid)

    # -- callers ------------------------------------------------------------------------------
    def on_invite(self, req: Request, peer: Peer, key: str, caller: User | Outsider, name: str,
                  dialled: str, *, did: str | None = None, hops: int = 0) -> None:
        """A new call for queue ``name``: admitted (answered, waits) or sent to ``on_full``."""
        from .queuewait import full_service, wait_service

        qc = self.config(name)
        state = self.states.get(name)
        if qc is None or state is None:
            self.app.respond(key, req, 404, "No such queue")
            return
        if len(state) + len(self._reserved[name]) >= qc.max_callers:
            state.count_full()
            logger.info("queue %s is full: caller %s goes to %s", name, caller.extension,
                        "on_full" if qc.on_full else "the full message")
            if qc.on_full is not None and hops < MAX_HOPS:
                target = route_target(self.app.config, qc.on_full)
                self.controller.on_invite(req, peer, key, caller, target=target,
                                          dialled=dialled, hops=hops + 1)
                return
            told = self.controller.local.on_invite(req, peer, key, caller,
                                                   full_service(self, name),
                                                   f"queue {name} full", number=dialled)
            if told is not None:
                told.missed = True
                self.app.records.emit(CallQueued(told.id, name, "full", 0.0))
            return
        local = self.controller.local.on_invite(
            req, peer, key, caller, wait_service(self), f"queue {name}", number=dialled)
        if local is None:
            return
        local.missed = True  # answered to wait, not by anyone: no answer until an agent takes it
        self._reserved[name].add(local.id)
        self.callers[local.id] = QueueCaller(local, name, hops=hops, did=did)

    def join(self, local: LocalCall, name: str, hops: int) -> QueueCaller | None:
        """An answered caller comes to queue ``name`` (an IVR option, another queue's
        route); None when it is full (the caller is told so by the waiting service)."""
        qc = self.config(name)
        state = self.states.get(name)
        if qc is None or state is None:
            return None
        if len(state) + len(self._reserved[name]) >= qc.max_callers:
            state.count_full()
            return None
        self._reserved[name].add(local.id)
        caller = QueueCaller(local, name, hops=hops)
        self.callers[local.id] = caller
        return caller

    def admit(self, caller: QueueCaller, assignment: object) -> int:
        """The caller is answered and looked up: into the line. Returns the position."""
        state = self.states[caller.queue]
        now = self.app.now()
        self._reserved[caller.queue].discard(caller.local.id)
        admitted = state.arrive(caller.local.id, caller.caller_number, now,
                                assignment=assignment)  # type: ignore[arg-type]
        caller.arrived = now
        caller.admitted = True
        self.kick()
        return getattr(admitted, "position", 0)

    def release(self, caller: QueueCaller, result: str = "abandoned") -> None:
        """The caller's time in the queue is over (hung up, left, connected or sent away);
        ``result`` is what the record says if they were still in line."""
        self._reserved.get(caller.queue, set()).discard(caller.local.id)
        self.callers.pop(caller.local.id, None)
        if caller.callback_offer is None and caller.connected_to is None:
            self._withdraw(caller, None, "caller left the queue")  # a picked agent's ring too
        state = self.states.get(caller.queue)
        if caller.admitted and state is not None and state.has(caller.local.id):
            now = self.app.now()
            waited = state.leave(caller.local.id, now)
            self._record(caller, result, waited, None)
            self.kick()

    def position(self, caller: QueueCaller) -> int:
        state = self.states.get(caller.queue)
        if state is None or not state.has(caller.local.id):
            return 0
        return state.position(caller.local.id)

    def estimated_wait(self, caller: QueueCaller) -> float | None:
        """Seconds until an agent is likely free for this caller, from the handling times
        measured in this queue; None before any call was handled."""
        handled = self._handled.get(caller.queue)
        state = self.states.get(caller.queue)
        if not handled or state is None:
            return None
        staffed = sum(1 for a in state.members
                      if a.state in (AgentState.ON_CALL, AgentState.RINGING, AgentState.WRAP_UP)
                      or (a.state is AgentState.AVAILABLE and a.reachable))
        average = sum(handled) / len(handled)
        return self.position(caller) * average / max(1, staffed)

    def ringing_now(self, caller: QueueCaller) -> bool:
        """Whether an agent is being offered this caller right now."""
        return caller.offering is not None and caller.offering.state in ("setup", "ringing")

    # -- actions ------------------------------------------------------------------------------
    def _run_actions(self, actions: list[Action], now: float) -> None:
        for action in actions:
            try:
                self._act(action, now)
            except Exception:
                logger.exception("queue action %r failed", action)

    def _act(self, action: Action, now: float) -> None:
        if isinstance(action, Offer):
            self._offer(action)
        elif isinstance(action, OfferExpired | OfferCancelled):
            caller = self.callers.get(action.call_id)
            if caller is not None:
                self._withdraw(caller, {action.agent}, "offer ended",
                               "no_answer" if isinstance(action, OfferExpired) else "cancelled")
        elif isinstance(action, Connected):
            self._connected_action(action)
        elif isinstance(action, TimedOut | Unassigned):
            caller = self.callers.get(action.call_id)
            if caller is not None and caller.local.ended:
                # A callback past its time: it will not be made.
                self._record(caller, "callback_failed", action.waited, None)
                self.callers.pop(action.call_id, None)
            elif caller is not None:
                self._withdraw(caller, None, "caller left the queue")
                kind = "timeout" if isinstance(action, TimedOut) else "unassigned"
                self._record(caller, kind, action.waited, None)
                caller.admitted = False
                caller.outcome = kind
                caller.wake.set()
        elif isinstance(action, AgentPaused):
            logger.info("agent %s paused: %s", action.agent, action.reason)
        elif isinstance(action, AgentBack):
            logger.info("agent %s takes queue calls again", action.agent)

    def _offer(self, offer: Offer) -> None:
        caller = self.callers.get(offer.call_id)
        now = self.app.now()
        state = self.states.get(caller.queue) if caller is not None else None
        users = [u for u in (self.app.config.user_by_id(a) for a in offer.agents)
                 if u is not None]
        if caller is not None and state is not None and offer.callback and users:
            from .queuecallback import start_callback

            logger.info("queue %s: offering the callback to %s to %s", caller.queue,
                        caller.callback_number, ", ".join(offer.agents))
            start_callback(self, caller, offer.agents)
            return
        if caller is None or state is None or caller.local.state != "answered" or not users:
            if state is not None:
                for agent in offer.agents:
                    self._outcome(state, offer.call_id, agent, "missed", now)
            return
        qc = self.config(caller.queue)
        seconds = (qc.ring_timeout if qc else 20.0) + 30.0  # the core ends the offer first
        old = caller.offering
        if old is not None and old.state in ("setup", "ringing"):
            caller.offering = None  # its end must not count against this offer
            self.controller.close_legs(old, None, "cancelled")
            self.controller.withdraw(old, {u.id for st in old.plan for u in st.users},
                                     "offered again")
        logger.info("queue %s: offering caller %s to %s", caller.queue, caller.caller_number,
                    ", ".join(offer.agents))
        moved = self.controller.bridge_local(
            caller.local, [RingStep(tuple(users), seconds)], to_number=caller.local.number,
            ringback=False, observer=_Observer(self, caller),
            headers=self._offer_headers(caller), caller_name=self._shown_name(caller),
        )
        moved.add_done_callback(lambda f: self._moved(caller, f))
        self._offering(caller)

    def _offering(self, caller: QueueCaller) -> None:
        """The call now ringing agents for ``caller``: its legs are this queue's offers."""
        call = caller.offering = self.controller.calls.get(caller.local.id)
        if call is not None:
            call.leg_queue = caller.queue

    @staticmethod
    def _shown_name(caller: QueueCaller) -> str | None:
        # The agent sees who calls as the CRM knows them (screen pop on the phone itself).
        crm = caller.crm
        return crm.name if crm is not None and crm.name else None

    def _offer_headers(self, caller: QueueCaller) -> tuple[tuple[str, str], ...]:
        # The agent's phone shows which queue the call comes from (RFC 7044 would be for
        # diversion; Call-Info with a purpose is what phones display, RFC 3261 20.9).
        found = [("X-Queue", caller.queue)]
        if caller.crm is not None:
            found.append(("X-CRM-Match", f"{caller.crm.kind}:{caller.crm.record_id}"))
        return tuple(found)

    def _withdraw(self, caller: QueueCaller, agents: set[str] | None, cause: str,
                  result: str = "cancelled") -> None:
        """Stop ringing ``agents`` (None: everyone) for ``caller``; their legs end with
        ``result`` (no_answer: the offer ran out; cancelled: the caller left, or went to
        another agent or queue)."""
        if caller.callback_offer is not None:
            self.controller.local.originator.cancel(caller.callback_offer, agents, result)
            return
        call = caller.offering
        if call is None or call.state not in ("setup", "ringing"):
            return
        users = agents if agents is not None else {
            f.user.id for f in call.forks.values() if f.user is not None}
        if agents is None:
            users |= {u.id for step in call.plan for u in step.users}
        self.controller.close_legs(call, users, result)
        self.controller.withdraw(call, users, cause)

    def _connected_action(self, action: Connected) -> None:
        caller = self.callers.get(action.call_id)
        if caller is None:
            return
        caller.connected_to = action.agent
        self._connected[action.call_id] = (caller.queue, action.agent)
        call = caller.offering
        if call is not None and call.state == "answered" and call.callee.id == action.agent:
            caller.waited = action.waited
            return  # the agent answered the offer: the caller is being moved to them
        if caller.callback_number is not None:
            self.dialling.add(action.call_id)
            return  # the callback dials the customer itself (pbx.queuecallback)
        # Picked from the list: ring that agent alone, now.
        if call is not None:
            self._withdraw(caller, None, "picked by an agent")
        user = self.app.config.user_by_id(action.agent)
        if user is None:
            return
        caller.picked_by = action.agent
        qc = self.config(caller.queue)
        seconds = qc.ring_timeout if qc else 20.0
        moved = self.controller.bridge_local(
            caller.local, [RingStep((user,), seconds)], to_number=caller.local.number,
            ringback=False, observer=_Observer(self, caller),
            headers=(*self._offer_headers(caller), ("Call-Info", "<sip:pbx>;answer-after=0"),
                     ("Alert-Info", "<http://localhost>;info=alert-autoanswer")),
            caller_name=self._shown_name(caller),
        )
        moved.add_done_callback(lambda f: self._moved(caller, f))
        self._offering(caller)

    def _moved(self, caller: QueueCaller, done: asyncio.Future[int | None]) -> None:
        """The bridge of an offer is over: recorded as answered only once the caller was
        really moved to the agent (the agent may hang up before the move completes)."""
        if done.cancelled() or done.result() is not None or caller.connected_to is None:
            return
        self._record(caller, "answered", caller.waited, caller.connected_to)
        self.app.flush()

    def _outcome(self, state: QueueState, call_id: str, agent: str, outcome: str,
                 now: float) -> None:
        try:
            actions = state.offer_result(call_id, agent, outcome, now)  # type: ignore[arg-type]
        except AcdError:
            return  # the offer had already ended (expired, or the caller left)
        self._run_actions(actions, now)

    # -- callbacks (see pbx.queuecallback) -----------------------------------------------------
    def offer_outcome(self, caller: QueueCaller, uid: str, outcome: str) -> None:
        state = self.states.get(caller.queue)
        if state is not None:
            self._outcome(state, caller.local.id, uid, outcome, self.app.now())
            self.kick()

    # -- what the phones did (see _Observer) --------------------------------------------------
    def fork_failed(self, caller: QueueCaller, fork: Fork) -> None:
        state = self.states.get(caller.queue)
        if state is None or fork.user is None or caller.picked_by is not None:
            return
        uid = fork.user.id
        call = caller.offering
        if call is not None and any(f.user is not None and f.user.id == uid and not f.done
                                    for f in call.forks.values()):
            return  # another phone of the same agent still rings
        outcome = "rejected" if fork.status in (486, 600, 603) else "missed"
        self._outcome(state, caller.local.id, uid, outcome, self.app.now())
        self.kick()

    def answered(self, caller: QueueCaller, call: Call) -> None:
        state = self.states.get(caller.queue)
        uid = call.callee.id
        if caller.picked_by is not None:
            if uid == caller.picked_by:
                caller.waited = self.app.now() - caller.arrived
            return
        if state is None:
            return
        now = self.app.now()
        try:
            actions = state.offer_result(caller.local.id, uid, "answered", now)
        except AcdError:
            try:  # answered just as the offer ran out: the agent has the caller anyway
                actions = state.pick(caller.local.id, uid, now)
            except AcdError:
                logger.warning("queue %s: %s answered caller %s outside an offer",
                               caller.queue, uid, caller.caller_number)
                return
        self._run_actions(actions, now)

    def ended(self, caller: QueueCaller, call: Call) -> None:
        current = caller.offering is call
        if current:
            caller.offering = None
        info = self._connected.get(call.id)
        if info is not None and call.answered_at is not None:
            self._agent_done(call.id, *info, call=call)
            return
        if info is not None and caller.picked_by is not None and current:
            # A picked caller whose agent did not answer: back to the front of the line.
            self._connected.pop(call.id, None)
            self._agent_done_quietly(info[0], info[1])
            caller.picked_by = None
            caller.connected_to = None
            if caller.local.state == "answered" and self.callers.get(caller.local.id) is caller:
                self.states[caller.queue].arrive(caller.local.id, caller.caller_number,
                                                 caller.arrived, priority=1, readmit=True)
                caller.admitted = True
            self.kick()
            return
        state = self.states.get(caller.queue)
        if not current or state is None or not state.has(caller.local.id):
            self.kick()
            return
        now = self.app.now()
        if caller.local.ended:
            # The caller hung up, leaving a callback in line: the agents ringing for them
            # are released without blame.
            self._run_actions(state.withdraw_offers(caller.local.id, now), now)
            self.kick()
            return
        # An offer that ended unanswered: the agents *this* call rang whom the core still
        # has ringing missed it (an agent offered since then is not blamed).
        rung = {u.id for step in call.plan for u in step.users}
        for view in state.waiting(now):
            if view.call_id == caller.local.id:
                for agent in rung.intersection(view.offered_to):
                    self._outcome(state, caller.local.id, agent, "missed", now)
        self.kick()

    def _agent_done(self, call_id: str, queue: str, uid: str, call: Call | None = None) -> None:
        self._connected.pop(call_id, None)
        call = call or self.controller.calls.get(call_id)
        if call is not None and call.answered_mono:
            self._measure(queue, self.app.now() - call.answered_mono)
        self._agent_done_quietly(queue, uid)

    def _agent_done_quietly(self, queue: str, uid: str) -> None:
        state = self.states.get(queue)
        if state is None:
            return
        now = self.app.now()
        try:
            actions = state.call_ended(uid, now)
        except AcdError:
            return
        self._run_actions(actions, now)
        self.kick()

    def _measure(self, queue: str, seconds: float) -> None:
        qc = self.config(queue)
        handled = self._handled.setdefault(queue, [])
        handled.append(seconds + (qc.wrap_up if qc else 0.0))
        del handled[:-_HANDLED]

    def _record(self, caller: QueueCaller, result: str, waited: float,
                agent: str | None) -> None:
        self.app.records.emit(CallQueued(
            caller.local.id, caller.queue, result, round(waited, 3), agent, caller.rule,
            caller.callback_number, caller.callback_attempts,
        ))

    def state(self, name: str) -> QueueState:
        """The queue called ``name``; :class:`QueueNotFound` if there is none."""
        state = self.states.get(name)
        if state is None:
            raise QueueNotFound(f"no queue {name!r}")
        return state

class _Observer:
    """What the phones rung for one queue caller did, passed to :class:`Queues`."""

    __slots__ = ("_caller", "_queues")

    def __init__(self, queues: Queues, caller: QueueCaller) -> None:
        self._queues = queues
        self._caller = caller

    def fork_failed(self, call: Call, fork: Fork) -> None:
        self._queues.fork_failed(self._caller, fork)

    def answered(self, call: Call) -> None:
        self._queues.answered(self._caller, call)

    def ended(self, call: Call) -> None:
        self._queues.ended(self._caller, call)


def _params(name: str, qc: QueueConfig) -> QueueParams:
    return QueueParams(
        name=name, strategy=qc.strategy, max_callers=qc.max_callers,
        max_wait=float(qc.max_wait), ring_timeout=float(qc.ring_timeout),
        wrap_up=float(qc.wrap_up), max_missed=qc.max_missed, weight=float(qc.weight),
        retry=float(qc.retry), service_level=float(qc.service_level),
    )


def local_time(config: Config) -> datetime:
    """Wall-clock time where the PBX's callers are (``dialplan.timezone``), naive."""
    zone = config.dialplan.timezone
    return datetime.fromtimestamp(time.time(), ZoneInfo(zone)).replace(tzinfo=None)
