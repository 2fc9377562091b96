"""The call queues (ACD) in the HTTP API: queues with their figures, waiting lists, picking
and moving callers, and the agents' login, logout and pause.

Every key may read the queues and their waiting lists. An ``agent`` key reads and acts on its
own agent only (login, logout, pause, unpause, picking a caller for itself); supervisor and
admin keys may act on every agent, list them all, and move callers between queues.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pbx.api_base import ERRORS, AuthCaller, Error, queue_control
from pbx.queueviews import AgentView, QueueControl, QueueView
from pbx.queueviews import WaitingCall as WaitingCallView

__all__ = [
    "Agent", "IntervalFigures", "LiveFigures", "MoveRequest", "Moved", "PauseRequest",
    "PickRequest", "Picked", "Queue", "WaitingCall", "router",
]

_VIEW = ConfigDict(from_attributes=True, frozen=True)
_INPUT = ConfigDict(extra="forbid", frozen=True)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Control = Annotated[QueueControl, Depends(queue_control)]

Responses = dict[int | str, dict[str, Any]]

_NOT_FOUND: Responses = {
    404: {"model": Error, "description": "No such queue, waiting call or agent"},
}
_REFUSED: Responses = {409: {"model": Error, "description": "The queues cannot do this now"}}
_NO_AGENT: Responses = {
    400: {"model": Error, "description": "No agent named, and the key acts for no user"},
}


class LiveFigures(BaseModel):
    """A queue right now."""

    model_config = _VIEW

    waiting: int
    longest_wait: float = Field(description="Seconds the longest-waiting caller has waited.")
    agents: dict[str, int] = Field(
        description="Members by state: available, ringing, on_call, wrap_up, paused, offline."
    )


class IntervalFigures(BaseModel):
    """A queue's counters since the current interval started."""

    model_config = _VIEW

    start: float = Field(description="When the interval started, in seconds.")
    end: float = Field(description="When these figures were taken, in seconds.")
    offered: int = Field(description="Callers who came to the queue, admitted or not.")
    answered: int
    abandoned: int
    abandoned_wait: float = Field(description="Total seconds abandoned callers had waited.")
    overflowed: int = Field(description="Callers sent away: queue full or max_wait reached.")
    average_speed_of_answer: float | None = Field(
        description="Mean seconds answered callers waited; null when none was answered."
    )
    service_level: float | None = Field(
        description="Share (0 to 1) of ended waits answered within the queue's service "
        "level; null when no wait ended."
    )


class Queue(BaseModel):
    """One queue with its live and interval figures."""

    model_config = _VIEW

    name: str
    strategy: str = Field(
        description="simultaneous, longest_idle, fewest_calls or round_robin."
    )
    max_callers: int
    max_wait: float = Field(description="Seconds a caller may wait at most.")
    live: LiveFigures
    interval: IntervalFigures


class WaitingCall(BaseModel):
    """One caller in a queue's waiting list."""

    model_config = _VIEW

    call_id: str
    queue: str
    position: int = Field(description="1 is next.")
    caller_number: str
    caller_name: str
    crm_kind: str | None = Field(description="contact or lead, when the number matched one.")
    crm_id: str | None
    crm_name: str | None
    crm_owner: str | None
    waited: float = Field(description="Seconds since the caller arrived.")
    callback: bool = Field(
        description="The caller hung up and waits for a callback, keeping their place."
    )
    callback_number: str | None
    offered_to: list[str] = Field(description="Agents being rung for this caller right now.")
    rule: str | None = Field(description="The assignment rule that matched the caller.")


class Agent(BaseModel):
    """One agent and what they are doing."""

    model_config = _VIEW

    user_id: str
    name: str
    extension: str
    state: str = Field(description="available, ringing, on_call, wrap_up, paused or offline.")
    paused_reason: str | None
    since: float = Field(description="Seconds in this state.")
    calls_today: int
    queues: list[str]
    registered: bool = Field(description="A phone of theirs is registered.")


class PickRequest(BaseModel):
    """Who takes the picked caller."""

    model_config = _INPUT

    agent: str | None = Field(
        default=None, min_length=1,
        description="The agent's user id; an agent key's own user when left out.",
    )


class Picked(BaseModel):
    """A caller connected to an agent's phone."""

    model_config = ConfigDict(frozen=True)

    queue: str
    call_id: str
    agent: str


class MoveRequest(BaseModel):
    """Where a waiting caller goes."""

    model_config = _INPUT

    queue: str = Field(min_length=1, description="The queue whose line the caller joins.")


class Moved(BaseModel):
    """A caller moved to the end of another queue's line."""

    model_config = ConfigDict(frozen=True)

    call_id: str
    from_queue: str
    queue: str


