"""What agents and supervisors do to the queues (log in and out, pause, pick a waiting caller,
move one to another queue), for the feature codes and the HTTP API: ``Queues.ops``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .acd import AcdError, Action, QueueState
from .queueviews import QueueControlError, QueueNotFound

if TYPE_CHECKING:
    from .queues import Queues


class QueueOperations:
    """Agents' and supervisors' actions on the queues of ``queues``."""

    def __init__(self, queues: Queues) -> None:
        self._q = queues

    # -- agents -------------------------------------------------------------------------------
    def queues_of(self, user_id: str) -> list[str]:
        q = self._q
        return [name for name, state in q.states.items()
                if any(a.user_id == user_id for a in state.members)]

    def agent_login(self, user_id: str) -> None:
        q = self._q
        now = q.app.now()
        names = self.queues_of(user_id)
        if not names:
            raise QueueNotFound(f"{user_id} is not a member of any queue")
        for name in names:
            q.states[name].login(user_id, now)
        q.kick()

    def agent_logout(self, user_id: str) -> None:
        self._leave(user_id, lambda s, now: s.logout(user_id, now))

    def agent_pause(self, user_id: str, reason: str) -> None:
        self._leave(user_id, lambda s, now: s.pause(user_id, reason, now))

    def agent_unpause(self, user_id: str) -> None:
        q = self._q
        now = q.app.now()
        names = self.queues_of(user_id)
        if not names:
            raise QueueNotFound(f"{user_id} is not a member of any queue")
        for name in names:
            q.states[name].unpause(user_id, now)
        q.kick()

    def _leave(self, user_id: str, how: Callable[[QueueState, float], list[Action]]) -> None:
        q = self._q
        now = q.app.now()
        names = self.queues_of(user_id)
        if not names:
            raise QueueNotFound(f"{user_id} is not a member of any queue")
        # The queue whose caller rings the agent now goes first: it withdraws that offer, and
        # the other queues then see the agent free (RFC-free, the core's own rule).
        agent = q.agents.get(user_id)
        offer = agent.offer_call if agent is not None else None
        names.sort(key=lambda n: not (offer is not None and q.states[n].has(offer)))
        for name in names:
            q._run_actions(how(q.states[name], now), now)
        q.kick()

    # -- supervisor actions -------------------------------------------------------------------
    def pick(self, name: str, call_id: str, agent: str) -> None:
        q = self._q
        state = q.state(name)
        if not state.has(call_id):
            raise QueueNotFound(f"call {call_id} is not waiting in queue {name}")
        if agent not in q.agents or not any(a.user_id == agent for a in state.members):
            raise QueueNotFound(f"{agent} is not a member of queue {name}")
        if not q.app.lookup(agent):
            raise QueueControlError(f"{agent} has no registered phone")
        caller = q.callers.get(call_id)
        if caller is None or caller.callback_number is not None:
            raise QueueControlError(f"call {call_id} is not on the line (a callback)")
        now = q.app.now()
        try:
            actions = state.pick(call_id, agent, now)
        except AcdError as exc:
            raise QueueControlError(str(exc)) from None
        q._run_actions(actions, now)
        q.app.flush()

    def move(self, name: str, call_id: str, to_queue: str) -> None:
        q = self._q
        state = q.state(name)
        target = q.state(to_queue)
        if not state.has(call_id):
            raise QueueNotFound(f"call {call_id} is not waiting in queue {name}")
        if to_queue == name:
            raise QueueControlError("the call is already in that queue")
        qc = q.config(to_queue)
        if qc is None or len(target) + len(q._reserved[to_queue]) >= \
                qc.max_callers:
            raise QueueControlError(f"queue {to_queue} is full")
        caller = q.callers[call_id]
        now = q.app.now()
        q._withdraw(caller, None, "moved to another queue")
        state.move_out(call_id, now)
        q._record(caller, "moved", now - caller.arrived, None)
        caller.queue = to_queue
        caller.rule = None
        target.arrive(call_id, caller.caller_number, now, callback=caller.callback_number
                      is not None)
        caller.arrived = now
        caller.outcome = "moved"
        caller.wake.set()
        q.kick()
