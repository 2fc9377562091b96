"""Recording governance in the HTTP API: usage against the quota, legal holds, erasure by
phone number and the audit log (see :mod:`pbx.governance`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from pbx.api_base import ERRORS, AuthCaller, Error

__all__ = ["GovernanceControl", "include_governance"]


class GovernanceControl(Protocol):
    def usage(self) -> dict[str, Any]: ...

    async def erase(self, number: str, actor: str) -> Any: ...

    async def hold(self, call_id: str, hold: bool, actor: str) -> None: ...

    async def audit(self, limit: int) -> list[Any]: ...


class Usage(BaseModel):
    used_minutes: float
    quota_minutes: float | None
    recording: bool
    """False while the quota is reached: new calls are not recorded."""
    retention: str | None


class HoldRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hold: bool = True


class ErasureRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: str = Field(min_length=1, max_length=40)


class ErasureResult(BaseModel):
    number: str
    """The number in E.164."""
    calls: int
    recordings: int
    held: int
    phone_numbers: int
    events: int = Field(0, description="Stored webhook events of those calls scrubbed of the "
                        "number and the caller's name.")
    scheduled_calls: int = Field(0, description="Scheduled calls with the number: anonymised, "
                                 "those still to come cancelled.")


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]


router = APIRouter(responses={**ERRORS})


def _control(request: Request) -> GovernanceControl:
    return request.app.state.governance  # type: ignore[no-any-return]


@router.get("/recordings/usage", response_model=Usage, summary="Recording use and quota")
async def recording_usage(request: Request, caller: AuthCaller) -> Usage:
    caller.require_supervisor("read the recording quota")
    return Usage(**_control(request).usage())


@router.post("/calls/{call_id}/legal-hold", status_code=204,
             responses={404: {"model": Error}}, summary="Put a call under a legal hold")
async def legal_hold(request: Request, caller: AuthCaller, call_id: str,
                     body: HoldRequest) -> None:
    """``{"hold": true}`` keeps the call and its recording whatever retention or erasure
    say; ``false`` lifts the hold. Audited."""
    caller.require_supervisor("put calls under a legal hold")
    try:
        await _control(request).hold(call_id, body.hold, caller.key_name)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("/erasure", response_model=ErasureResult, summary="Erase a phone number")
async def erase(request: Request, caller: AuthCaller, body: ErasureRequest) -> ErasureResult:
    """Delete the recordings of every call with this number (written any way), anonymise
    those call records and remove the number from contacts and leads; calls under a legal
    hold are left alone and counted in ``held``. Admin keys only; audited."""
    if caller.role != "admin":
        raise HTTPException(403, f'key "{caller.key_name}" (role {caller.role}) may not erase '
                                 "data; that needs an admin key")
    try:
        result = await _control(request).erase(body.number, caller.key_name)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return ErasureResult(number=result.number, calls=result.calls,
                         recordings=result.recordings, held=result.held,
                         phone_numbers=result.phone_numbers,
                         events=result.events, scheduled_calls=result.scheduled_calls)


@router.get("/audit", response_model=list[AuditEntry], summary="The audit log")
async def audit_log(request: Request, caller: AuthCaller,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AuditEntry]:
    if caller.role != "admin":
        raise HTTPException(403, f'key "{caller.key_name}" (role {caller.role}) may not read '
                                 "the audit log; that needs an admin key")
    rows = await _control(request).audit(limit)
    return [AuditEntry(id=r.id, at=r.at.replace(tzinfo=UTC), actor=r.actor, action=r.action,
                       target=r.target, details=r.details) for r in rows]


def include_governance(app: FastAPI, control: GovernanceControl, prefix: str) -> None:
    app.state.governance = control
    app.include_router(router, prefix=prefix)
