"""The asyncio adapter: UDP and TCP sockets around the sans-I/O transaction layer.

This is the only module of sip/ that touches sockets, the event loop or the clock. Its loop is
the aioquic one: bytes arrive -> parse -> ``layer.receive(msg, peer, now)`` -> drain events to
the transaction user -> transmit what the layer queued -> re-arm the single timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ParseError
from .message import Request, Response, parse
from .stream import PONG, Frame, FramingError, KeepAlive, StreamFramer
from .transaction import Peer, TransactionEvent, TransactionLayer

logger = logging.getLogger(__name__)

TransactionUser = Callable[[TransactionEvent], None]


@dataclass(frozen=True, slots=True)
class ListenSpec:
    transport: str  # "udp" | "tcp"
    host: str
    port: int


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._owner.receive_bytes(data, Peer("udp", (addr[0], addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable) surface here on some platforms; nothing to do per
        # RFC 3261 18.4 beyond what the transaction timers already give.
        pass


class _Tcp(asyncio.Protocol):
    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner
        self.conn_id = next(owner._conn_ids)
        self.framer = StreamFramer(owner.max_message_size)
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        #: loop time since when a message has been received only in part (None: nothing pending)
        self.partial_since: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Peer("tcp", (host, port), self.conn_id)
        self._owner._conns[self.conn_id] = self
        self._owner._conn_by_addr[(host, port)] = self.conn_id

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        for ev in self.framer.feed(data):
            if isinstance(ev, Frame):
                self._owner.receive_bytes(ev.data, self.peer, stream=True)
            elif isinstance(ev, KeepAlive):
                self.transport.write(PONG)
            elif isinstance(ev, FramingError):
                logger.info("closing %s: %s", self.peer.addr, ev.reason)
                self.transport.close()
                return
        if self.framer.pending:
            if self.partial_since is None:
                self.partial_since = self._owner._loop.time()
        else:
            self.partial_since = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._conns.pop(self.conn_id, None)
        if self.peer is not None:
            if self._owner._conn_by_addr.get(self.peer.addr) == self.conn_id:
                del self._owner._conn_by_addr[self.peer.addr]
            self._owner.connection_closed(self.peer)


class SipTransport:
    """Sockets + transaction layer + one timer. The transaction user is a plain callback."""

    def __init__(
        self,
        layer: TransactionLayer,
        tu: TransactionUser,
        *,
        max_message_size: int = 65535,
        server_header: str | None = None,
        on_connection_closed: Callable[[Peer], None] | None = None,
    ) -> None:
        self.layer = layer
        self.tu = tu
        self.max_message_size = max_message_size
        self.server_header = server_header
        self.on_connection_closed = on_connection_closed
        self._loop = asyncio.get_running_loop()
        self._udp: dict[tuple[str, int], _Udp] = {}
        self._default_udp: _Udp | None = None
        self._servers: list[asyncio.Server] = []
        self._conns: dict[int, _Tcp] = {}
        self._conn_by_addr: dict[tuple[str, int], int] = {}
        self._conn_ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flushing = False
        self.bad_messages = 0
        self.stray_sends = 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def listen(self, spec: ListenSpec) -> tuple[str, int]:
        """Open one listening socket; returns the bound (host, port) (port 0 picks one)."""
        if spec.transport == "udp":
            transport, proto = await self._loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(spec.host, spec.port)
            )
            _grow_buffers(transport.get_extra_info("socket"))
            bound = transport.get_extra_info("sockname")[:2]
            self._udp[bound] = proto
            if self._default_udp is None:
                self._default_udp = proto
            return bound[0], bound[1]
        if spec.transport == "tcp":
            server = await self._loop.create_server(
                lambda: _Tcp(self), host=spec.host, port=spec.port, reuse_address=True
            )
            self._servers.append(server)
            sock = server.sockets[0].getsockname()
            return sock[0], sock[1]
        raise ValueError(f"unsupported transport {spec.transport!r}")

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for proto in self._udp.values():
            if proto.transport is not None:
                proto.transport.close()
        for c in list(self._conns.values()):
            if c.transport is not None:
                c.transport.close()
        for s in self._servers:
            s.close()
            await s.wait_closed()

    # -- receive path ------------------------------------------------------------------------
    def receive_bytes(self, data: bytes, peer: Peer, *, stream: bool = False) -> None:
        if not stream:
            if len(data) > self.max_message_size:
                self.bad_messages += 1
                return
            if data[:1] in (b"\r", b"\n") and not data.strip(b"\r\n"):
                # RFC 5626 4.4.1 keep-alive over UDP is STUN; a bare CRLF ping is common too.
                return
        now = self._loop.time()
        try:
            msg = parse(data, stream=stream)
        except ParseError as e:
            self.bad_messages += 1
            self._answer_bad(e, peer)
        else:
            if isinstance(msg, Request):
                _stamp_received(msg, peer)
            self.layer.receive(msg, peer, now)
        self.flush()

    def _answer_bad(self, err: ParseError, peer: Peer) -> None:
        # RFC 3261 8.2.6 / RFC 4475: answer a malformed request when there is enough of it to
        # address a response; never answer a response (RFC 3261 18.1.2).
        partial = err.partial
        if not isinstance(partial, Request) or not partial.headers.get("Via"):
            return
        resp = partial.response(err.status_code)
        detail = str(err).replace('"', "'")[:120]
        resp.headers.add("Warning", f'399 pbx "{detail}"')
        if self.server_header:
            resp.headers.add("Server", self.server_header)
        try:
            self.layer.send_stateless(resp, peer)
        except Exception:  # a partial message may still be too broken to serialise
            logger.debug("could not answer malformed request from %s", peer.addr)

    def connection_closed(self, peer: Peer) -> None:
        self.layer.report_transport_error(peer, self._loop.time())
        if self.on_connection_closed is not None:
            self.on_connection_closed(peer)
        self.flush()

    def close_stalled(self, older_than: float = 30.0) -> int:
        """Close stream connections holding a partial message for longer than ``older_than``
        seconds (a client trickling bytes must not hold a connection forever). Idle
        connections with nothing pending, such as registered phones between keep-alives, stay.
        """
        limit = self._loop.time() - older_than
        stalled = [c for c in self._conns.values()
                   if c.partial_since is not None and c.partial_since < limit]
        for c in stalled:
            if c.transport is not None:
                logger.info("closing %s: partial message for over %.0f s",
                            c.peer.addr if c.peer else "?", older_than)
                c.transport.close()
        return len(stalled)

    # -- the fixed loop ----------------------------------------------------------------------
    def flush(self) -> None:
        """Drain events to the TU and send what the layer queued; re-arm the timer."""
        if self._flushing:
            return  # the outer call finishes the job (TU callbacks may call send_* + flush)
        self._flushing = True
        try:
            layer = self.layer
            while True:
                ev = layer.next_event()
                if ev is not None:
                    try:
                        self.tu(ev)
                    except Exception:
                        logger.exception("error handling %s", type(ev).__name__)
                    continue
                out = layer.datagrams_to_send()
                if not out:
                    break
                for data, peer in out:
                    self.send(data, peer)
        finally:
            self._flushing = False
        self._arm()

    def _arm(self) -> None:
        at = self.layer.get_timer()
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.layer.handle_timer(self._loop.time())
        self.flush()

    # -- send path ---------------------------------------------------------------------------
    def send(self, data: bytes, peer: Peer) -> None:
        if peer.transport == "udp":
            proto = self._default_udp
            if proto is None or proto.transport is None:
                return
            proto.transport.sendto(data, peer.addr)
            return
        conn = self._conns.get(peer.conn) if peer.conn is not None else None
        if conn is None:
            cid = self._conn_by_addr.get(peer.addr)
            conn = self._conns.get(cid) if cid is not None else None
        if conn is not None and conn.transport is not None:
            conn.transport.write(data)
            return
        # No connection to reuse (RFC 3261 18.1.1): open one, then send.
        self._loop.create_task(self._connect_and_send(data, peer))

    async def _connect_and_send(self, data: bytes, peer: Peer) -> None:
        try:
            _, proto = await asyncio.wait_for(
                self._loop.create_connection(lambda: _Tcp(self), peer.addr[0], peer.addr[1]), 5
            )
        except (OSError, TimeoutError):
            self.layer.report_transport_error(peer, self._loop.time())
            self.flush()
            return
        if proto.transport is not None:
            proto.transport.write(data)

    def local_address(self, transport: str = "udp") -> tuple[str, int]:
        if transport == "udp" and self._default_udp is not None:
            t = self._default_udp.transport
            if t is not None:
                host, port = t.get_extra_info("sockname")[:2]
                return host, port
        for s in self._servers:
            host, port = s.sockets[0].getsockname()[:2]
            return host, port
        raise RuntimeError("not listening")


#: Socket buffer for the UDP listener: room for about 4,000 datagrams, so that a burst (or a
#: garbage-collection pause) does not overflow the kernel's default of about 200.
UDP_BUFFER = 4 * 1024 * 1024


def _grow_buffers(sock: socket.socket | None) -> None:
    if sock is None:
        return
    for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):
        # SO_RCVBUFFORCE/SO_SNDBUFFORCE (Linux, 33/32) pass net.core.rmem_max for a privileged
        # process; otherwise the plain option is capped at that sysctl (see operations.md).
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, UDP_BUFFER)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, UDP_BUFFER)


def _stamp_received(req: Request, peer: Peer) -> None:
    """RFC 3261 18.2.1 ``received`` and RFC 3581 4 ``rport`` on the top Via."""
    via = req.vias[0] if req.vias else None
    if via is None:
        return
    changed = False
    if via.host != peer.addr[0]:
        via.params["received"] = peer.addr[0]
        changed = True
    if "rport" in via.params and via.params["rport"] is None:
        via.params["rport"] = str(peer.addr[1])
        changed = True
    if changed:
        req.set_top_via(via)


__all__ = ["ListenSpec", "Response", "SipTransport", "TransactionUser"]
