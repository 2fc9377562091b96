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
Linux only (``recvmmsg``/``sendmmsg`` through ctypes, see :mod:`media.mmsg`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import math
import socket
from collections.abc import Callable
from types import TracebackType

import numpy as np
from numpy.typing import NDArray

from media.mmsg import MSG_TRUNC, MmsgBuffers, sockaddr_in
from media.relay import (
    Address,
    Leg,
    LegStats,
    NoPortsError,
    PacketSink,
    PortAllocator,
    RelayStats,
)
from media.transcode import Transcoding, transcode_rtp
from media.udp import RelayHandle

__all__ = ["SharedPortRelay", "SharedRelayHandle"]

_PORT_BUSY = frozenset({errno.EADDRINUSE, errno.EACCES})
_SO_SNDBUFFORCE, _SO_RCVBUFFORCE = 32, 33  # <asm-generic/socket.h>
_IP_MTU_DISCOVER, _IP_PMTUDISC_PROBE = 10, 3  # <linux/in.h>
_SOCKET_BUFFER = 4 << 20
#: Batches read per readiness callback before the loop gets a turn (timers, the playback tick).
_BATCHES_PER_WAKEUP = 8
_RTP_BATCH, _RTCP_BATCH = 512, 64
_INITIAL_SLOTS = 64


class _Table:
    """Per-leg state of one shared socket (RTP or RTCP), as arrays indexed by leg slot.

    A call owns slots ``2h`` (leg A) and ``2h + 1`` (leg B), so a leg's peer is ``slot ^ 1``.
    """

    def __init__(self, capacity: int) -> None:
        self.key = np.full(capacity, -1, dtype=np.int64)  # packed remote, -1: unknown
        self.names = np.zeros((capacity, 16), dtype=np.uint8)  # sockaddr_in of the remote
        self.fwd = np.zeros(capacity, dtype=np.bool_)  # what this leg sends goes to the peer
        self.no_peer = np.zeros(capacity, dtype=np.bool_)  # the peer's address is unknown
        self.rec = np.zeros(capacity, dtype=np.bool_)  # RTP of this leg is recorded
        self.xcode = np.zeros(capacity, dtype=np.int8)  # 1 + index into _Engine.xtables
        self.packets = np.zeros(capacity, dtype=np.int64)  # forwarded
        self.bytes = np.zeros(capacity, dtype=np.int64)
        self.accepted = np.zeros(capacity, dtype=np.int64)  # received, not forwarded
        self.dropped_no_peer = np.zeros(capacity, dtype=np.int64)
        self.dropped_congested = np.zeros(capacity, dtype=np.int64)
        self.last = np.full(capacity, math.nan)  # last receive time
        self.owner: dict[int, int] = {}  # packed remote -> slot
        self.lookup_keys = np.zeros(0, dtype=np.int64)
        self.lookup_slots = np.zeros(0, dtype=np.intp)
        self.dirty = False

    def grow(self, capacity: int) -> None:
        for name in ("key", "names", "fwd", "no_peer", "rec", "xcode", "packets", "bytes",
                     "accepted", "dropped_no_peer", "dropped_congested", "last"):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
            if name == "key":
                new[:] = -1
            elif name == "last":
                new[:] = math.nan
            new[: len(old)] = old
            setattr(self, name, new)

    def clear(self, slot: int) -> None:
        self.set_key(slot, None)
        self.fwd[slot] = self.no_peer[slot] = self.rec[slot] = False
        self.xcode[slot] = 0
        for counter in (self.packets, self.bytes, self.accepted, self.dropped_no_peer,
                        self.dropped_congested):
            counter[slot] = 0
        self.last[slot] = math.nan

    def set_key(self, slot: int, addr: Address | None) -> int | None:
        """Make ``addr`` (None: nothing) ``slot``'s remote; returns the slot that had it."""
        old = int(self.key[slot])
        if old >= 0 and self.owner.get(old) == slot:
            del self.owner[old]
            self.dirty = True
        if addr is None:
            self.key[slot] = -1
            return None
        ip = int.from_bytes(socket.inet_aton(addr[0]), "big")
        key = (ip << 16) | addr[1]
        previous = self.owner.get(key)
        if previous is not None and previous != slot:
            # Another leg had this address (its phone moved here, a transfer): the newest
            # leg owns it, the older one stops receiving from it.
            self.key[previous] = -1
        else:
            previous = None
        self.owner[key] = slot
        self.key[slot] = key
        self.names[slot] = sockaddr_in(addr[0], addr[1])
        self.dirty = True
        return previous

    def rebuild(self) -> None:
        keys = np.fromiter(self.owner.keys(), dtype=np.int64, count=len(self.owner))
        slots = np.fromiter(self.owner.values(), dtype=np.intp, count=len(self.owner))
        order = np.argsort(keys)
        self.lookup_keys, self.lookup_slots = keys[order], slots[order]
        self.dirty = False


class _Socket:
    """One shared socket (RTP or RTCP): reads batches and forwards them by its :class:`_Table`."""

    def __init__(self, engine: _Engine, sock: socket.socket, rtp: bool, capacity: int) -> None:
        self.engine = engine
        self.sock = sock
        self.fd = sock.fileno()
        self.rtp = rtp
        self.buf = MmsgBuffers(_RTP_BATCH if rtp else _RTCP_BATCH)
        self.table = _Table(capacity)

    def on_readable(self) -> None:
        buf, fd, engine = self.buf, self.fd, self.engine
        for _ in range(_BATCHES_PER_WAKEUP):
            n = buf.recv(fd)
            if n == 0:
                return
            engine.batches += 1
            engine.received += n
            self.process(n, engine.clock())
            if n < buf.size:
                return

    def process(self, n: int, now: float) -> None:
        """Forward the ``n`` datagrams in the receive buffer."""
        buf, table, engine = self.buf, self.table, self.engine
        if table.dirty:
            table.rebuild()
        lookup = table.lookup_keys
        if not len(lookup):
            engine.dropped_unknown += n
            return
        key = (buf.src_ip[:n].astype(np.int64) << 16) | buf.src_port[:n]
        pos = np.searchsorted(lookup, key)
        np.minimum(pos, len(lookup) - 1, out=pos)
        hit = lookup[pos] == key
        if len(index := np.flatnonzero(hit)) < n:
            engine.dropped_unknown += n - len(index)
            if not len(index):
                return
        flags = buf.flags[index]
        if flags.any():  # MSG_TRUNC: longer than a slot, only a part was read
            whole = (flags & MSG_TRUNC) == 0
            engine.dropped_oversize += len(index) - int(np.count_nonzero(whole))
            index = index[whole]
        slots = table.lookup_slots[pos[index]]
        table.last[slots] = now
        if self.rtp and engine.recorded:
            rec = table.rec[slots]
            if rec.any():
                engine.record(index[rec], slots[rec], buf, now)
        fwd = table.fwd[slots]
        if not fwd.all():
            held = slots[~fwd]
            np.add.at(table.accepted, held, 1)
            np.add.at(table.dropped_no_peer, held[table.no_peer[held]], 1)
            index, slots = index[fwd], slots[fwd]
            if not len(index):
                return
        if self.rtp and engine.transcoded:
            kinds = table.xcode[slots]
            if kinds.any():
                engine.transcode(index, kinds, buf)
        lengths = buf.lengths[index].astype(np.int64)
        done, failed = buf.send(self.fd, index, table.names, slots ^ 1)
        if done == len(index) and not failed:
            np.add.at(table.packets, slots, 1)
            np.add.at(table.bytes, slots, lengths)
            return
        sent = np.zeros(len(index), dtype=np.bool_)
        sent[:done] = True
        sent[failed] = False
        np.add.at(table.packets, slots[sent], 1)
        np.add.at(table.bytes, slots[sent], lengths[sent])
        np.add.at(table.accepted, slots[~sent], 1)
        np.add.at(table.dropped_congested, slots[~sent], 1)


class _Engine:
    """The two shared sockets of one bind address and the state of every leg on them."""

    def __init__(self, port: int, rtp: socket.socket, rtcp: socket.socket,
                 clock: Callable[[], float]) -> None:
        self.port = port
        self.clock = clock
        capacity = _INITIAL_SLOTS
        self.rtp = _Socket(self, rtp, True, capacity)
        self.rtcp = _Socket(self, rtcp, False, capacity)
        self.capacity = capacity
        self.free: list[int] = list(range(capacity - 2, -1, -2))  # base slots, popped from end
        self.remote: list[Address | None] = [None] * capacity
        self.muted = [False] * capacity
        self.sinks: list[PacketSink | None] = [None] * capacity
        self.rec_lists: list[list[bytes] | None] = [None] * capacity
        self.xtables: list[tuple[int, int, NDArray[np.uint8], Transcoding]] = []
        self.recorded = 0  # slots with a recorder
        self.transcoded = 0  # slots with transcoding
        self.dropped_unknown = 0
        self.dropped_oversize = 0
        self.batches = 0  # recvmmsg calls that returned datagrams
        self.received = 0  # datagrams they returned
        self.handles: set[SharedRelayHandle] = set()

    def allocate(self) -> int:
        if not self.free:
            old, capacity = self.capacity, self.capacity * 2
            for table in (self.rtp.table, self.rtcp.table):
                table.grow(capacity)
            grow = capacity - old
            self.remote += [None] * grow
            self.muted += [False] * grow
            self.sinks += [None] * grow
            self.rec_lists += [None] * grow
            self.free = list(range(capacity - 2, old - 1, -2))
            self.capacity = capacity
        return self.free.pop()

    def release(self, base: int) -> None:
        for slot in (base, base + 1):
            self.set_recorder(slot, None)
            self.set_xcode(slot, None)
            for table in (self.rtp.table, self.rtcp.table):
                table.clear(slot)
            self.remote[slot] = None
            self.muted[slot] = False
        self.free.append(base)

    def refresh(self, base: int) -> None:
        # Whether each leg's packets go to its peer; runs only when the call's state changes.
        for table in (self.rtp.table, self.rtcp.table):
            for slot in (base, base + 1):
                peer_known = bool(table.key[slot ^ 1] >= 0)
                table.fwd[slot] = peer_known and not self.muted[slot]
                table.no_peer[slot] = not peer_known

    def set_recorder(self, slot: int, sink: PacketSink | None) -> None:
        was = self.sinks[slot] is not None
        self.sinks[slot] = sink
        self.rec_lists[slot] = None
        self.rtp.table.rec[slot] = sink is not None
        self.recorded += (sink is not None) - was

    def set_xcode(self, slot: int, xcode: Transcoding | None) -> None:
        table = self.rtp.table
        was = table.xcode[slot] != 0
        if xcode is None:
            table.xcode[slot] = 0
        else:
            known = [entry[3] for entry in self.xtables]
            if xcode not in known:
                lookup = np.frombuffer(xcode.table, dtype=np.uint8).copy()
                if len(lookup) != 256:
                    raise ValueError("a transcoding table maps all 256 octets")
                self.xtables.append((xcode.pt_from, xcode.pt_to, lookup, xcode))
                known.append(xcode)
            table.xcode[slot] = known.index(xcode) + 1
        self.transcoded += (xcode is not None) - bool(was)

    def record(self, index: NDArray[np.intp], slots: NDArray[np.intp], buf: MmsgBuffers,
               now: float) -> None:
        """Hand the received RTP packets ``index`` of recorded legs to their recorders."""
        # One copy of the rows' used bytes, then a slice per packet: the mixer keeps bytes.
        lengths = buf.lengths[index]
        width = int(lengths.max())
        blob = buf.data[index, :width].tobytes()
        if int(lengths.min()) == width:  # one size (G.711 at one ptime): nearly always
            packets = [blob[i : i + width] for i in range(0, len(blob), width)]
        else:
            packets = [blob[i * width : i * width + size]
                       for i, size in enumerate(lengths.tolist())]
        rec_lists = self.rec_lists
        for slot, packet in zip(slots.tolist(), packets, strict=True):
            target = rec_lists[slot]
            if target is not None:
                target.append(packet)
                continue
            sink = self.sinks[slot]
            if sink is not None:
                rec_lists[slot] = sink.capture(slot & 1, packet, now)

    def transcode(self, index: NDArray[np.intp], kinds: NDArray[np.int8],
                  buf: MmsgBuffers) -> None:
        """Convert, in the receive buffer, the payloads of the packets ``index`` whose leg
        transcodes (``kinds``: 1 + the table's index, 0 for none)."""
        data, lengths = buf.data, buf.lengths
        for k, (pt_from, pt_to, lookup, xcode) in enumerate(self.xtables, start=1):
            rows = index[kinds == k]
            if not len(rows):
                continue
            size = lengths[rows]
            first = data[rows, 0]
            ok = (size >= 12) & ((data[rows, 1] & 0x7F) == pt_from)
            plain = ok & ((first & 0x3F) == 0)  # no CSRC, extension or padding (RFC 3550 5.1)
            simple = rows[plain]
            if len(simple):
                width = int(size[plain].max())
                data[simple, 12:width] = lookup[data[simple, 12:width]]
                data[simple, 1] = (data[simple, 1] & 0x80) | pt_to
            for row in rows[ok & ~plain].tolist():
                length = int(lengths[row])
                out = transcode_rtp(data[row, :length].tobytes(), xcode)
                data[row, :length] = np.frombuffer(out, dtype=np.uint8)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        for end in (self.rtp, self.rtcp):
            loop.remove_reader(end.fd)
            end.sock.close()


class SharedRelayHandle(RelayHandle):
    """One relayed call on the shared port: the interface of :class:`media.udp.RelayHandle`."""

    def __init__(self, relay: SharedPortRelay, engine: _Engine, base: int) -> None:
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
        last = max(float(self._engine.rtp.table.last[slot]),
                   float(self._engine.rtcp.table.last[slot]))
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


class SharedPortRelay:
    """The shared-port relay engine: every call's legs on one RTP/RTCP port pair per bind
    address, taken from ``ports`` when the first call on that address opens and kept until
    :meth:`close`.

    ``clock`` is what ``now`` means for :meth:`SharedRelayHandle.last_rx`; by default the
    running loop's ``time()``. Use through :class:`media.udp.RtpRelay` with
    ``shared_port=True``, which has the same interface.
    """

    def __init__(
        self, ports: PortAllocator, *, clock: Callable[[], float] | None = None
    ) -> None:
        self._ports = ports
        self._clock = clock
        self._engines: dict[str, tuple[_Engine, asyncio.AbstractEventLoop]] = {}

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

    async def open_session(self, bind_host: str) -> SharedRelayHandle:
        """A relayed call on the shared port of ``bind_host`` (an IPv4 literal).

        The first call on an address binds its port pair; raises
        :class:`~media.relay.NoPortsError` when none in the range can be bound.
        """
        try:
            ip = ipaddress.ip_address(bind_host)
        except ValueError:
            raise ValueError(f"bind_host {bind_host!r} is not an IP address literal") from None
        if ip.version != 4:
            raise ValueError(f"the shared-port relay is IPv4 only; bind_host is {bind_host!r}")
        found = self._engines.get(bind_host)
        if found is None:
            found = self._start(bind_host)
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
            engine.close(loop)
            del self._engines[bind_host]
            self._ports.release(engine.port)

    def _start(self, bind_host: str) -> tuple[_Engine, asyncio.AbstractEventLoop]:
        loop = asyncio.get_running_loop()
        port, rtp, rtcp = self._bind_pair(bind_host)
        engine = _Engine(port, rtp, rtcp, self._clock or loop.time)
        try:
            for end in (engine.rtp, engine.rtcp):
                loop.add_reader(end.fd, end.on_readable)
        except BaseException:
            engine.close(loop)
            self._ports.release(port)
            raise
        return engine, loop

    def _bind_pair(self, host: str) -> tuple[int, socket.socket, socket.socket]:
        last_error: OSError | None = None
        # Each failed port goes to the back of the queue, so this visits every free port once.
        for _ in range(max(1, self._ports.available)):
            port = self._ports.allocate()
            try:
                rtp = _bind(host, port)
                try:
                    rtcp = _bind(host, port + 1)
                except BaseException:
                    rtp.close()
                    raise
            except OSError as exc:
                self._ports.release(port)
                if exc.errno not in _PORT_BUSY:
                    raise
                last_error = exc
                continue
            return port, rtp, rtcp
        raise NoPortsError(f"no free RTP port pair could be bound on {host}: {last_error}")


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
