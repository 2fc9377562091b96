"""What every router of the HTTP API shares: the context the app is built with, API-key
authentication and roles, and the error body.

Dependencies here are module-level functions that read the :class:`ApiContext` stored on the
app, so a router module needs no closures and FastAPI can resolve every annotation.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from pbx.config_http import ApiKey
from pbx.queueviews import QueueControl

__all__ = [
    "ERRORS", "ApiContext", "AuthCaller", "Caller", "Error", "Role", "authenticate",
    "context_of", "queue_control",
]

Role = Literal["agent", "supervisor", "admin"]


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What the app serves: the live objects of the PBX it was created for."""

    control: QueueControl
    keys: Callable[[], Sequence[ApiKey]]
    """Read on every request, so a config reload changes the keys at once."""


class Error(BaseModel):
    """Every 4xx and 5xx answer of the API."""

    error: str
    """Why the request was refused, in words fit to show a person."""


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Error, "description": "No API key, or one the PBX does not know"},
    403: {"model": Error, "description": "The key's role may not do this"},
    422: {"model": Error, "description": "A parameter or the body is malformed"},
}
"""The answers every authenticated endpoint may give, for the OpenAPI document."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the API key that authenticated the request."""

    key_name: str
    role: Role
    user: str | None
    """The user an ``agent`` key acts for (a supervisor's or admin's key may name one too)."""

    @property
    def supervises(self) -> bool:
        """Supervisor and admin keys may act on every agent and move callers."""
        return self.role in ("supervisor", "admin")

    def require_supervisor(self, action: str) -> None:
        """Refuse with 403 unless the key is a supervisor's or an admin's."""
        if not self.supervises:
            raise HTTPException(403, f'key "{self.key_name}" (role {self.role}) may not '
                                     f"{action}; that needs a supervisor or admin key")

    def require_self(self, user_id: str, action: str) -> None:
        """Refuse with 403 an agent key acting for anyone but its own user."""
        if not self.supervises and user_id != self.user:
            raise HTTPException(403, f'key "{self.key_name}" acts for user "{self.user}" '
                                     f'only and may not {action} for "{user_id}"')


def context_of(request: Request) -> ApiContext:
    """The :class:`ApiContext` the app was created with."""
    context = getattr(request.app.state, "pbx", None)
    if not isinstance(context, ApiContext):
        raise RuntimeError("the app was not built by pbx.api.create_app")
    return context


async def queue_control(request: Request) -> QueueControl:
    """Dependency: the queue manager. Async so that it (and the handler) run on the event
    loop, where :class:`QueueControl` must be called."""
    return context_of(request).control


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key from http.api_keys, sent as `Authorization: Bearer <key>`.",
)
_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="apiKey",
    description="An API key from http.api_keys, sent as `X-API-Key: <key>`.",
)


def _unauthorised(reason: str) -> HTTPException:
    # RFC 6750 3: a 401 for a bearer-protected resource carries a WWW-Authenticate challenge.
    return HTTPException(401, reason, headers={"WWW-Authenticate": 'Bearer realm="pbx"'})


def _find(presented: str, keys: Sequence[ApiKey]) -> ApiKey | None:
    # Starlette decodes header bytes as Latin-1, so this encoding gives the bytes sent back.
    sent = presented.encode("latin-1", "replace")
    found: ApiKey | None = None
    for entry in keys:
        # Compare with every key, in constant time each, so timing tells nothing of the keys.
        if hmac.compare_digest(sent, entry.key.encode("ascii")) and found is None:
            found = entry
    return found


async def authenticate(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_key_header)],
) -> Caller:
    """Dependency: the :class:`Caller` behind ``Authorization: Bearer <key>`` or
    ``X-API-Key: <key>``; 401 without a key or with an unknown one."""
    presented = {value.strip() for value in (
        bearer.credentials if bearer is not None else None, header_key,
    ) if value is not None and value.strip()}
    if not presented:
        if request.headers.get("authorization"):
            raise _unauthorised("the Authorization header must read Bearer <API key>")
        raise _unauthorised("an API key is required (Authorization: Bearer <key> "
                            "or X-API-Key: <key>)")
    if len(presented) > 1:
        raise _unauthorised("Authorization and X-API-Key carry different keys; send one")
    entry = _find(presented.pop(), context_of(request).keys())
    if entry is None:
        raise _unauthorised("unknown API key")
    return Caller(key_name=entry.name, role=entry.role, user=entry.user)


AuthCaller = Annotated[Caller, Depends(authenticate)]
"""A handler parameter of this type makes the endpoint require an API key."""
