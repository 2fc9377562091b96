"""The shared-port RTP relay: every leg of every call on ONE UDP port, forwarded in batches.

Theory of operation. The per-call relay (:mod:`media.udp`) gives each leg its own port pair and
pays, per packet, a ``recvmsg``, an empty ``recvmsg`` (the event loop reads until ``EAGAIN``)
and a ``sendmsg``, plus Python work per datagram. Here the SDP of every leg names the same
port (RTCP on port + 1, also shared, RFC 3550 11), and legs are told apart by the phone's
source address: a leg's expected remote comes from its SDP (``set_remote``) and packets from
exactly that ``(ip, port)`` belong to it, while replies go to the same address (symmetric RTP,
RFC 4961). A packet from any other source is dropped and counted
(:attr:`SharedPortRelay.dropped_unknown`).

An ``add_reader`` callback drains the socket with ``recvmmsg`` (up to 512 datagrams a call,
into preallocated buffers) and decides for the whole batch at once with numpy: the source
(packed ``ip << 16 | port``) is looked up in a sorted array of the legs' addresses, giving the
leg; the other leg of the same call is ``leg ^ 1``; forwardable packets go out in one
``sendmmsg`` whose messages point straight into the receive buffer, each with its own
destination. Muted legs (music on hold), legs whose peer is not known yet, µ-law <-> A-law
transcoding (one table lookup over all converted payloads of the batch) and the per-leg
counters (``np.add.at``) are handled in the same pass. Recorded legs hand a copy of each
received RTP packet to the call's :class:`media.relay.PacketSink` (the recording mixer) the way
the per-call relay does: the first packet through ``capture``, then list appends.

Trade-off: latching. A phone behind NAT whose packets arrive from another address than the one
in its SDP cannot be latched by "first packet on its port" here, since the port tells nothing
about the call; such a phone needs ICE or the per-call-port relay (the default). IPv4 only.
Linux only (``recvmmsg``/``sendmmsg`` through ctypes, see :mod:`media.mmsg`). The batch
engine (leg tables and the forwarding pass) is :mod:`media.sharedengine`; this module holds
the handles and the relay the call controller uses.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import socket
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

import numpy as np

from media.relay import (
    Address,
    Leg,
    LegStats,
    PacketSink,
    PortAllocator,
    RelayStats,
)
from media.sharedengine import SharedEngine
from media.sockets import bind_pair
from media.transcode import Transcoding
from media.udp import RelayHandle

__all__ = ["Reactor", "SharedPortRelay", "SharedRelayHandle"]

_SO_SNDBUFFORCE, _SO_RCVBUFFORCE = 32, 33  # <asm-generic/socket.h>
_IP_MTU_DISCOVER, _IP_PMTUDISC_PROBE = 10, 3  # <linux/in.h>
_SOCKET_BUFFER = 4 << 20


class SharedRelayHandle(RelayHandle):
    """One relayed call on the shared port: the interface of :class:`media.udp.RelayHandle`."""

    def __init__(self, relay: SharedPortRelay, engine: SharedEngine, base: int) -> None:
        # The per-call handle's sockets and core do not exist here: every method is its own.
        self._shared = relay
        self._engine = engine
        self._base = base
        self._closed = False
        self._final: RelayStats | None = None  # the counters as they were at close

    def port(self, leg: Leg) -> int:
        """The RTP port of ``leg``: the shared port, the same for every leg."""
        return self._engine.port

    def rtcp_port(self, leg: Leg) -> int:
        """The RTCP port of ``leg``: the shared port + 1."""
        return self._engine.port + 1

    def set_remote(
        self, leg: Leg, addr: Address | None, rtcp_addr: Address | None = None
    ) -> None:
        """Where ``leg``'s phone sends from and receives media (its SDP; None: unknown).

        Packets from exactly this address are ``leg``'s. ``rtcp_addr`` defaults to
        ``(host, port + 1)`` (RFC 3550 11). Hosts must be IPv4 literals.
        """
        if addr is None:
            rtcp_addr = None
        else:
            addr = _ipv4(addr)
            if rtcp_addr is None:
                if addr[1] >= 65535:
                    raise ValueError(f"RTP port {addr[1]} leaves no room for RTCP at port + 1")
                rtcp_addr = (addr[0], addr[1] + 1)
            else:
                rtcp_addr = _ipv4(rtcp_addr)
        if self._closed:
            return
        engine, slot = self._engine, self._base + leg
        if addr != engine.remote[slot] and addr is not None:
            sink = engine.sinks[slot]
            if sink is not None:
                # A new phone brings a new SSRC and timestamp base: a new stream.
                engine.rec_lists[slot] = None
                sink.restart(leg)
        engine.remote[slot] = addr
        displaced = {engine.rtp.table.set_key(slot, addr),
                     engine.rtcp.table.set_key(slot, rtcp_addr)}
        for other in displaced:
            if other is not None:
                engine.refresh(other & ~1)
        engine.refresh(self._base)

    def set_recorder(self, sink: PacketSink | None) -> None:
        """Also hand every RTP packet the phones send to ``sink`` (call recording), or stop."""
        if self._closed:
            return
        for slot in (self._base, self._base + 1):
            self._engine.set_recorder(slot, sink)

    def set_transcoding(self, leg: Leg, xcode: Transcoding | None) -> None:
        """Convert the RTP ``leg``'s phone sends before it goes to the other leg."""
        if not self._closed:
            self._engine.set_xcode(self._base + leg, xcode)

    def mute(self, leg: Leg, muted: bool) -> None:
        """Stop (or resume) forwarding what ``leg``'s phone sends (still counted, recorded)."""
        if not self._closed:
            self._engine.muted[self._base + leg] = muted
            self._engine.refresh(self._base)

    def send_rtp(self, leg: Leg, data: bytes) -> bool:
        """Send a packet of the PBX's own to ``leg``'s phone from the shared RTP port. False if
        the phone's address is not known yet or the socket is full."""
        dest = self._engine.remote[self._base + leg]
        if dest is None or self._closed:
            return False
        try:
            self._engine.rtp.sock.sendto(data, dest)
        except OSError:
            return False
        return True

    def stats(self) -> RelayStats:
        """A snapshot of the packet counters of both legs (after :meth:`close`: as they were
        when it closed)."""
        if self._final is not None:
            return self._final
        return RelayStats(self._leg_stats(Leg.A), self._leg_stats(Leg.B))

    def last_rx(self, leg: Leg) -> float | None:
        """When ``leg``'s phone last sent a packet (RTP or RTCP) the relay accepted."""
        if self._final is not None:
            return self._final.leg(leg).last_rx
        slot = self._base + leg
        # fmax ignores a NaN (a channel that never received) where max() would return it.
        last = float(np.fmax(self._engine.rtp.table.last[slot],
                             self._engine.rtcp.table.last[slot]))
        return None if math.isnan(last) else last

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    async def close(self) -> None:
        """Stop relaying this call and free its legs. Safe to call more than once."""
        if self._closed:
            return
        self._final = self.stats()
        self._closed = True
        self._engine.release(self._base)
        self._engine.handles.discard(self)

    async def __aenter__(self) -> SharedRelayHandle:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _leg_stats(self, leg: Leg) -> LegStats:
        engine, slot = self._engine, self._base + leg
        rtp, rtcp = engine.rtp.table, engine.rtcp.table
        remote = engine.remote[slot]
        rtcp_remote: Address | None = None
        if rtcp.key[slot] >= 0:
            names = rtcp.names[slot]
            rtcp_remote = (socket.inet_ntoa(names[4:8].tobytes()),
                           int(names[2:4].view(">u2")[0]))
        return LegStats(
            remote=remote,
            latched=remote if remote is not None and rtp.key[slot] >= 0 else None,
            rtcp_latched=rtcp_remote,
            rtp_packets=int(rtp.packets[slot]),
            rtp_bytes=int(rtp.bytes[slot]),
            rtcp_packets=int(rtcp.packets[slot]),
            rtcp_bytes=int(rtcp.bytes[slot]),
            dropped_foreign=0,  # a foreign source is not attributable to a leg here
            dropped_no_remote=0,
            dropped_no_peer=int(rtp.dropped_no_peer[slot] + rtcp.dropped_no_peer[slot]),
            dropped_congested=int(rtp.dropped_congested[slot] + rtcp.dropped_congested[slot]),
            last_rx=self.last_rx(leg),
        )


