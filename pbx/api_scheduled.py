"""Scheduled calls and call imports in the HTTP API.

``/scheduled-calls``: an agent plans a call (owner, number, start and reminder times), lists
its calls, and completes, reschedules or cancels one (``PATCH`` with an ``action``). Agent keys
see and change their own user's calls only; supervisor and admin keys every agent's.

``/imports/calls``: a supervisor or admin uploads call records as CSV or xlsx (a multipart
form's ``file``, or the raw file with its media type). Every row is checked first: 422 lists
each bad row with its line, column and reason and nothing is imported; otherwise every row is
written at once and the answer counts them.

The stores (``crmsync.scheduled.ScheduledCalls`` and ``crmsync.imports.CallImports``, handed
in by the composition root) block on the database, so :class:`SchedulingControl` runs them in
worker threads of its own.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Annotated, Any, Final, Literal, ParamSpec, Protocol, TypeVar

from fastapi import (
    APIRouter,
    Body,
    Depends,
    FastAPI,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
)
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pbx.api_base import ERRORS, AuthCaller, Caller, Error

__all__ = [
    "XLSX_TYPE", "ImportStore", "ScheduledStore", "SchedulingControl", "include_scheduled",
    "router",
]

XLSX_TYPE: Final = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
FileFormat = Literal["csv", "xlsx"]
_P = ParamSpec("_P")
_T = TypeVar("_T")


class ScheduledCallLike(Protocol):
    """A scheduled call from the store (naive UTC times)."""

    @property
    def id(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def direction(self) -> str: ...
    @property
    def number(self) -> str: ...
    @property
    def record_kind(self) -> str | None: ...
    @property
    def record_id(self) -> str | None: ...
    @property
    def owner(self) -> str: ...
    @property
    def start_at(self) -> datetime: ...
    @property
    def reminder_at(self) -> datetime | None: ...
    @property
    def status(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def result(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def reminded_at(self) -> datetime | None: ...


class ImportResultLike(Protocol):
    @property
    def rows(self) -> int: ...
    @property
    def calls(self) -> int: ...
    @property
    def scheduled(self) -> int: ...
    @property
    def duplicates(self) -> int: ...


class ScheduledStore(Protocol):
    """The scheduled calls' synchronous store (``crmsync.scheduled.ScheduledCalls``).

    Raises ``ValueError`` for bad input (with ``status_code`` 409 when the call is no longer
    scheduled) and ``LookupError`` for an unknown id.
    """

    def create(self, values: Mapping[str, object]) -> ScheduledCallLike: ...
    def get(self, call_id: str) -> ScheduledCallLike: ...
    def find(self, *, owner: str | None = None, status: str | None = None,
             start_from: datetime | None = None, start_to: datetime | None = None,
             limit: int = 100) -> Sequence[ScheduledCallLike]: ...
    def complete(self, call_id: str, result: str) -> ScheduledCallLike: ...
    def reschedule(self, call_id: str, start_at: datetime,
                   reminder_at: datetime | None) -> ScheduledCallLike: ...
    def cancel(self, call_id: str, reason: str) -> ScheduledCallLike: ...


class ImportStore(Protocol):
    """The call import (``crmsync.imports.CallImports``): raises ``ValueError`` for a file it
    cannot read, and one with ``problems`` (items with ``line``, ``column`` and ``reason``)
    when rows are bad."""

    def import_calls(self, data: bytes, fmt: FileFormat, *, filename: str,
                     timezone: str = "UTC") -> ImportResultLike: ...


class _Rejected(Exception):
    def __init__(self, message: str, problems: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.problems = problems


class SchedulingControl:
    """The stores for the HTTP API, called from the event loop; :meth:`close` at the end.

    Uploads larger than ``max_body`` bytes are refused (413) before they are read whole.
    """

    def __init__(self, scheduled: ScheduledStore, imports: ImportStore, *, workers: int = 2,
                 max_body: int = 10 * 1024 * 1024 + 64 * 1024) -> None:
        self.scheduled = scheduled
        self.imports = imports
        self.max_body = max_body
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="scheduling-api")

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``fn(*args, **kwargs)`` in a worker thread, its refusals as HTTP errors."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except (KeyError, IndexError):
            raise  # a fault, not an unknown id: 500
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        except ValueError as exc:
            problems = getattr(exc, "problems", None)
            if problems is not None:
                raise _Rejected(str(exc), [{"line": p.line, "column": p.column,
                                            "reason": p.reason} for p in problems]) from None
            raise HTTPException(int(getattr(exc, "status_code", 422)), str(exc)) from None


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
"""A time in UTC; an input time without a zone is UTC."""
_VIEW = ConfigDict(from_attributes=True, frozen=True)
_INPUT = ConfigDict(extra="forbid", frozen=True)


class ScheduledCallCreate(BaseModel):
    """A call to schedule; ``start_at`` must be in the future, ``reminder_at`` not after it."""

    model_config = _INPUT

    subject: str = Field(default="", max_length=255)
    direction: Literal["outbound", "inbound"] = "outbound"
    number: str = Field(min_length=1, max_length=64, examples=["03-1234-5678"])
    owner: str | None = Field(default=None, max_length=64, description=(
        "User id of the agent the call belongs to; an agent key's own user by default."))
    start_at: UtcDatetime
    reminder_at: UtcDatetime | None = None
    description: str = Field(default="", max_length=4000)
    record_kind: Literal["contact", "lead"] | None = None
    record_id: str | None = Field(default=None, max_length=36)


class ScheduledCall(BaseModel):
    """A scheduled call (times in UTC)."""

    model_config = _VIEW

    id: str
    subject: str
    direction: str
    number: str = Field(examples=["+81312345678"])
    record_kind: str | None
    record_id: str | None
    owner: str
    start_at: UtcDatetime
    reminder_at: UtcDatetime | None
    status: Literal["scheduled", "completed", "cancelled"]
    description: str
    result: str
    created_at: UtcDatetime
    updated_at: UtcDatetime
    reminded_at: UtcDatetime | None


class Reschedule(BaseModel):
    """Move the call to a new future time, with a new reminder (none if not given)."""

    model_config = _INPUT

    action: Literal["reschedule"]
    start_at: UtcDatetime
    reminder_at: UtcDatetime | None = None


class Complete(BaseModel):
    """The call took place; ``result`` says what came of it."""

    model_config = _INPUT

    action: Literal["complete"]
    result: str = Field(default="", max_length=4000)


class Cancel(BaseModel):
    """The call will not take place; ``reason`` is kept as its result."""

    model_config = _INPUT

    action: Literal["cancel"]
    reason: str = Field(default="", max_length=4000)


Change = Annotated[Reschedule | Complete | Cancel, Field(discriminator="action")]


class ImportSummary(BaseModel):
    """What an import wrote."""

    rows: int = Field(description="Rows in the file (all checked).")
    calls: int = Field(description="Completed calls added to the call records.")
    scheduled: int = Field(description="Scheduled (or cancelled) calls added.")
    duplicates: int = Field(0, description="Rows imported before (the same call, by this file "
                            "or another) or twice in this file: skipped, not added again.")


class ImportProblem(BaseModel):
    line: int = Field(description="The line (CSV) or row (xlsx) of the file; the header is 1.")
    column: str
    reason: str


class ImportRejection(BaseModel):
    """The file has bad rows: nothing was imported."""

    error: str
    problems: list[ImportProblem]


async def scheduling(request: Request) -> SchedulingControl:
    """Dependency: the stores of the app (see :func:`include_scheduled`)."""
    control = getattr(request.app.state, "scheduling", None)
    if not isinstance(control, SchedulingControl):
        raise HTTPException(404, "scheduled calls are not served by this PBX")
    return control


Scheduling = Annotated[SchedulingControl, Depends(scheduling)]
CallId = Annotated[str, Path(max_length=64)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Error, "description": "No scheduled call with this id"}}

router = APIRouter(responses=ERRORS)
"""The scheduled-call and import endpoints, to include under ``/api/v1``."""


def _may_see(caller: Caller, call: ScheduledCallLike, action: str) -> None:
    if not caller.supervises and call.owner != caller.user:
        raise HTTPException(403, f'key "{caller.key_name}" acts for user "{caller.user}" only '
                                 f"and may not {action} a call of \"{call.owner}\"")


@router.post("/scheduled-calls", status_code=201, tags=["scheduled calls"],
             summary="Schedule a call")
async def create_scheduled_call(body: ScheduledCallCreate, caller: AuthCaller,
                                control: Scheduling, request: Request,
                                response: Response) -> ScheduledCall:
    """The new call, status ``scheduled``; its reminder goes out as an event at its time."""
    owner = body.owner if body.owner is not None else caller.user
    if owner is None:
        raise HTTPException(422, "owner: the key acts for no user; name the call's owner")
    caller.require_self(owner, "schedule calls")
    values = body.model_dump(exclude={"owner"})
    call = await control.run(control.scheduled.create, {**values, "owner": owner})
    view = ScheduledCall.model_validate(call)
    response.headers["Location"] = str(request.url_for("get_scheduled_call", call_id=view.id))
    return view


@router.get("/scheduled-calls", tags=["scheduled calls"], summary="List scheduled calls")
async def list_scheduled_calls(
    caller: AuthCaller, control: Scheduling,
    owner: Annotated[str | None, Query(max_length=64)] = None,
    status: Literal["scheduled", "completed", "cancelled"] | None = None,
    start_from: Annotated[datetime | None, Query(alias="from")] = None,
    start_to: Annotated[datetime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ScheduledCall]:
    """Calls starting in [from, to), earliest first; an agent key lists its own user's."""
    if not caller.supervises:
        if owner is not None and owner != caller.user:
            caller.require_self(owner, "list scheduled calls")
        owner = caller.user
    if start_from is not None and start_to is not None and _as_utc(start_from) >= \
            _as_utc(start_to):
        raise HTTPException(400, "the date range is empty: from must be before to")
    found = await control.run(control.scheduled.find, owner=owner, status=status,
                              start_from=start_from, start_to=start_to, limit=limit)
    return [ScheduledCall.model_validate(call) for call in found]


