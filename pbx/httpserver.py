"""Serve an ASGI app (the HTTP API) with uvicorn inside the PBX's running event loop.

The PBX owns the process: its signal handlers, its logging and its loop. So the server here
binds its own sockets (a bind failure is an ``OSError`` naming the address, not uvicorn's
``SystemExit``), keeps uvicorn away from signal handlers and logging configuration, and runs
``Server.serve`` as one task on the loop that :meth:`HttpServer.start` is awaited on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

__all__ = ["HttpServer"]

_log = logging.getLogger(__name__)

_START_TIMEOUT = 10.0
"""Seconds uvicorn may take to start serving on sockets that are already bound."""
_GRACE = 5
"""Seconds requests in progress get to finish on stop before they are cancelled."""


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn's own version replaces the SIGINT/SIGTERM handlers with signal.signal(),
        # which would displace the PBX's loop.add_signal_handler() ones (and re-raise the
        # signal after serving). The PBX stops this server itself.
        yield


async def _bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for ``host:port``: one per address the host resolves to, all on one
    port (the first socket's when ``port`` is 0)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
            flags=socket.AI_PASSIVE,
        )
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve HTTP listen host {host!r}: {exc.strerror or exc}") from exc
    sockets: list[socket.socket] = []
    seen: set[tuple[Any, ...]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            key = (family, *address[:2])
            if key in seen:
                continue
            seen.add(key)
            bind_port = sockets[0].getsockname()[1] if sockets and port == 0 else port
            address = (address[0], bind_port, *address[2:])
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # As asyncio does: an IPv6 socket serves IPv6 only, so "::" and "0.0.0.0"
                # can be bound side by side.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                shown = f"[{host}]" if ":" in host else host
                reason = exc.strerror or str(exc)
                raise OSError(
                    exc.errno, f"cannot listen for HTTP on {shown}:{bind_port}: {reason}"
                ) from exc
            sock.listen(2048)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def _serve(server: uvicorn.Server, sockets: list[socket.socket]) -> None:
    try:
        await server.serve(sockets=sockets)
    except SystemExit as exc:
        # uvicorn exits the process on some start-up failures; here that would stop the
        # whole PBX (a task's SystemExit propagates out of the loop), so it becomes an error.
        raise RuntimeError(f"uvicorn gave up (exit status {exc.code})") from None
    finally:
        for sock in sockets:
            sock.close()


class HttpServer:
    """One uvicorn server for ``app`` on ``host:port``, run as a task on the current loop.

    ``await start()`` binds and returns once the server accepts connections (``port`` then
    holds the bound port, useful with port 0); ``await stop()`` closes the sockets, lets
    requests in progress finish for a few seconds, and returns when the server is gone.
    """

    def __init__(self, app: Any, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def host(self) -> str:
        """The host the server was asked to listen on."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port; raises ``RuntimeError`` before :meth:`start`."""
        if self._port is None:
            raise RuntimeError("the HTTP server is not started")
        return self._port

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and the end of :meth:`stop`."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Bind and start serving; raises ``OSError`` if the address cannot be bound."""
        if self._task is not None:
            raise RuntimeError("the HTTP server is already started")
        sockets = await _bind(self._host, self._requested_port)
        config = uvicorn.Config(
            self._app,
            host=self._host,
            port=self._requested_port,
            http="h11",
            ws="websockets-sansio",  # the event stream (pbx.api_events)
            lifespan="off",
            log_config=None,  # the PBX configures logging; uvicorn's lines go to its handlers
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=_GRACE,
        )
        server = _EmbeddedServer(config)
        self._stopping = False
        task = asyncio.create_task(_serve(server, sockets), name="http-server")
        self._server, self._task = server, task
        shown = f"[{self._host}]" if ":" in self._host else self._host
        try:
            async with asyncio.timeout(_START_TIMEOUT):
                while not server.started and not task.done():
                    await asyncio.sleep(0.01)
        except TimeoutError:
            await self._abort()
            raise OSError(f"the HTTP server on {shown}:{self._requested_port} did not start "
                          f"within {_START_TIMEOUT:g} s") from None
        if not server.started:
            failure = task.exception() if not task.cancelled() else None
            await self._abort()
            raise OSError(f"the HTTP server on {shown}:{self._requested_port} failed to "
                          f"start: {failure or 'cancelled'}") from failure
        self._port = sockets[0].getsockname()[1]
        task.add_done_callback(self._ended)
        _log.info("HTTP API listening on %s:%d", shown, self._port)

    async def stop(self) -> None:
        """Stop serving and wait until the server is gone; a no-op when not started."""
        server, task = self._server, self._task
        if server is None or task is None:
            return
        self._stopping = True
        server.should_exit = True
        try:
            # The server polls should_exit every 0.1 s, then waits up to _GRACE s for
            # requests in progress; past that (plus a margin) it is cancelled.
            await asyncio.wait_for(asyncio.shield(task), timeout=_GRACE + 2.0)
        except TimeoutError:
            _log.warning("the HTTP server did not stop in time; cancelling it")
            await self._abort()
        except asyncio.CancelledError:
            task.cancel()  # whoever stops the PBX is not waiting: do not leave it serving
            raise
        except Exception:
            _log.exception("the HTTP server failed while stopping")
        finally:
            self._server = self._task = None

    def _ended(self, task: asyncio.Task[None]) -> None:
        # Only stop() ends the server; an end on its own is a failure worth an error line.
        if self._task is task and not self._stopping and not task.cancelled():
            failure = task.exception()
            _log.error("the HTTP server stopped on its own: %s", failure or "no error given",
                       exc_info=failure)

    async def _abort(self) -> None:
        task = self._task
        self._server = self._task = None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception, SystemExit):
            await task
