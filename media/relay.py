"""Sans-I/O core of the RTP relay: symmetric-RTP latching, forwarding decisions, port allocation.

Theory of operation: a bridged call has two legs, A and B. The PBX owns an RTP port (even) and
its RTCP port (RTP + 1, RFC 3550 11) per leg; each leg's phone is told, through the SDP of its
dialog, to send to that leg's ports. A :class:`RelaySession` decides what to do with every packet
that arrives on one of the four ports: RTP received on A's port goes out of B's RTP port to B's
phone, and vice versa; RTCP likewise between the RTCP ports.

Latching (symmetric RTP, RFC 4961; the usual NAT traversal for phones that put a private address
in their SDP): :meth:`RelaySession.set_remote` gives the address from a leg's SDP. The first
packet that then arrives on that leg's port, from whatever source, latches the leg to that
source: replies go to it, and packets from any other source are dropped (``dropped_foreign``).
RTP and RTCP latch separately, since a NAT maps them to unrelated ports. A new address from a
re-INVITE unlatches the leg, and the next packet latches it again. Until a leg's address is known
(the callee has not answered yet) nothing is accepted from it and nothing is sent to it.

:meth:`RelaySession.on_packet` decides for any packet, with the time passed in (``now``); nothing
here touches sockets or clocks. At 100 packets/s per call even that call is a measurable share of
a core, so each port's :class:`Channel` also carries a precomputed fast-path destination, kept up
to date whenever latching, mute, transcoding, congestion or recording change: the I/O layer
forwards the common packet with a comparison, two counters, an optional list append and a send,
and calls :meth:`RelaySession.on_packet` for everything else. Fast-path packets carry no time:
:meth:`RelaySession.observe` turns "the counters moved" into a receive time when asked.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .transcode import Transcoding

__all__ = [
    "Address",
    "Channel",
    "Leg",
    "LegStats",
    "NoPortsError",
    "PacketSink",
    "PortAllocator",
    "RelaySession",
    "RelayStats",
]

#: A UDP address, ``(host, port)``. Addresses received on IPv6 sockets are the 4-tuples that
#: the socket module gives, and are passed through unchanged.
Address = tuple[str, int]


class Leg(enum.IntEnum):
    """One side of a bridged call."""

    A = 0
    B = 1

    @property
    def other(self) -> Leg:
        """The leg on the far side of the bridge."""
        return Leg.B if self is Leg.A else Leg.A


class NoPortsError(RuntimeError):
    """Every RTP port pair in the configured range is in use."""


class PortAllocator:
    """Hands out even RTP ports from ``[lo, hi]``; each comes with its RTCP port (``port + 1``).

    Allocation and release are O(1). Released ports go to the back of the queue, so a port is
    reused as late as possible and stray packets from the call that had it find nobody. A port
    the caller could not bind is given back with :meth:`release` and is simply tried again later.
    """

    def __init__(self, lo: int, hi: int) -> None:
        if not (isinstance(lo, int) and isinstance(hi, int)):
            raise TypeError("rtp_ports bounds must be integers")
        first = lo + (lo % 2)  # RFC 3550 11: RTP uses an even port, RTCP the next odd one
        if not (1 <= lo <= hi <= 65535) or first + 1 > hi:
            raise ValueError(
                f"rtp_ports [{lo}, {hi}] must lie within 1..65535 and hold at least one "
                "even port followed by its odd RTCP port"
            )
        self._lo = lo
        self._hi = hi
        self._free: deque[int] = deque(range(first, hi, 2))
        self._in_use: set[int] = set()

    @property
    def capacity(self) -> int:
        """How many port pairs the range holds."""
        return len(self._free) + len(self._in_use)

    @property
    def available(self) -> int:
        """How many port pairs are free now."""
        return len(self._free)

    @property
    def in_use(self) -> int:
        """How many port pairs are allocated now."""
        return len(self._in_use)

    def allocate(self) -> int:
        """Take the next free even port; raises :class:`NoPortsError` when none is left."""
        if not self._free:
            raise NoPortsError(
                f"all {self.capacity} RTP port pairs in [{self._lo}, {self._hi}] are in use"
            )
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def release(self, port: int) -> None:
        """Give ``port`` back. Releasing a port that is not allocated is a ``ValueError``."""
        try:
            self._in_use.remove(port)
        except KeyError:
            raise ValueError(f"RTP port {port} is not allocated") from None
        self._free.append(port)


@dataclass(frozen=True, slots=True)
class LegStats:
    """What one leg's phone sent to the relay, and where the relay sends to it."""

    remote: Address | None
    """The RTP address from the leg's SDP, or None while it is unknown."""
    latched: Address | None
    """The source RTP is latched to (the phone's real address), or None before latching."""
    rtcp_latched: Address | None
    """The source RTCP is latched to, or None."""
    rtp_packets: int
    """RTP packets received from this leg's phone and forwarded to the other leg."""
    rtp_bytes: int
    rtcp_packets: int
    """RTCP packets received from this leg's phone and forwarded to the other leg."""
    rtcp_bytes: int
    dropped_foreign: int
    """Packets from a source other than the latched one (RTP injection, stale streams)."""
    dropped_no_remote: int
    """Packets that arrived before this leg's address was known."""
    dropped_no_peer: int
    """Packets that could not be forwarded because the other leg's address was unknown."""
    dropped_congested: int
    """Packets the I/O layer dropped because the other leg's socket was not writable."""
    last_rx: float | None
    """When this leg's phone last sent an accepted packet (RTP or RTCP), or None."""