class PauseRequest(BaseModel):
    """Why the agent pauses; shown to supervisors."""

    model_config = _INPUT

    reason: str = Field(min_length=1, max_length=100, examples=["lunch"])

    @field_validator("reason")
    @classmethod
    def _check_reason(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("reason must not be blank")
        if _CONTROL.search(value):
            raise ValueError("reason must not contain control characters or line breaks")
        return value


def _queue(view: QueueView) -> Queue:
    return Queue.model_validate(view)


def _call(view: WaitingCallView) -> WaitingCall:
    return WaitingCall.model_validate(view)


def _agent(view: AgentView) -> Agent:
    return Agent.model_validate(view)


router = APIRouter(responses=ERRORS)
"""The queue and agent endpoints, to include under ``/api/v1``."""


@router.get("/queues", tags=["queues"], summary="List the queues")
async def list_queues(caller: AuthCaller, control: Control) -> list[Queue]:
    """Every queue with its live figures and the current interval's counters."""
    return [_queue(view) for view in control.queues()]


@router.get("/queues/{name}", tags=["queues"], summary="One queue", responses=_NOT_FOUND)
async def get_queue(name: str, caller: AuthCaller, control: Control) -> Queue:
    """The queue with its live figures and the current interval's counters."""
    return _queue(control.queue(name))


@router.get(
    "/queues/{name}/calls", tags=["queues"], summary="The waiting list", responses=_NOT_FOUND
)
async def list_waiting(name: str, caller: AuthCaller, control: Control) -> list[WaitingCall]:
    """The callers waiting in the queue, next first."""
    return [_call(view) for view in control.waiting(name)]


@router.post(
    "/queues/{name}/calls/{call_id}/pick",
    tags=["queues"],
    summary="Pick a waiting caller",
    responses={**_NOT_FOUND, **_REFUSED, **_NO_AGENT},
)
async def pick_call(
    name: str,
    call_id: str,
    caller: AuthCaller,
    control: Control,
    body: Annotated[PickRequest | None, Body()] = None,
) -> Picked:
    """Connect the waiting caller to the agent's phone at once, ahead of the line. An agent
    key picks for its own user; the body may then be left out."""
    agent = body.agent if body is not None and body.agent is not None else caller.user
    if agent is None:
        raise HTTPException(400, 'name the agent who takes the call: {"agent": "<user id>"}')
    caller.require_self(agent, "pick calls")
    control.pick(name, call_id, agent)
    return Picked(queue=name, call_id=call_id, agent=agent)


@router.post(
    "/queues/{name}/calls/{call_id}/move",
    tags=["queues"],
    summary="Move a waiting caller to another queue",
    responses={**_NOT_FOUND, **_REFUSED},
)
async def move_call(
    name: str, call_id: str, body: MoveRequest, caller: AuthCaller, control: Control
) -> Moved:
    """Move the caller to the end of the other queue's line (supervisor and admin keys)."""
    caller.require_supervisor("move callers")
    control.move(name, call_id, body.queue)
    return Moved(call_id=call_id, from_queue=name, queue=body.queue)


@router.get("/agents", tags=["agents"], summary="List the agents")
async def list_agents(caller: AuthCaller, control: Control) -> list[Agent]:
    """Every agent of every queue (supervisor and admin keys)."""
    caller.require_supervisor("list all agents")
    return [_agent(view) for view in control.agents()]


@router.get("/agents/{user_id}", tags=["agents"], summary="One agent", responses=_NOT_FOUND)
async def get_agent(user_id: str, caller: AuthCaller, control: Control) -> Agent:
    """The agent's state; an agent key may read its own user only."""
    caller.require_self(user_id, "read the agent")
    return _agent(control.agent(user_id))


_ACTION: Responses = {**_NOT_FOUND, **_REFUSED}


@router.post("/agents/{user_id}/login", tags=["agents"], summary="Log in", responses=_ACTION)
async def login_agent(user_id: str, caller: AuthCaller, control: Control) -> Agent:
    """The agent is offered queue calls again."""
    caller.require_self(user_id, "log in the agent")
    return _agent(control.login(user_id))


@router.post("/agents/{user_id}/logout", tags=["agents"], summary="Log out", responses=_ACTION)
async def logout_agent(user_id: str, caller: AuthCaller, control: Control) -> Agent:
    """The agent is offered no queue calls until they log in."""
    caller.require_self(user_id, "log out the agent")
    return _agent(control.logout(user_id))


@router.post(
    "/agents/{user_id}/pause",
    tags=["agents"],
    summary="Pause",
    responses=_ACTION,
)
async def pause_agent(
    user_id: str, body: PauseRequest, caller: AuthCaller, control: Control
) -> Agent:
    """The agent takes a break: offered no calls, and shown as paused with the reason."""
    caller.require_self(user_id, "pause the agent")
    return _agent(control.pause(user_id, body.reason))


@router.post("/agents/{user_id}/unpause", tags=["agents"], summary="Unpause", responses=_ACTION)
async def unpause_agent(user_id: str, caller: AuthCaller, control: Control) -> Agent:
    """The agent is back from a pause and offered calls again."""
    caller.require_self(user_id, "unpause the agent")
    return _agent(control.unpause(user_id))
