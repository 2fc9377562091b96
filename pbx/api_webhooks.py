"""The webhook deliveries in the HTTP API: the delivery log and replay.

Every call event the PBX pushes to a CRM webhook is a *delivery* (pending, delivered, or dead
after its retry budget); each POST is an *attempt* in its log. Supervisors and admins list
deliveries, read their attempts, and replay dead (or delivered) ones, which go out again with
the same idempotency key. The worker (:class:`crmsync.webhooks.WebhookWorker`) does the work off
the event loop; this module only speaks HTTP.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Annotated, Literal, Protocol

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from pbx.api_base import ERRORS, AuthCaller, Error

__all__ = ["WebhookControl", "include_webhooks"]

Status = Literal["pending", "delivered", "dead"]


class _DeliveryLike(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def webhook(self) -> str: ...

    @property
    def event(self) -> str: ...

    @property
    def call_id(self) -> str: ...

    @property
    def idempotency_key(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def attempts(self) -> int: ...

    @property
    def next_attempt_at(self) -> datetime: ...

    @property
    def last_status_code(self) -> int | None: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def delivered_at(self) -> datetime | None: ...

    @property
    def created_at(self) -> datetime: ...


class _AttemptLike(Protocol):
    @property
    def at(self) -> datetime: ...

    @property
    def status_code(self) -> int | None: ...

    @property
    def error(self) -> str | None: ...

    @property
    def duration_ms(self) -> int: ...


class WebhookControl(Protocol):
    """What the API needs of the webhook worker."""

    async def deliveries(self, *, status: str | None = None, webhook: str | None = None,
                         call_id: str | None = None, limit: int = 100,
                         before_id: int | None = None) -> Sequence[_DeliveryLike]: ...

    async def attempts(self, delivery_id: int) -> Sequence[_AttemptLike]: ...

    async def replay(self, delivery_ids: Collection[int] | None = None, *,
                     statuses: Collection[str] = ("dead",), webhook: str | None = None,
                     event: str | None = None, call_id: str | None = None) -> list[int]: ...


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class Delivery(BaseModel):
    """One event for one webhook."""

    id: int
    webhook: str
    event: str
    call_id: str
    idempotency_key: str
    status: Status
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime | None


class Attempt(BaseModel):
    """One POST of a delivery."""

    at: datetime | None
    status_code: int | None
    error: str | None
    duration_ms: int


class ReplayRequest(BaseModel):
    """Which deliveries to send again: by id, or every one matching the filters."""

    model_config = ConfigDict(extra="forbid")

    ids: list[int] | None = Field(default=None, max_length=10_000)
    status: Literal["dead", "delivered"] = "dead"
    webhook: str | None = None
    event: str | None = None
    call_id: str | None = None


class Replayed(BaseModel):
    replayed: list[int]
    """The deliveries that are pending again."""


router = APIRouter(responses={**ERRORS})


def _control(request: Request) -> WebhookControl:
    control = getattr(request.app.state, "webhooks", None)
    if control is None:
        raise HTTPException(404, "webhooks are not served by this PBX")
    return control  # type: ignore[no-any-return]


@router.get("/webhooks/deliveries", response_model=list[Delivery],
            summary="Webhook deliveries, newest first")
async def list_deliveries(
    request: Request, caller: AuthCaller,
    status: Annotated[Status | None, Query()] = None,
    webhook: Annotated[str | None, Query(max_length=64)] = None,
    call_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_id: Annotated[int | None, Query(ge=1)] = None,
) -> list[Delivery]:
    """The delivery log: each call event for each webhook, with its state and attempts. Page
    with ``before_id`` (the last id of the previous page)."""
    caller.require_supervisor("read webhook deliveries")
    found = await _control(request).deliveries(status=status, webhook=webhook,
                                               call_id=call_id, limit=limit,
                                               before_id=before_id)
    return [Delivery(
        id=d.id, webhook=d.webhook, event=d.event, call_id=d.call_id,
        idempotency_key=d.idempotency_key, status=d.status,  # type: ignore[arg-type]
        attempts=d.attempts, next_attempt_at=_utc(d.next_attempt_at),
        last_status_code=d.last_status_code, last_error=d.last_error,
        delivered_at=_utc(d.delivered_at), created_at=_utc(d.created_at),
    ) for d in found]


@router.get("/webhooks/deliveries/{delivery_id}/attempts", response_model=list[Attempt],
            responses={404: {"model": Error}}, summary="A delivery's attempts")
async def list_attempts(request: Request, caller: AuthCaller,
                        delivery_id: int) -> list[Attempt]:
    """Every POST of the delivery: when, the status code or the error, how long it took."""
    caller.require_supervisor("read webhook deliveries")
    found = await _control(request).attempts(delivery_id)
    return [Attempt(at=_utc(a.at), status_code=a.status_code, error=a.error,
                    duration_ms=a.duration_ms) for a in found]


@router.post("/webhooks/replay", response_model=Replayed, summary="Send deliveries again")
async def replay_deliveries(request: Request, caller: AuthCaller,
                            body: ReplayRequest) -> Replayed:
    """Make dead (or, with ``status: delivered``, delivered) deliveries pending again: they go
    out at once with their original idempotency key. Without ``ids`` every delivery matching
    the filters is replayed; with neither ids nor a filter, every dead one."""
    caller.require_supervisor("replay webhook deliveries")
    try:
        ids = await _control(request).replay(
            body.ids, statuses=(body.status,), webhook=body.webhook, event=body.event,
            call_id=body.call_id)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    return Replayed(replayed=sorted(ids))


def include_webhooks(app: FastAPI, control: WebhookControl, prefix: str) -> None:
    """Serve the delivery log and replay of ``control`` under ``prefix`` (``/api/v1``)."""
    app.state.webhooks = control
    app.include_router(router, prefix=prefix)