@dataclass(frozen=True, slots=True)
class RelayStats:
    """Counters of both legs; ``a`` counts the A-to-B direction, ``b`` the B-to-A one."""

    a: LegStats
    b: LegStats

    def leg(self, leg: Leg) -> LegStats:
        """The counters of ``leg``."""
        return self.a if leg is Leg.A else self.b


class PacketSink(Protocol):
    """Where a recorded call's RTP goes (:class:`media.callrecording.RecordingMixer`).

    The relay hands each accepted RTP packet of a leg to :meth:`capture` together with its
    arrival time until :meth:`capture` returns a list; from then on it only appends that leg's
    packets to the list (no call, no clock per packet) until :meth:`restart`.
    """

    def capture(self, leg: int, packet: bytes, now: float) -> list[bytes] | None:
        """One packet of ``leg`` that arrived at ``now``; returns the list to append the next
        packets of that leg to, or None to be called again with the next one."""
        ...

    def restart(self, leg: int) -> None:
        """``leg``'s phone changed (new address): its next packet starts a new stream."""
        ...


class Channel:
    """The state of one port (a leg's RTP or RTCP) that the I/O layer reads per packet.

    ``fast`` is the destination while the common case holds (latched, not muted, the other
    leg known and writable, no transcoding, nothing for the recorder to time-stamp); the I/O
    layer then only compares the source with ``latched``, counts, appends the packet to
    ``rec`` (recording) and sends it to ``fast``. Everything else goes through
    :meth:`RelaySession.on_packet`. Only :class:`RelaySession` writes ``latched``, ``fast``
    and ``rec``.
    """

    __slots__ = ("bytes", "fast", "latched", "packets", "rec")

    def __init__(self) -> None:
        self.latched: Address | None = None
        self.fast: Address | None = None
        self.rec: list[bytes] | None = None
        #: Packets (and their bytes) received here and forwarded to the other leg.
        self.packets = 0
        self.bytes = 0