class Reactor(Protocol):
    """What the relay needs of an event loop: readiness callbacks on a file descriptor."""

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever ``fd`` is readable."""
        ...

    def remove_reader(self, fd: int) -> bool:
        """Stop watching ``fd``."""
        ...


class SharedPortRelay:
    """The shared-port relay engine: every call's legs on one RTP/RTCP port pair per bind
    address, taken from ``ports`` when the first call on that address opens and kept until
    :meth:`close`.

    Use it through :class:`media.udp.RtpRelay` with ``shared_port=True``, which has the
    interface the call controller uses and brings the event loop and its clock.
    """

    def __init__(self, ports: PortAllocator) -> None:
        self._ports = ports
        self._engines: dict[str, tuple[SharedEngine, Reactor]] = {}

    @property
    def ports(self) -> PortAllocator:
        """The allocator the shared port pairs come from."""
        return self._ports

    @property
    def sessions(self) -> int:
        """How many relayed calls are open."""
        return sum(len(engine.handles) for engine, _ in self._engines.values())

    @property
    def dropped_unknown(self) -> int:
        """Packets dropped because their source was no leg's remote (all shared ports)."""
        return sum(engine.dropped_unknown for engine, _ in self._engines.values())

    @property
    def dropped_oversize(self) -> int:
        """Packets from a known leg dropped for being longer than a receive slot."""
        return sum(engine.dropped_oversize for engine, _ in self._engines.values())

    @property
    def batches(self) -> tuple[int, int]:
        """``(batches, datagrams)`` read so far: the mean batch size is their ratio."""
        engines = [engine for engine, _ in self._engines.values()]
        return (sum(e.batches for e in engines), sum(e.received for e in engines))

    def shared_port(self, bind_host: str) -> int | None:
        """The RTP port every leg on ``bind_host`` uses, or None before the first call."""
        found = self._engines.get(bind_host)
        return None if found is None else found[0].port

    def open_session(self, bind_host: str, loop: Reactor,
                     clock: Callable[[], float]) -> SharedRelayHandle:
        """A relayed call on the shared port of ``bind_host`` (an IPv4 literal).

        The first call on an address binds its port pair and has ``loop`` watch it; ``clock``
        is what ``now`` means for :meth:`SharedRelayHandle.last_rx`. Raises
        :class:`~media.relay.NoPortsError` when no pair in the range can be bound.
        """
        try:
            ip = ipaddress.ip_address(bind_host)
        except ValueError:
            raise ValueError(f"bind_host {bind_host!r} is not an IP address literal") from None
        if ip.version != 4:
            raise ValueError(f"the shared-port relay is IPv4 only; bind_host is {bind_host!r}")
        found = self._engines.get(bind_host)
        if found is None:
            found = self._start(bind_host, loop, clock)
            self._engines[bind_host] = found
        engine = found[0]
        handle = SharedRelayHandle(self, engine, engine.allocate())
        engine.handles.add(handle)
        return handle

    async def close(self) -> None:
        """Close every open session and the shared sockets; the port pairs go back."""
        for bind_host, (engine, loop) in list(self._engines.items()):
            for handle in list(engine.handles):
                await handle.close()
            engine.close(loop.remove_reader)
            del self._engines[bind_host]
            self._ports.release(engine.port)

    def _start(self, bind_host: str, loop: Reactor,
               clock: Callable[[], float]) -> tuple[SharedEngine, Reactor]:
        port, rtp, rtcp = bind_pair(self._ports, bind_host, _bind)
        engine = SharedEngine(port, rtp, rtcp, clock)
        try:
            for end in (engine.rtp, engine.rtcp):
                loop.add_reader(end.fd, end.on_readable)
        except BaseException:
            engine.close(loop.remove_reader)
            self._ports.release(port)
            raise
        return engine, loop

