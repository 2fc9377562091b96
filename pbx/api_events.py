"""The live event stream of the HTTP API: ``GET /api/v1/events`` upgraded to a WebSocket.

Browsers cannot set headers on a WebSocket, so the API key may also come as the ``key`` query
parameter (or ``Authorization: Bearer`` / ``X-API-Key`` as elsewhere). Each message is one
JSON event of :mod:`pbx.events`; an ``events.dropped`` message tells a client that fell behind
how many events it lost. An agent's key sees the calls of its own user and calls not yet given
to anyone (a ringing queue or group call); supervisor and admin keys see every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac

from fastapi import APIRouter, FastAPI, WebSocket, WebSocketDisconnect

from pbx.api_base import context_of
from pbx.events import EventHub

__all__ = ["include_events"]

router = APIRouter()

#: WebSocket close code for a refused key (RFC 6455 7.4.2: 4000-4999 are the application's).
UNAUTHORISED = 4401


@router.websocket("/events")
async def event_stream(websocket: WebSocket) -> None:
    hub: EventHub = websocket.app.state.events
    presented = websocket.query_params.get("key") or websocket.headers.get("x-api-key") or ""
    auth = websocket.headers.get("authorization", "")
    if not presented and auth.lower().startswith("bearer "):
        presented = auth[7:].strip()
    accepted = context_of(websocket).keys  # type: ignore[arg-type]
    entry = next((k for k in accepted()
                  if presented and hmac.compare_digest(k.key.encode(), presented.encode())),
                 None)
    if entry is None:
        await websocket.close(code=UNAUTHORISED, reason="an API key is required (?key=...)")
        return
    await websocket.accept()
    sub = hub.subscribe(None if entry.role in ("supervisor", "admin") else entry.user)
    reported = 0
    receiver = asyncio.ensure_future(websocket.receive())
    try:
        await websocket.send_json({"event": "events.ready", "key": entry.name})
        while True:
            getter = asyncio.ensure_future(sub.queue.get())
            done, _ = await asyncio.wait({getter, receiver},
                                         return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:
                getter.cancel()
                message = receiver.result()
                if message.get("type") == "websocket.disconnect":
                    return
                receiver = asyncio.ensure_future(websocket.receive())
                continue
            if sub.dropped > reported:
                await websocket.send_json({"event": "events.dropped",
                                           "count": sub.dropped - reported})
                reported = sub.dropped
            await websocket.send_json(getter.result())
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        hub.unsubscribe(sub)
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiver


def include_events(app: FastAPI, hub: EventHub, prefix: str) -> None:
    """Serve the event stream of ``hub`` at ``prefix``/events."""
    app.state.events = hub
    app.include_router(router, prefix=prefix)
