"""The queues as the HTTP API sees them: :class:`pbx.queueviews.QueueControl` over the live
:class:`pbx.queues.Queues` (snapshots taken on the event loop, actions passed on)."""

from __future__ import annotations

from .queues import Queues
from .queueviews import AgentView, QueueNotFound, QueueView, WaitingCall

__all__ = ["QueueControlImpl"]


class QueueControlImpl:
    """:class:`pbx.queueviews.QueueControl` over :class:`Queues` (the HTTP API's view)."""

    def __init__(self, queues: Queues) -> None:
        self._q = queues

    def queues(self) -> list[QueueView]:
        return [self.view(name) for name in self._q.states]

    def queue(self, name: str) -> QueueView:
        return self.view(name)

    def waiting(self, name: str) -> list[WaitingCall]:
        return self.waiting_calls(name)

    def pick(self, name: str, call_id: str, agent: str) -> None:
        self._q.ops.pick(name, call_id, agent)

    def move(self, name: str, call_id: str, to_queue: str) -> None:
        self._q.ops.move(name, call_id, to_queue)

    def agents(self) -> list[AgentView]:
        return [self.agent_view(uid) for uid in sorted(self._q.agents)
                if self._q.app.config.user_by_id(uid) is not None]

    def agent(self, user_id: str) -> AgentView:
        return self.agent_view(user_id)

    def login(self, user_id: str) -> AgentView:
        self._need(user_id)
        self._q.ops.agent_login(user_id)
        return self.agent_view(user_id)

    def logout(self, user_id: str) -> AgentView:
        self._need(user_id)
        self._q.ops.agent_logout(user_id)
        return self.agent_view(user_id)

    def pause(self, user_id: str, reason: str) -> AgentView:
        self._need(user_id)
        self._q.ops.agent_pause(user_id, reason)
        return self.agent_view(user_id)

    def unpause(self, user_id: str) -> AgentView:
        self._need(user_id)
        self._q.ops.agent_unpause(user_id)
        return self.agent_view(user_id)

    def _need(self, user_id: str) -> None:
        if self._q.app.config.user_by_id(user_id) is None:
            raise QueueNotFound(f"no user {user_id!r}")

    def view(self, name: str, *, reset: bool = False) -> QueueView:
        state = self._q.state(name)
        now = self._q.app.now()
        params = state.params
        return QueueView(name, params.strategy, params.max_callers, params.max_wait,
                         state.live(now), state.interval(now, reset=reset))

    def waiting_calls(self, name: str) -> list[WaitingCall]:
        state = self._q.state(name)
        now = self._q.app.now()
        out = []
        for view in state.waiting(now):
            caller = self._q.callers.get(view.call_id)
            crm = caller.crm if caller is not None else None
            out.append(WaitingCall(
                call_id=view.call_id, queue=name, position=view.position,
                caller_number=view.caller,
                caller_name=caller.caller_name if caller is not None else "",
                crm_kind=crm.kind if crm else None, crm_id=crm.record_id if crm else None,
                crm_name=crm.name if crm else None, crm_owner=crm.owner if crm else None,
                waited=round(view.waited, 3), callback=view.callback,
                callback_number=caller.callback_number if caller is not None else None,
                offered_to=view.offered_to, rule=view.rule,
            ))
        return out

    def agent_view(self, user_id: str) -> AgentView:
        agent = self._q.agents.get(user_id)
        user = self._q.app.config.user_by_id(user_id)
        if agent is None or user is None:
            raise QueueNotFound(f"no agent {user_id!r}")
        now = self._q.app.now()
        return AgentView(
            user_id=user_id, name=user.name, extension=user.extension,
            state=agent.state.value, paused_reason=agent.paused_reason,
            since=round(now - agent.since, 3), calls_today=agent.calls_today,
            queues=tuple(self._q.ops.queues_of(user_id)),
            registered=bool(self._q.app.lookup(user_id)),
        )
