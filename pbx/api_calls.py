"""Call records in the HTTP API: the list with filters, one call with its legs, annotations
(subject, purpose, result, description, cost, the contact or lead it is about), the CSV
export of everything a filter matches, and the recording as a download or a stream.

Every key may list and read calls. An ``agent`` key may annotate the calls its own user owns
and calls nobody owns, supervisor and admin keys every call. The CSV export is for supervisor
and admin keys; an ``agent`` key may fetch the recordings of its own user's calls only
(placed, rung, answered or transferred to), supervisor and admin keys every recording.

Filters (the same for the list and the export): ``type`` (inbound, outbound, internal,
missed: by direction, and missed as the ``call.missed`` webhook event counts), ``call_type``
(the record's type: an inbound call nobody answered is missed, not inbound), ``status``
(in_progress, completed), ``owner`` (the user the call belongs to), ``agent`` (a user who
answered, was rung or placed the call), ``number`` (the other party, in any form, or an
extension), ``from``/``to`` (start time, ISO 8601; no zone means UTC),
``min_duration``/``max_duration`` (talk time in seconds) and ``queue``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from pbx.api_base import ERRORS, AuthCaller, Error
from pbx.api_contacts import INVALID, Crm, Responses, UtcDatetime, answer
from pbx.api_contacts import router as contacts_router
from pbx.crmcontrol import CallKind, CallOrder, CallQuery, CallStatus, CallType, CrmControl

__all__ = ["Call", "CallDetail", "CallLeg", "CallPage", "CallUpdate", "LinkedRecord", "Who",
           "WhoRef", "include_crm", "router"]

_VIEW = ConfigDict(from_attributes=True, frozen=True)
_INPUT = ConfigDict(extra="forbid", frozen=True)

_RANGE: Responses = {
    400: {"model": Error, "description": "An empty date or duration range"},
}
_NO_CALL: Responses = {
    404: {"model": Error, "description": "No call with this id, or no recording for it"},
}
_ANNOTATE: Responses = {
    403: {"model": Error, "description": "An agent's key and a call another user owns"},
    404: {"model": Error, "description": "No call with this id"},
    422: {"model": Error, "description": "A malformed body, or a contact or lead that does "
                                         "not exist (named in the reason)"},
}


class Who(BaseModel):
    """The contact or lead a call is about."""

    model_config = _VIEW

    kind: Literal["contact", "lead"]
    id: str
    name: str | None = Field(description="First and last name, else the company; null if the "
                                         "record no longer exists.")


class Call(BaseModel):
    """One call record: from the first INVITE to the last BYE, times in UTC."""

    model_config = _VIEW

    id: str
    sip_call_id: str
    direction: str = Field(description="inbound, outbound or internal.")
    missed: bool = Field(description="Inbound or internal and never answered by a person.")
    from_number: str = Field(description="As the caller's phone or trunk sent it.")
    from_e164: str | None = Field(description="from_number in E.164; null for an extension.")
    from_name: str
    to_number: str
    to_e164: str | None = Field(description="to_number in E.164; null for an extension.")
    caller_user: str | None
    callee_user: str | None
    answered_by: str | None
    started_at: UtcDatetime
    answered_at: UtcDatetime | None
    ended_at: UtcDatetime | None = Field(description="null while the call goes on.")
    duration: float | None = Field(description="Talk time in seconds; 0 if unanswered.")
    ring_seconds: float | None
    disposition: str = Field(
        description="in_progress, answered, no_answer, busy, cancelled, unavailable, failed.")
    hangup_cause: str
    hangup_by: str | None = Field(description="caller, callee or system.")
    sip_code: int | None
    has_recording: bool = Field(description="GET /calls/{id}/recording serves it.")
    recording_seconds: float | None
    transferred_to: str | None
    transfers: int
    keys: str | None = Field(description="Keys the caller pressed in the PBX's menus.")
    queue: str | None
    queue_result: str | None
    queue_wait: float | None
    queue_rule: str | None
    callback_number: str | None
    callback_attempts: int
    call_type: CallType = Field(
        description="inbound, outbound, missed (inbound or internal, nobody answered) or "
                    "internal.")
    status: CallStatus = Field(description="in_progress or completed.")
    subject: str | None = Field(
        description="Given by the PBX when the call ends (\"Inbound call from Ichiro "
                    "Tanaka\"), unless someone wrote one.")
    owner: str | None = Field(
        description="The user the call belongs to: who answered it, who placed an outbound "
                    "call, whom a missed call was for.")
    who: Who | None = Field(
        description="The contact (else lead) of the other party's number, or the record "
                    "someone linked the call to.")
    purpose: str | None
    result: str | None
    description: str | None
    cost: float | None = Field(description="Filled by imports and the CRM; the PBX has no "
                                           "tariffs.")
    revision: int = Field(description="1, and one more at every change after the call ended "
                                      "and at every annotation (the call.updated event).")


class CallPage(BaseModel):
    """A page of calls."""

    model_config = _VIEW

    items: list[Call]
    next_cursor: str | None = Field(
        description="Pass as cursor for the next page; null on the last page.")
    total: int | None = Field(description="Calls matching the filter (when count=true).")


class CallLeg(BaseModel):
    """A leg of the call: a phone or number it was offered to (ring-group members, queue
    offers, the phone a transfer handed it to, callback attempts). A record from before the
    PBX kept legs shows a summary instead, without ``id`` and ``kind``: the caller's leg into
    the PBX, the one out to the phone that answered (or rang), and the transfer's."""

    model_config = _VIEW

    role: Literal["caller", "callee", "transfer"]
    number: str | None
    name: str
    user: str | None
    answered_at: UtcDatetime | None
    ended_at: UtcDatetime | None
    id: str | None = None
    kind: str | None = Field(default=None,
                             description="ring, queue, transfer, callback or outside.")
    started_at: UtcDatetime | None = None
    result: str | None = Field(
        default=None, description="answered, no_answer, busy, rejected, cancelled (the caller "
                                  "gave up), elsewhere (answered on another leg) or failed.")
    sip_code: int | None = None
    queue: str | None = None