@router.get("/scheduled-calls/{call_id}", tags=["scheduled calls"],
            summary="One scheduled call", responses=NOT_FOUND)
async def get_scheduled_call(call_id: CallId, caller: AuthCaller,
                             control: Scheduling) -> ScheduledCall:
    """The call; an agent key reads its own user's only."""
    call = await control.run(control.scheduled.get, call_id)
    _may_see(caller, call, "read")
    return ScheduledCall.model_validate(call)


@router.patch("/scheduled-calls/{call_id}", tags=["scheduled calls"],
              summary="Complete, reschedule or cancel a scheduled call",
              responses={**NOT_FOUND, 409: {"model": Error,
                                            "description": "The call is no longer scheduled"}})
async def change_scheduled_call(call_id: CallId, body: Annotated[Change, Body()],
                                caller: AuthCaller, control: Scheduling) -> ScheduledCall:
    """``{"action": "complete", "result": ...}``, ``{"action": "reschedule", "start_at": ...,
    "reminder_at": ...}`` or ``{"action": "cancel", "reason": ...}``."""
    store = control.scheduled
    _may_see(caller, await control.run(store.get, call_id), "change")
    if isinstance(body, Reschedule):
        call = await control.run(store.reschedule, call_id, body.start_at, body.reminder_at)
    elif isinstance(body, Complete):
        call = await control.run(store.complete, call_id, body.result)
    else:
        call = await control.run(store.cancel, call_id, body.reason)
    return ScheduledCall.model_validate(call)


_UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "text/csv": {"schema": {"type": "string", "format": "binary"}},
    XLSX_TYPE: {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}}}},
}}}


@router.post("/imports/calls", tags=["imports"], summary="Import call records",
             response_model=ImportSummary, openapi_extra=_UPLOAD_BODY, responses={
                 413: {"model": Error, "description": "The file is too large"},
                 415: {"model": Error, "description": "Not CSV, xlsx or a multipart form"},
                 422: {"model": ImportRejection,
                       "description": "Bad rows (each listed) or an unreadable file; nothing "
                                      "was imported"}})
async def import_calls(
    request: Request, caller: AuthCaller, control: Scheduling,
    timezone: Annotated[str, Query(max_length=64, description=(
        "The time zone of start times written without one."))] = "UTC",
    filename: Annotated[str | None, Query(max_length=200, description=(
        "The file's name, kept in the imported calls' sip_call_id (a multipart upload "
        "sends its own)."))] = None,
) -> ImportSummary | JSONResponse:
    """Completed calls (inbound, outbound, missed; started in the past) join the call records;
    scheduled ones (starting in the future) the scheduled calls. All rows or none."""
    caller.require_supervisor("import calls")
    data, fmt, name = await _upload(request, control.max_body)
    try:
        result = await control.run(control.imports.import_calls, data, fmt,
                                   filename=filename or name, timezone=timezone)
    except _Rejected as exc:
        return JSONResponse({"error": str(exc), "problems": exc.problems}, status_code=422)
    return ImportSummary(rows=result.rows, calls=result.calls, scheduled=result.scheduled,
                         duplicates=result.duplicates)


async def _upload(request: Request, limit: int) -> tuple[bytes, FileFormat, str]:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in ("text/csv", XLSX_TYPE, "multipart/form-data"):
        raise HTTPException(415, f"send the file as text/csv, {XLSX_TYPE} or "
                                 "multipart/form-data (field \"file\"), not "
                                 f"{media or 'a body without Content-Type'}")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise HTTPException(413, f"the upload is {length} bytes; the most accepted is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"the upload is larger than {limit} bytes")
    if media != "multipart/form-data":
        fmt: FileFormat = "csv" if media == "text/csv" else "xlsx"
        return bytes(body), fmt, f"upload.{fmt}"
    # Parsing a 10 MB form takes a good part of a second: off the loop, where every call's
    # media is timed.
    return await asyncio.to_thread(_form_file, request.headers["content-type"], bytes(body))


def _form_file(content_type: str, body: bytes) -> tuple[bytes, FileFormat, str]:
    # RFC 7578: a multipart/form-data body is a MIME multipart message; the email package
    # reads it byte for byte.
    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        raise HTTPException(422, "the multipart body cannot be read (boundary missing?)")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") != "file":
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        name = str(part.get_filename() or "upload")
        kind = part.get_content_type()
        fmt: FileFormat
        if kind == XLSX_TYPE or name.lower().endswith(".xlsx"):
            fmt = "xlsx"
        elif kind == "text/csv" or name.lower().endswith(".csv"):
            fmt = "csv"
        else:  # a client that sends application/octet-stream: an xlsx file is a ZIP archive
            fmt = "xlsx" if data.startswith(b"PK\x03\x04") else "csv"
        return data, fmt, name
    raise HTTPException(422, 'the form has no field "file"')


def include_scheduled(app: FastAPI, control: SchedulingControl, prefix: str) -> None:
    """Serve the scheduled calls and imports of ``control`` under ``prefix`` (``/api/v1``)."""
    app.state.scheduling = control
    app.include_router(router, prefix=prefix)
