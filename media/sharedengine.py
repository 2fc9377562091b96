"""The batch engine of the shared-port relay (:mod:`media.shared`): leg tables and forwarding.

Every leg of every call on one bind address is a *slot*: a call owns slots ``2h`` (leg A) and
``2h + 1`` (leg B), so a leg's peer is ``slot ^ 1``. Each shared socket (RTP, and RTCP on the
next port) keeps its per-slot state in numpy arrays (:class:`LegTable`) so that a whole
``recvmmsg`` batch is looked up, filtered, converted, counted and sent with array operations;
Python runs per packet only to hand recorded packets to their recorder. The handles and the
relay that own an engine are in :mod:`media.shared`.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from media.mmsg import MSG_TRUNC, MmsgBuffers, sockaddr_in
from media.relay import Address, PacketSink
from media.transcode import Transcoding, transcode_rtp

if TYPE_CHECKING:
    from media.shared import SharedRelayHandle

__all__ = ["LegTable", "SharedEngine", "SharedSocket"]

#: Batches read per readiness callback before the loop gets a turn (timers, the playback tick).
_BATCHES_PER_WAKEUP = 8
_RTP_BATCH, _RTCP_BATCH = 512, 64
_INITIAL_SLOTS = 64


class LegTable:
    """Per-leg state of one shared socket (RTP or RTCP), as arrays indexed by leg slot.

    A call owns slots ``2h`` (leg A) and ``2h + 1`` (leg B), so a leg's peer is ``slot ^ 1``.
    """

    def __init__(self, capacity: int) -> None:
        self.key = np.full(capacity, -1, dtype=np.int64)  # packed remote, -1: unknown
        self.names = np.zeros((capacity, 16), dtype=np.uint8)  # sockaddr_in of the remote
        self.fwd = np.zeros(capacity, dtype=np.bool_)  # what this leg sends goes to the peer
        self.no_peer = np.zeros(capacity, dtype=np.bool_)  # the peer's address is unknown
        self.rec = np.zeros(capacity, dtype=np.bool_)  # RTP of this leg is recorded
        self.xcode = np.zeros(capacity, dtype=np.int8)  # 1 + index into SharedEngine.xtables
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
        """Room for ``capacity`` slots; the existing ones keep their state."""
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
        """Forget ``slot``: no remote, no flags, counters at zero (the slot is free)."""
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
        """Sort the remotes for :func:`numpy.searchsorted` (after they changed)."""
        keys = np.fromiter(self.owner.keys(), dtype=np.int64, count=len(self.owner))
        slots = np.fromiter(self.owner.values(), dtype=np.intp, count=len(self.owner))
        order = np.argsort(keys)
        self.lookup_keys, self.lookup_slots = keys[order], slots[order]
        self.dirty = False


class SharedSocket:
    """One shared socket (RTP or RTCP): reads batches and forwards them by its :class:`LegTable`."""

    def __init__(self, engine: SharedEngine, sock: socket.socket, rtp: bool, capacity: int) -> None:
        self.engine = engine
        self.sock = sock
        self.fd = sock.fileno()
        self.rtp = rtp
        self.buf = MmsgBuffers(_RTP_BATCH if rtp else _RTCP_BATCH)
        self.table = LegTable(capacity)

    def on_readable(self) -> None:
        """The event loop's reader callback: drain the socket a batch at a time (bounded)."""
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


class SharedEngine:
    """The two shared sockets of one bind address and the state of every leg on them."""

    def __init__(self, port: int, rtp: socket.socket, rtcp: socket.socket,
                 clock: Callable[[], float]) -> None:
        self.port = port
        self.clock = clock
        capacity = _INITIAL_SLOTS
        self.rtp = SharedSocket(self, rtp, True, capacity)
        self.rtcp = SharedSocket(self, rtcp, False, capacity)
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
        """A free call: its leg A slot (leg B is the next one); grows the tables if needed."""
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
        """Free the call whose leg A is slot ``base``."""
        freed = [self.remote[slot] for slot in (base, base + 1)]
        for slot in (base, base + 1):
            self.set_recorder(slot, None)
            self.set_xcode(slot, None)
            for table in (self.rtp.table, self.rtcp.table):
                table.clear(slot)
            self.remote[slot] = None
            self.muted[slot] = False
        self.free.append(base)
        # A phone in two calls at once (call waiting) gave its address to the newer call's
        # leg; now that that call is over, the older leg gets it back.
        for addr in freed:
            if addr is None:
                continue
            for other, remote in enumerate(self.remote):
                if remote == addr and self.rtp.table.key[other] < 0:
                    self.rtp.table.set_key(other, addr)
                    # RFC 3550 11: RTCP on port + 1 (an a=rtcp address is not kept here).
                    self.rtcp.table.set_key(other, (addr[0], addr[1] + 1))
                    self.refresh(other & ~1)

    def refresh(self, base: int) -> None:
        """Recompute whether each leg of call ``base`` forwards (after its state changed)."""
        # Whether each leg's packets go to its peer; runs only when the call's state changes.
        for table in (self.rtp.table, self.rtcp.table):
            for slot in (base, base + 1):
                peer_known = bool(table.key[slot ^ 1] >= 0)
                table.fwd[slot] = peer_known and not self.muted[slot]
                table.no_peer[slot] = not peer_known

    def set_recorder(self, slot: int, sink: PacketSink | None) -> None:
        """Hand ``slot``'s RTP to ``sink`` (None: stop); the next packet goes to capture."""
        was = self.sinks[slot] is not None
        self.sinks[slot] = sink
        self.rec_lists[slot] = None
        self.rtp.table.rec[slot] = sink is not None
        self.recorded += (sink is not None) - was

    def set_xcode(self, slot: int, xcode: Transcoding | None) -> None:
        """Convert ``slot``'s RTP with ``xcode`` before it is forwarded (None: unchanged)."""
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
        if width == 0:
            return  # empty datagrams (keep-alives): nothing to record
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

    def close(self, remove_reader: Callable[[int], object]) -> None:
        """Stop reading (``remove_reader`` of the event loop) and close both sockets."""
        for end in (self.rtp, self.rtcp):
            remove_reader(end.fd)
            end.sock.close()