class LinkedRecord(BaseModel):
    """A contact or lead with the number of the call's other party."""

    model_config = _VIEW

    kind: Literal["contact", "lead"]
    id: str
    first_name: str
    last_name: str
    company: str
    owner: str | None


class CallDetail(BaseModel):
    """One call with its legs and the CRM records of the other party's number."""

    model_config = _VIEW

    call: Call
    legs: list[CallLeg]
    records: list[LinkedRecord]


class WhoRef(BaseModel):
    """A contact or lead to link a call to."""

    model_config = _INPUT

    kind: Literal["contact", "lead"]
    id: str = Field(min_length=1, max_length=36)


class CallUpdate(BaseModel):
    """Annotations of a call: only the fields given change; null clears one (a null subject
    gives back the PBX's own, ``who: null`` unlinks the call)."""

    model_config = _INPUT

    subject: str | None = Field(default=None, min_length=1, max_length=255)
    purpose: str | None = Field(default=None, max_length=64,
                                examples=["support"])
    result: str | None = Field(default=None, max_length=4000)
    description: str | None = Field(default=None, max_length=4000)
    cost: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    who: WhoRef | None = None


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


async def call_query(
    kind: Annotated[CallKind | None, Query(
        alias="type", description="inbound, outbound, internal or missed.")] = None,
    agent: Annotated[str | None, Query(
        min_length=1, max_length=64,
        description="A user id: calls they answered, were rung for or placed.")] = None,
    number: Annotated[str | None, Query(
        min_length=1, max_length=64, examples=["03-1234-5678"],
        description="The calling or called number in any form, or an extension.")] = None,
    started_from: Annotated[datetime | None, Query(
        alias="from", description="Started at or after (ISO 8601; UTC without a zone).",
        examples=["2026-11-01T00:00:00+09:00"])] = None,
    started_to: Annotated[datetime | None, Query(
        alias="to", description="Started before (ISO 8601; UTC without a zone).")] = None,
    min_duration: Annotated[float | None, Query(
        ge=0, description="Talk time of at least this many seconds.")] = None,
    max_duration: Annotated[float | None, Query(
        ge=0, description="Talk time of at most this many seconds.")] = None,
    queue: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    call_type: Annotated[CallType | None, Query(
        description="The record's type: inbound, outbound, missed or internal (a missed call "
                    "is not inbound).")] = None,
    owner: Annotated[str | None, Query(
        min_length=1, max_length=64, description="A user id: the calls they own.")] = None,
    status: Annotated[CallStatus | None, Query(
        description="in_progress or completed.")] = None,
) -> CallQuery:
    """Dependency: the call filters of the query string."""
    return CallQuery(kind, agent, number, _utc(started_from), _utc(started_to), min_duration,
                     max_duration, queue, call_type, owner, status)