class RelaySession:
    """Forwarding decisions for one bridged call (two legs, RTP and RTCP each)."""

    __slots__ = (
        "_accepted",
        "_blocked",
        "_dropped_congested",
        "_dropped_foreign",
        "_dropped_no_peer",
        "_dropped_no_remote",
        "_expected",
        "_last_rx",
        "_muted",
        "_routes",
        "_rx_seen",
        "_sink",
        "channels",
        "xcode",
    )

    def __init__(self) -> None:
        # Index i = leg * 2 + rtcp; i ^ 2 is the same channel on the other leg.
        self.channels = (Channel(), Channel(), Channel(), Channel())
        self._expected: list[Address | None] = [None] * 4
        # Route to send to leg i's phone: (leg, destination), or None while unknown.
        self._routes: list[tuple[Leg, Address] | None] = [None] * 4
        self._dropped_foreign = [0, 0]
        self._dropped_no_remote = [0, 0]
        self._dropped_no_peer = [0, 0]
        self._dropped_congested = [0, 0]
        # Accepted but not forwarded (muted, no peer, congested), per leg; with the channels'
        # forwarded counts this tells :meth:`observe` whether a phone sent anything.
        self._accepted = [0, 0]
        self._rx_seen = [0, 0]
        self._last_rx: list[float | None] = [None, None]
        self._muted = [False, False]
        self._blocked = [False] * 4  # the I/O layer cannot send out of leg i's socket
        self._sink: PacketSink | None = None
        #: Per source leg: how to convert its RTP for the other leg (None: unchanged). Read by
        #: the I/O layer; set with :meth:`set_transcoding`.
        self.xcode: list[Transcoding | None] = [None, None]

    def set_recorder(self, sink: PacketSink | None) -> None:
        """Also hand every accepted RTP packet to ``sink`` (call recording), or stop."""
        self._sink = sink
        for leg in Leg:
            self.channels[leg * 2].rec = None
        self._refresh()

    def set_transcoding(self, leg: Leg, xcode: Transcoding | None) -> None:
        """Convert the RTP ``leg``'s phone sends before it goes to the other leg."""
        self.xcode[leg] = xcode
        self._refresh()

    def mute(self, leg: Leg, muted: bool) -> None:
        """Stop (or resume) forwarding what ``leg``'s phone sends; it is still latched and
        counted. Used while the PBX itself plays to the other leg (music on hold)."""
        self._muted[leg] = muted
        self._refresh()

    def set_blocked(self, leg: Leg, rtcp: bool, blocked: bool) -> None:
        """The I/O layer says whether leg ``leg``'s socket can take packets now."""
        self._blocked[leg * 2 + rtcp] = blocked
        self._refresh()

    def set_remote(
        self, leg: Leg, addr: Address | None, rtcp_addr: Address | None = None
    ) -> None:
        """Set where ``leg``'s phone wants media, from its SDP (None: unknown, or on hold).

        ``rtcp_addr`` defaults to ``(host, port + 1)`` (RFC 3550 11; pass the ``a=rtcp`` address
        of RFC 3605 when the SDP has one). A changed address unlatches the leg so that the next
        packet latches it again; the same address keeps the latch (a re-INVITE that only
        changes the direction must not open the leg to a foreign source). A recorder is told
        that the leg's stream restarts (a new phone brings a new SSRC and timestamp base).
        """
        if addr is None:
            rtcp_addr = None
        else:
            _check_address(addr)
            if rtcp_addr is None:
                if addr[1] >= 65535:
                    raise ValueError(f"RTP port {addr[1]} leaves no room for RTCP at port + 1")
                rtcp_addr = (addr[0], addr[1] + 1)
            else:
                _check_address(rtcp_addr)
        for i, new in ((leg * 2, addr), (leg * 2 + 1, rtcp_addr)):
            if new == self._expected[i] and new is not None:
                continue
            self._expected[i] = new
            self.channels[i].latched = None
            self._routes[i] = None if new is None else (leg, new)
            if i == leg * 2 and self._sink is not None and new is not None:
                self.channels[i].rec = None
                self._sink.restart(leg)
        self._refresh()

    def on_packet(
        self, leg: Leg, data: bytes, addr: Address, rtcp: bool, now: float
    ) -> tuple[Leg, Address] | None:
        """A packet arrived on ``leg``'s RTP (or RTCP) port from ``addr``.

        Returns ``(leg to send from, destination)``, the same channel (RTP or RTCP) on the
        other leg, or None to drop the packet.
        """
        i = leg * 2 + rtcp
        channel = self.channels[i]
        latched = channel.latched
        if latched is None:
            if self._expected[i] is None:
                self._dropped_no_remote[leg] += 1
                return None
            # Symmetric RTP (RFC 4961): the first source seen is where the phone really is.
            channel.latched = addr
            self._routes[i] = (leg, addr)
            self._refresh()
        elif addr != latched:
            if addr != self._expected[i]:
                self._dropped_foreign[leg] += 1
                return None
            # The phone itself, from the address its SDP gave, takes the leg back from
            # whoever latched it first (RTP injection / "RTP bleed" on an idle port).
            channel.latched = addr
            self._routes[i] = (leg, addr)
            self._refresh()
        self._last_rx[leg] = now
        # This packet is counted below (forwarded or accepted): observe() must not see it again.
        channels = self.channels
        self._rx_seen[leg] = (channels[leg * 2].packets + channels[leg * 2 + 1].packets
                              + self._accepted[leg] + 1)
        sink = self._sink
        if sink is not None and not rtcp:
            if channel.rec is not None:
                channel.rec.append(data)
            else:
                channel.rec = sink.capture(leg, data, now)
                if channel.rec is not None:
                    self._refresh()
        if self._muted[leg]:
            self._accepted[leg] += 1
            return None
        route = self._routes[i ^ 2]
        if route is None:
            self._accepted[leg] += 1
            self._dropped_no_peer[leg] += 1
            return None
        channel.packets += 1
        channel.bytes += len(data)
        return route

    def count_congested(self, leg: Leg, data: bytes, rtcp: bool) -> None:
        """Record that ``data``, routed by :meth:`on_packet`, was not sent after all.

        The I/O layer calls this when the far socket cannot take the packet: RTP is real-time,
        so it is dropped rather than queued behind later packets.
        """
        channel = self.channels[leg * 2 + rtcp]
        channel.packets -= 1
        channel.bytes -= len(data)
        self._accepted[leg] += 1
        self._dropped_congested[leg] += 1

    def observe(self, now: float) -> None:
        """Note ``now`` as the last receive time of every leg that got packets since the last
        call. Packets the I/O layer forwards on the fast path carry no time; calling this
        periodically (or before reading :meth:`last_rx`) makes ``last_rx`` accurate to the
        interval between two calls."""
        for leg in (0, 1):
            seen = self._received(leg)
            if seen != self._rx_seen[leg]:
                self._rx_seen[leg] = seen
                self._last_rx[leg] = now

    def last_rx(self, leg: Leg) -> float | None:
        """When ``leg``'s phone last sent an accepted packet (for an RTP timeout), or None."""
        return self._last_rx[leg]

    def remote(self, leg: Leg) -> Address | None:
        """Where RTP for ``leg``'s phone goes now: the latched source, else the SDP address."""
        route = self._routes[leg * 2]
        return None if route is None else route[1]

    def stats(self) -> RelayStats:
        """A snapshot of all counters."""
        return RelayStats(self._leg_stats(Leg.A), self._leg_stats(Leg.B))

    def _received(self, leg: int) -> int:
        return (self.channels[leg * 2].packets + self.channels[leg * 2 + 1].packets
                + self._accepted[leg])

    def _refresh(self) -> None:
        # Recompute every channel's fast-path destination; runs only when state changes.
        for i, channel in enumerate(self.channels):
            leg, rtcp = i >> 1, i & 1
            route = self._routes[i ^ 2]
            if (
                channel.latched is None
                or route is None
                or self._muted[leg]
                or self._blocked[i ^ 2]
                or (not rtcp and self.xcode[leg] is not None)
                or (not rtcp and self._sink is not None and channel.rec is None)
            ):
                channel.fast = None
            else:
                channel.fast = route[1]

    def _leg_stats(self, leg: Leg) -> LegStats:
        i = leg * 2
        rtp, rtcp = self.channels[i], self.channels[i + 1]
        return LegStats(
            remote=self._expected[i],
            latched=rtp.latched,
            rtcp_latched=rtcp.latched,
            rtp_packets=rtp.packets,
            rtp_bytes=rtp.bytes,
            rtcp_packets=rtcp.packets,
            rtcp_bytes=rtcp.bytes,
            dropped_foreign=self._dropped_foreign[leg],
            dropped_no_remote=self._dropped_no_remote[leg],
            dropped_no_peer=self._dropped_no_peer[leg],
            dropped_congested=self._dropped_congested[leg],
            last_rx=self._last_rx[leg],
        )


def _check_address(addr: Address) -> None:
    if (
        not isinstance(addr, tuple)
        or len(addr) < 2
        or not isinstance(addr[0], str)
        or not addr[0]
        or not isinstance(addr[1], int)
        or not 1 <= addr[1] <= 65535
    ):
        raise ValueError(f"bad remote address {addr!r}: expected (host, port) with port 1..65535")
