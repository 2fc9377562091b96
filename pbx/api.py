"""The PBX's HTTP API under ``/api/v1``: an app factory putting the routers together.

``create_app`` builds a FastAPI app around the live objects of the PBX (they are stored in an
:class:`pbx.api_base.ApiContext` on the app; the routers reach them through dependencies).
Every answer but a success is JSON ``{"error": "<reason>"}``:

* 401 without an API key or with an unknown one, 403 when the key's role may not do it;
* 404 for an unknown queue, waiting call, agent or path;
* 409 when the queues refuse the action (the agent is on a call, the caller was answered...);
* 400 when the request cannot apply to the key, 422 for a malformed body or parameter.

The OpenAPI document is at ``/api/v1/openapi.json`` and its browsable form at ``/api/v1/docs``;
``/api/v1/health`` answers without a key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from pbx.api_base import ApiContext
from pbx.api_calls import include_crm
from pbx.api_clicktocall import ClickToCallControl, include_click_to_call
from pbx.api_events import include_events
from pbx.api_governance import GovernanceControl, include_governance
from pbx.api_queues import router as queues_router
from pbx.api_scheduled import SchedulingControl, include_scheduled
from pbx.api_users import UsersView, include_users
from pbx.api_webhooks import WebhookControl, include_webhooks
from pbx.config_http import ApiKey
from pbx.crmcontrol import CrmControl
from pbx.events import EventHub
from pbx.queueviews import QueueControl, QueueControlError, QueueNotFound

__all__ = ["PREFIX", "Health", "create_app", "validation_reason"]

PREFIX = "/api/v1"
"""Where every endpoint lives; a later incompatible API gets ``/api/v2`` beside it."""


class Health(BaseModel):
    """The PBX's HTTP side answers."""

    model_config = ConfigDict(frozen=True)

    status: Literal["ok"] = "ok"


_health = APIRouter()


@_health.get("/health", tags=["health"], summary="Is the PBX up")
async def health() -> Health:
    """Answers without an API key, for load balancers and monitoring."""
    return Health()


def create_app(control: QueueControl, keys: Callable[[], Sequence[ApiKey]],
               crm: CrmControl | None = None,
               webhooks: WebhookControl | None = None,
               events: EventHub | None = None,
               click_to_call: ClickToCallControl | None = None,
               scheduling: SchedulingControl | None = None,
               governance: GovernanceControl | None = None,
               users: UsersView | None = None) -> FastAPI:
    """The HTTP API app for the PBX's queue manager ``control``.

    ``keys`` returns the accepted API keys; it is called on every request, so a config reload
    takes effect without restarting the server. The app has no lifespan of its own.
    """
    app = FastAPI(
        title="PBX API",
        version="1",
        summary="Call queues and agents of the PBX.",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        swagger_ui_oauth2_redirect_url=f"{PREFIX}/docs/oauth2-redirect",
        redoc_url=None,
        # Operation ids are the handlers' names (list_queues, pause_agent...), which makes
        # readable generated clients; handler names are therefore unique across routers.
        generate_unique_id_function=_operation_id,
    )
    app.state.pbx = ApiContext(control=control, keys=keys)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(QueueNotFound, _not_found)
    app.add_exception_handler(QueueControlError, _refused)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(_health, prefix=PREFIX)
    app.include_router(queues_router, prefix=PREFIX)
    if click_to_call is not None:  # before the calls router: its path is more specific
        include_click_to_call(app, click_to_call, PREFIX)
    if users is not None:
        include_users(app, users, PREFIX)  # the PBX's users, for mapping to the CRM's
    if crm is not None:
        include_crm(app, crm, PREFIX)  # calls, recordings, contacts and leads
    if webhooks is not None:
        include_webhooks(app, webhooks, PREFIX)  # the delivery log and replay
    if events is not None:
        include_events(app, events, PREFIX)  # the live event stream (screen pops)
    if scheduling is not None:
        include_scheduled(app, scheduling, PREFIX)  # scheduled calls and call imports
    if governance is not None:
        include_governance(app, governance, PREFIX)  # recording quota, holds, erasure
    return app


def _operation_id(route: APIRoute) -> str:
    return route.name


def _error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _error(exc.status_code, str(exc.detail), exc.headers)


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return _error(404, str(exc))


async def _refused(request: Request, exc: Exception) -> JSONResponse:
    return _error(409, str(exc))


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _error(422, validation_reason(exc.errors()))


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette logs the traceback after this answer is sent; the client learns nothing more.
    return _error(500, "internal error")


def validation_reason(errors: Sequence[Any]) -> str:
    """One readable line for pydantic/FastAPI validation errors, e.g.
    ``reason: String should have at most 100 characters``."""
    parts: list[str] = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        message = str(error.get("msg", "invalid"))
        message = message.removeprefix("Value error, ")
        if error.get("type") == "json_invalid":
            detail = (error.get("ctx") or {}).get("error")
            parts.append(f"the body is not valid JSON ({detail})" if detail else
                         "the body is not valid JSON")
            continue
        if loc[:1] == ["body"]:
            where = ".".join(loc[1:]) or "body"
            if where == "body" and error.get("type") == "missing":
                parts.append("a JSON body is required")
                continue
        else:
            where = ".".join(loc) or "request"
        parts.append(f"{where}: {message}")
    return "; ".join(parts) or "invalid request"