Filters = Annotated[CallQuery, Depends(call_query)]
Order = Annotated[CallOrder, Query(description="newest (default) or oldest first.")]
CallId = Annotated[str, Path(max_length=64)]

router = APIRouter(responses={**ERRORS, **INVALID})
"""The call endpoints, to include under ``/api/v1``."""


@router.get("/calls", tags=["calls"], summary="List calls", responses=_RANGE)
async def list_calls(
    caller: AuthCaller,
    crm: Crm,
    query: Filters,
    limit: Annotated[int, Query(ge=1, le=500, description="Calls per page.")] = 50,
    cursor: Annotated[str | None, Query(
        max_length=300, description="next_cursor of the previous page.")] = None,
    order: Order = "newest",
    count: Annotated[bool, Query(description="Also count every matching call.")] = False,
) -> CallPage:
    """Calls matching every filter given, a page at a time."""
    page = await answer(crm.list_calls(query, limit=limit, cursor=cursor, order=order,
                                       count=count))
    return CallPage.model_validate(page)


@router.get(
    "/calls.csv",
    tags=["calls"],
    summary="Export calls as CSV",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}},
              "description": "A header row, then every matching call (not a page)."},
        **_RANGE,
    },
)
async def export_calls_csv(caller: AuthCaller, crm: Crm, query: Filters,
                           order: Order = "newest") -> StreamingResponse:
    """Every call matching the filters, streamed as CSV (supervisor and admin keys)."""
    caller.require_supervisor("export calls")
    chunks = await answer(crm.calls_csv(query, order=order))
    name = f"calls-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.csv"
    return StreamingResponse(chunks, media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/calls/{call_id}", tags=["calls"], summary="One call", responses=_NO_CALL)
async def get_call(call_id: CallId, caller: AuthCaller, crm: Crm) -> CallDetail:
    """The call with its legs and the contacts and leads of the other party's number."""
    return CallDetail.model_validate(await answer(crm.get_call(call_id)))


@router.patch("/calls/{call_id}", tags=["calls"], summary="Annotate a call",
              responses=_ANNOTATE)
async def update_call(call_id: CallId, body: CallUpdate, caller: AuthCaller,
                      crm: Crm) -> CallDetail:
    """Change the fields given. A change raises the call's ``revision`` and goes to the
    webhooks as ``call.updated``; sending what the call has already changes nothing."""
    changes: dict[str, object] = {name: getattr(body, name) for name in body.model_fields_set}
    if body.who is not None:
        changes["who"] = (body.who.kind, body.who.id)
    detail = await answer(crm.annotate_call(call_id, changes, user=caller.user,
                                            any_call=caller.supervises))
    return CallDetail.model_validate(detail)


@router.get(
    "/calls/{call_id}/recording",
    tags=["calls"],
    summary="A call's recording",
    response_class=FileResponse,
    responses={
        200: {"content": {"audio/wav": {}, "audio/flac": {}},
              "description": "The stereo recording (caller left, callee right)."},
        206: {"description": "The byte range asked for with Range."},
        **_NO_CALL,
    },
)
async def get_recording(
    call_id: CallId,
    caller: AuthCaller,
    crm: Crm,
    download: Annotated[bool, Query(description="Ask the browser to save it.")] = False,
) -> FileResponse:
    """The recording file; byte ranges (``Range``) are served for seeking in a player."""
    recording = await answer(crm.recording(call_id))
    if not caller.supervises and (caller.user is None
                                  or caller.user not in recording.participants):
        raise HTTPException(403, f'key "{caller.key_name}" (role {caller.role}) may fetch '
                                 "recordings of its own user's calls only")
    return FileResponse(recording.path, media_type=recording.media_type,
                        filename=recording.filename, stat_result=recording.stat,
                        content_disposition_type="attachment" if download else "inline")


def include_crm(app: FastAPI, crm: CrmControl, prefix: str) -> None:
    """Serve the calls, contacts and leads of ``crm`` under ``prefix`` (``/api/v1``)."""
    app.state.crm = crm
    app.include_router(router, prefix=prefix)
    app.include_router(contacts_router, prefix=prefix)
