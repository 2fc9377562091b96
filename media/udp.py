"""The asyncio side of the RTP relay: sockets for :class:`media.relay.RelaySession`.

This is a thin adapter. Each leg of a relayed call gets two datagram endpoints, RTP on an even
port and RTCP on the next one, bound on ports from a :class:`~media.relay.PortAllocator`. A
datagram is forwarded straight out of the other leg's socket from inside ``datagram_received``: no
task, no queue and no log line per packet. The common packet takes the core's precomputed fast
path (:class:`media.relay.Channel`: no call into the core and no clock read); any other packet is
handed to :meth:`RelaySession.on_packet` with the clock (``loop.time`` unless one is given).

Nothing here depends on the concrete transport classes, so it runs under the default event loop
and under uvloop alike.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING

from media.relay import (
    Address,
    Leg,
    PacketSink,
    PortAllocator,
    RelaySession,
    RelayStats,
)
from media.sockets import bind_pair, bind_udp, for_socket
from media.transcode import Transcoding, transcode_rtp

if TYPE_CHECKING:
    from media.shared import SharedPortRelay

__all__ = ["RelayHandle", "RtpRelay"]


# How long close() waits for the event loop to confirm that the sockets are closed.
_CLOSE_TIMEOUT = 2.0


class _Endpoint(asyncio.DatagramProtocol):
    """One bound port (a leg's RTP or RTCP) feeding the shared :class:`RelaySession`."""

    __slots__ = (
        "_channel", "_clock", "_core", "_leg", "_lost", "_peers", "_rtcp", "_send", "transport",
        "writable",
    )

    def __init__(
        self,
        core: RelaySession,
        leg: Leg,
        rtcp: bool,
        clock: Callable[[], float],
        lost: asyncio.Future[None],
    ) -> None:
        self._core = core
        self._leg = leg
        self._rtcp = rtcp
        self._channel = core.channels[leg * 2 + rtcp]
        self._clock = clock
        self._lost = lost
        # The endpoints of the same channel (RTP or RTCP) on legs A and B, set once both exist.
        self._peers: tuple[_Endpoint, _Endpoint] | None = None
        # sendto of the other leg's socket (same channel), set once both exist.
        self._send: Callable[[bytes, Address], None] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.writable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Typed as BaseTransport by asyncio; a datagram endpoint always hands a datagram one.
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        # The fast path (see media.relay.Channel): the common packet costs a comparison, two
        # counters, a list append when recorded, and the send.
        channel = self._channel
        dest = channel.fast
        if dest is not None and addr == channel.latched:
            channel.packets += 1
            channel.bytes += len(data)
            rec = channel.rec
            if rec is not None:
                rec.append(data)
            self._send(data, dest)  # type: ignore[misc]  # set whenever fast is
            return
        self._slow(data, addr)

    def _slow(self, data: bytes, addr: Address) -> None:
        route = self._core.on_packet(self._leg, data, addr, self._rtcp, self._clock())
        if route is None or self._peers is None:
            return
        peer = self._peers[route[0]]
        transport = peer.transport
        if peer.writable and transport is not None:
            xcode = self._core.xcode[self._leg]
            if xcode is not None and not self._rtcp:
                data = transcode_rtp(data, xcode)
            transport.sendto(data, route[1])
        else:
            self._core.count_congested(self._leg, data, self._rtcp)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable while a phone restarts, ...) say nothing the caller can
        # act on per packet; a phone that is really gone shows up as an RTP timeout (last_rx).
        return

    def pause_writing(self) -> None:
        # RTP is real-time: when the socket buffer is full, drop rather than queue.
        self.writable = False
        self._core.set_blocked(self._leg, self._rtcp, True)

    def resume_writing(self) -> None:
        self.writable = True
        self._core.set_blocked(self._leg, self._rtcp, False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable = False
        self._core.set_blocked(self._leg, self._rtcp, True)
        if not self._lost.done():
            self._lost.set_result(None)


class RelayHandle:
    """One relayed call: two legs, each with an RTP port and its RTCP port (``port + 1``)."""

    def __init__(
        self,
        relay: RtpRelay,
        core: RelaySession,
        family: socket.AddressFamily,
        ports: tuple[int, int],
        endpoints: list[_Endpoint],
        lost: list[asyncio.Future[None]],
    ) -> None:
        self._relay = relay
        self._core = core
        self._family = family
        self._ports = ports
        self._endpoints = endpoints
        self._lost = lost
        self._closed = False

    def port(self, leg: Leg) -> int:
        """The RTP port of ``leg`` (put it in the SDP sent to that leg's phone)."""
        return self._ports[leg]

    def rtcp_port(self, leg: Leg) -> int:
        """The RTCP port of ``leg``: always ``port(leg) + 1``."""
        return self._ports[leg] + 1

    def set_remote(
        self, leg: Leg, addr: Address | None, rtcp_addr: Address | None = None
    ) -> None:
        """Tell the relay where ``leg``'s phone receives media (from its SDP; None when unknown).

        The host must be an IP literal: a host name from the SDP is resolved by the caller,
        since resolving in the packet path would block the event loop.
        """
        self._core.set_remote(
            leg,
            None if addr is None else for_socket(self._family, addr, "relay"),
            None if rtcp_addr is None else for_socket(self._family, rtcp_addr, "relay"),
        )

    def set_recorder(self, sink: PacketSink | None) -> None:
        """Also hand every RTP packet the phones send to ``sink`` (call recording), or stop.

        See :class:`media.relay.PacketSink`: after a leg's first packet the relay only appends
        that leg's packets to a list the sink owns.
        """
        self._core.set_recorder(sink)

    def set_transcoding(self, leg: Leg, xcode: Transcoding | None) -> None:
        """Convert the RTP ``leg``'s phone sends before it goes to the other leg."""
        self._core.set_transcoding(leg, xcode)

    def mute(self, leg: Leg, muted: bool) -> None:
        """Stop (or resume) forwarding the media ``leg``'s phone sends to the other leg."""
        self._core.mute(leg, muted)

    def send_rtp(self, leg: Leg, data: bytes) -> bool:
        """Send an RTP packet of the PBX's own to ``leg``'s phone, from that leg's RTP port (so
        it arrives from where the phone expects media). False if the phone's address is not
        known yet or the socket is full."""
        dest = self._core.remote(leg)
        endpoint = self._endpoints[leg * 2]
        transport = endpoint.transport
        if dest is None or transport is None or not endpoint.writable or self._closed:
            return False
        transport.sendto(data, dest)
        return True

    def stats(self) -> RelayStats:
        """A snapshot of the packet counters of both legs (``last_rx`` as for
        :meth:`last_rx`)."""
        now = self._relay._now()
        if now is not None:
            self._core.observe(now)
        return self._core.stats()

    def last_rx(self, leg: Leg) -> float | None:
        """When ``leg``'s phone last sent an accepted packet, on the relay's clock.

        Packets are not time-stamped one by one: a packet that arrived since the previous
        query counts as arriving now, so this is accurate to the interval between queries
        (the call controller asks once a second for its RTP timeout).
        """
        now = self._relay._now()
        if now is not None:
            self._core.observe(now)
        return self._core.last_rx(leg)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    async def close(self) -> None:
        """Close the four sockets and give the ports back. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        for endpoint in self._endpoints:
            if endpoint.transport is not None:
                endpoint.transport.close()
        # Ports go back only once the sockets are really closed, so the next call can bind them.
        await asyncio.wait(self._lost, timeout=_CLOSE_TIMEOUT)
        self._relay._forget(self)

    async def __aenter__(self) -> RelayHandle:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

class RtpRelay:
    """The RTP relay engine: opens and tracks :class:`RelayHandle` objects (sockets per call).

    ``clock`` is what ``now`` means for :meth:`RelayHandle.last_rx`; by default the running
    loop's ``time()``, the clock ``loop.call_at`` uses for timers.

    ``shared_port=True`` selects the shared-port relay instead (:mod:`media.shared`: every
    leg of every call on one port pair, forwarded in batches; IPv4 and Linux only, and no
    latching of phones behind NAT); the handles it opens have the same interface.
    """

    def __init__(
        self,
        ports: PortAllocator,
        *,
        clock: Callable[[], float] | None = None,
        shared_port: bool = False,
    ) -> None:
        self._ports = ports
        self._clock = clock
        self._handles: set[RelayHandle] = set()
        self._shared: SharedPortRelay | None = None
        if shared_port:
            # Imported here: media.shared builds on this module's RelayHandle.
            from media.shared import SharedPortRelay

            self._shared = SharedPortRelay(ports)

    @property
    def shared(self) -> SharedPortRelay | None:
        """The shared-port engine when ``shared_port`` was chosen (its drop counters)."""
        return self._shared

    def _now(self) -> float | None:
        if self._clock is not None:
            return self._clock()
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return None  # outside the loop: no clock to stamp with

    @property
    def ports(self) -> PortAllocator:
        """The allocator the RTP ports come from."""
        return self._ports

    @property
    def sessions(self) -> int:
        """How many relayed calls are open."""
        if self._shared is not None:
            return self._shared.sessions
        return len(self._handles)

    async def open_session(self, bind_host: str) -> RelayHandle:
        """Bind RTP and RTCP for both legs on ``bind_host`` (an IP literal) and start relaying.

        Ports that cannot be bound (taken by another program) are skipped. Raises
        :class:`~media.relay.NoPortsError` when no pair in the range can be had.
        """
        if self._shared is not None:
            loop = asyncio.get_running_loop()
            return self._shared.open_session(bind_host, loop, self._clock or loop.time)
        try:
            family = (
                socket.AF_INET6 if ipaddress.ip_address(bind_host).version == 6 else socket.AF_INET
            )
        except ValueError:
            raise ValueError(f"bind_host {bind_host!r} is not an IP address literal") from None
        loop = asyncio.get_running_loop()
        clock = self._clock or loop.time
        pairs: list[tuple[int, socket.socket, socket.socket]] = []
        try:
            for _ in Leg:
                pairs.append(bind_pair(self._ports, bind_host, partial(bind_udp, family)))
        except BaseException:
            for port, rtp_sock, rtcp_sock in pairs:
                rtp_sock.close()
                rtcp_sock.close()
                self._ports.release(port)
            raise

        core = RelaySession()
        endpoints: list[_Endpoint] = []
        lost: list[asyncio.Future[None]] = []
        try:
            for leg, (_, rtp_sock, rtcp_sock) in zip(Leg, pairs, strict=True):
                for is_rtcp, sock in ((False, rtp_sock), (True, rtcp_sock)):
                    future: asyncio.Future[None] = loop.create_future()
                    endpoint = _Endpoint(core, leg, is_rtcp, clock, future)
                    await loop.create_datagram_endpoint(_returning(endpoint), sock=sock)
                    endpoints.append(endpoint)
                    lost.append(future)
        except BaseException:
            for endpoint in endpoints:
                if endpoint.transport is not None:
                    endpoint.transport.close()
            for port, rtp_sock, rtcp_sock in pairs:
                rtp_sock.close()
                rtcp_sock.close()
                self._ports.release(port)
            raise
        # endpoints: A-RTP, A-RTCP, B-RTP, B-RTCP
        rtp_peers = (endpoints[0], endpoints[2])
        rtcp_peers = (endpoints[1], endpoints[3])
        for endpoint in endpoints:
            endpoint._peers = rtcp_peers if endpoint._rtcp else rtp_peers
            peer = endpoint._peers[endpoint._leg.other]
            assert peer.transport is not None  # create_datagram_endpoint has connected it
            endpoint._send = peer.transport.sendto
        handle = RelayHandle(self, core, family, (pairs[0][0], pairs[1][0]), endpoints, lost)
        self._handles.add(handle)
        return handle

    async def close(self) -> None:
        """Close every open session."""
        if self._shared is not None:
            await self._shared.close()
        for handle in list(self._handles):
            await handle.close()

    def _forget(self, handle: RelayHandle) -> None:
        if handle in self._handles:
            self._handles.discard(handle)
            for port in handle._ports:
                self._ports.release(port)


def _returning(endpoint: _Endpoint) -> Callable[[], _Endpoint]:
    return lambda: endpoint