def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        # Every call's packets queue here: room for a few tens of milliseconds of all of
        # them. The FORCE options pass net.core.[rw]mem_max where the PBX may (CAP_NET_ADMIN).
        for force, plain in ((_SO_RCVBUFFORCE, socket.SO_RCVBUF),
                             (_SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, _SOCKET_BUFFER)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, plain, _SOCKET_BUFFER)
        # DF on every datagram, ignoring path MTU discovery: the kernel then numbers the IP
        # ID from a per-socket counter instead of hashing per packet (an atomic datagram's ID
        # carries nothing, RFC 6864 4.1); 3 % of the engine at 1,500 calls.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_PROBE)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _ipv4(addr: Address) -> Address:
    """``addr`` with its host as a dotted IPv4 literal; ValueError for anything else."""
    if not isinstance(addr, tuple) or len(addr) < 2:
        raise ValueError(f"bad remote address {addr!r}: expected (host, port)")
    host, port = addr[0], addr[1]
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValueError(f"bad remote address {addr!r}: port must be 1..65535")
    try:
        ip = ipaddress.ip_address(host)
    except (ValueError, TypeError):
        raise ValueError(f"remote {addr!r} is not an IP address literal") from None
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is None:
            raise ValueError(f"remote {addr!r} is IPv6; the shared-port relay is IPv4 only")
        ip = mapped
    return (str(ip), port)
