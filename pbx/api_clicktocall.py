"""Click-to-call in the HTTP API: ``POST /api/v1/calls/click-to-call``.

The agent's phone rings first (auto-answer hint), then the number is dialled with the agent's
caller ID (:mod:`pbx.clicktocall`); the answer is the new call's id, whose progress shows in the
event stream and whose record is in ``/api/v1/calls/{id}``.
"""

from __future__ import annotations

from typing import Protocol

from fastapi import APIRouter, FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from pbx.api_base import ERRORS, AuthCaller, Error
from pbx.queueviews import QueueControlError, QueueNotFound

__all__ = ["ClickToCallControl", "include_click_to_call"]


class ClickToCallControl(Protocol):
    def start(self, agent: str, number: str, *, auto_answer: bool = True) -> str: ...


class ClickToCallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: str = Field(min_length=1, max_length=40)
    """What to dial, as the agent would dial it (an extension, a national or E.164 number)."""
    agent: str | None = Field(default=None, min_length=1, max_length=64)
    """Whose phone rings first; an agent's key may leave it out (itself)."""


class ClickToCallStarted(BaseModel):
    call_id: str
    agent: str
    number: str


router = APIRouter(responses={**ERRORS})


@router.post("/calls/click-to-call", status_code=202, response_model=ClickToCallStarted,
             responses={404: {"model": Error}, 409: {"model": Error}},
             summary="Ring an agent's phone, then dial a number")
async def click_to_call(request: Request, caller: AuthCaller,
                        body: ClickToCallRequest) -> ClickToCallStarted:
    """The agent's phone rings first with an auto-answer hint; once it is up the PBX dials
    ``number`` with the agent's caller ID. 202 with the call id at once."""
    agent = body.agent or caller.user
    if agent is None:
        raise HTTPException(400, "name the agent whose phone rings first (agent)")
    caller.require_self(agent, "start calls")
    control: ClickToCallControl = request.app.state.click_to_call
    try:
        # Only the agent's own key may make their phone pick up by itself: a supervisor
        # starting a call for someone else rings it normally (no open microphone).
        call_id = control.start(agent, body.number, auto_answer=agent == caller.user)
    except QueueNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except QueueControlError as exc:
        raise HTTPException(409, str(exc)) from None
    return ClickToCallStarted(call_id=call_id, agent=agent, number=body.number)


def include_click_to_call(app: FastAPI, control: ClickToCallControl, prefix: str) -> None:
    app.state.click_to_call = control
    app.include_router(router, prefix=prefix)
