"""A fast RTP load generator: thousands of paced G.711 phones from one process and one socket.

Every phone of a bench call sends a 172-byte RTP packet (G.711, 20 ms) to its leg's relay port
every 20 ms and receives what the relay forwards from the other phone. Python cannot afford a
system call per packet at 150,000 packets/s, so:

- All phones share ONE UDP socket bound to ``0.0.0.0:P``; phone ``f`` is ``127.1.x.y:P``. Its
  packets leave with that source address through an ``IP_PKTINFO`` control message
  (``ipi_spec_dst``), so the relay sees (and latches to) a distinct source per phone, and what
  the relay sends back to ``127.1.x.y:P`` lands on the same socket (all of 127/8 is loopback).
- Packets go out with ``sendmmsg`` and come in with ``recvmmsg`` (ctypes), a few hundred per
  system call, over preallocated buffers; numpy views write the sequence number, timestamp and
  send time of a whole group at once and read flow ids, send times and receive stamps back.
- Calls are spread over the 20 ms period in ``groups`` phase groups (real phones are not
  synchronised): group ``g`` sends at ``t0 + n * 20 ms + g * 20 ms / groups``.
- Each payload starts with the sending phone's flow id and its send time (``CLOCK_REALTIME``
  ns); the kernel stamps each received packet (``SO_TIMESTAMPNS``, read from a fixed-layout
  control buffer). Transit = receive stamp - send time; a packet's *added delay* is its transit
  minus the smallest transit of its flow, i.e. the jitter the relay added on top of the best case.

Run in a child process pinned to its own core (see ``media_bench.py``). Linux only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

PACKET = 172  # 12-byte RTP header + 160 bytes of G.711 (20 ms at 8 kHz)
PERIOD_NS = 20_000_000
_SLOT = 256  # receive buffer bytes per message
_CTRL = 32  # CMSG_SPACE(sizeof(struct timespec)) = CMSG_SPACE(sizeof(struct in_pktinfo))
_RX_BATCH = 512
_SO_TIMESTAMPNS = 35  # asm-generic/socket.h (SO_TIMESTAMPNS_OLD on 64-bit)
_SCM_TIMESTAMPNS = _SO_TIMESTAMPNS
_SO_RCVBUFFORCE = 33
_MSG_DONTWAIT = 0x40
_IP_PKTINFO = 8


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


assert ctypes.sizeof(_Mmsghdr) == 64
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]


def phone_ip(flow: int) -> str:
    """The loopback address of phone ``flow`` (127.1.0.1 and up; all of 127/8 is local)."""
    return f"127.1.{flow // 250}.{1 + flow % 250}"


def _ptr(array: NDArray[np.generic], offset: int = 0) -> int:
    return int(array.ctypes.data) + offset


@dataclass
class LoadResult:
    """What one run of the generator saw."""

    sent: int
    received: int
    lost_flows: int  # flows that received less than they should have
    delay_p50_ms: float
    delay_p99_ms: float
    delay_max_ms: float
    gen_late_p99_ms: float  # how late the generator's own sends were (its health)
    gen_cpu: float  # share of a core the generator used

    @property
    def loss(self) -> float:
        return 1.0 - self.received / self.sent if self.sent else 0.0


class LoadGen:
    """``calls`` bench calls: flow ``2c`` is call ``c``'s A phone, ``2c + 1`` its B phone."""

    def __init__(self, calls: int, groups: int = 20, rcvbuf: int = 64 << 20) -> None:
        self.calls = calls
        self.flows = 2 * calls
        self.groups = max(1, min(groups, calls))
        # How close to a send the generator stops sleeping and spins: a normal process
        # oversleeps by a few hundred µs, a real-time one (SCHED_FIFO) by a few µs.
        self.spin_ns = 100_000 if os.sched_getscheduler(0) == os.SCHED_FIFO else 3_000_000
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, rcvbuf)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        # Only loopback traffic is ever sent here; the wildcard is what lets one socket own
        # every 127.1.x.y phone address.
        self.sock.bind(("0.0.0.0", 0))
        self.port: int = self.sock.getsockname()[1]
        self.addresses = [(phone_ip(f), self.port) for f in range(self.flows)]

    def run(self, relay_ports: list[tuple[int, int]], seconds: float,
            warmup: float = 1.0, drain: float = 0.5) -> LoadResult:
        """Send for ``seconds`` (every flow 50 packets/s), then receive for ``drain`` more."""
        flows, groups = self.flows, self.groups
        # Send order: grouped by phase, each group contiguous so that one sendmmsg sends it.
        group_of_call = np.arange(self.calls) % groups
        order = np.argsort(np.repeat(group_of_call, 2), kind="stable").astype(np.int64)
        bounds = np.searchsorted(np.repeat(group_of_call, 2)[order], np.arange(groups + 1))

        tx = np.zeros((flows, PACKET), dtype=np.uint8)
        rng = np.random.default_rng(1)
        tx[:, 12:] = rng.integers(0, 256, size=(flows, PACKET - 12), dtype=np.uint8)
        tx[:, 0] = 0x80  # RTP version 2, payload type 0 (PCMU)
        tx[:, 1] = 0
        seq = tx[:, 2:4].view(">u2")[:, 0]
        ts = tx[:, 4:8].view(">u4")[:, 0]
        tx[:, 8:12].view(">u4")[:, 0] = order + 1  # SSRC
        tx[:, 12:16].view("<u4")[:, 0] = order  # the flow id, in the payload
        stamp = tx[:, 16:24].view("<i8")[:, 0]

        names = np.zeros((flows, 16), dtype=np.uint8)  # sockaddr_in of the relay port
        names[:, 0:2].view("<u2")[:, 0] = socket.AF_INET
        ports = np.array([relay_ports[f // 2][f % 2] for f in range(flows)], dtype=np.uint16)
        names[:, 2:4].view(">u2")[:, 0] = ports[order]
        names[:, 4:8] = np.frombuffer(socket.inet_aton("127.0.0.1"), dtype=np.uint8)
        ctrl = np.zeros((flows, _CTRL), dtype=np.uint8)  # IP_PKTINFO: the phone's source
        ctrl[:, 0:8].view("<u8")[:, 0] = 16 + 12  # CMSG_LEN(sizeof(struct in_pktinfo))
        ctrl[:, 8:12].view("<i4")[:, 0] = socket.IPPROTO_IP
        ctrl[:, 12:16].view("<i4")[:, 0] = _IP_PKTINFO
        ips = np.array([list(socket.inet_aton(phone_ip(int(f)))) for f in order], dtype=np.uint8)
        ctrl[:, 20:24] = ips  # ipi_spec_dst
        iov = np.zeros((flows, 2), dtype=np.uint64)
        iov[:, 0] = _ptr(tx) + np.arange(flows, dtype=np.uint64) * PACKET
        iov[:, 1] = PACKET
        msgs = np.zeros((flows, 8), dtype=np.uint64)  # struct mmsghdr, 64 bytes
        msgs[:, 0] = _ptr(names) + np.arange(flows, dtype=np.uint64) * 16
        msgs[:, 1] = 16
        msgs[:, 2] = _ptr(iov) + np.arange(flows, dtype=np.uint64) * 16
        msgs[:, 3] = 1
        msgs[:, 4] = _ptr(ctrl) + np.arange(flows, dtype=np.uint64) * _CTRL
        msgs[:, 5] = _CTRL

        rx = np.zeros((_RX_BATCH, _SLOT), dtype=np.uint8)
        rctrl = np.zeros((_RX_BATCH, _CTRL), dtype=np.uint8)
        riov = np.zeros((_RX_BATCH, 2), dtype=np.uint64)
        riov[:, 0] = _ptr(rx) + np.arange(_RX_BATCH, dtype=np.uint64) * _SLOT
        riov[:, 1] = _SLOT
        rmsgs = np.zeros((_RX_BATCH, 8), dtype=np.uint64)
        rmsgs[:, 2] = _ptr(riov) + np.arange(_RX_BATCH, dtype=np.uint64) * 16
        rmsgs[:, 3] = 1
        rmsgs[:, 4] = _ptr(rctrl) + np.arange(_RX_BATCH, dtype=np.uint64) * _CTRL
        rlen = rmsgs.view(np.uint32)[:, 14]
        rflow = rx[:, 12:16].view("<u4")[:, 0]
        rsent = rx[:, 16:24].view("<i8")[:, 0]
        rstamp = rctrl.view("<i8")  # [:, 0] cmsg_len, [:, 1] level|type, [:, 2] s, [:, 3] ns
        rtype = rctrl[:, 12:16].view("<i4")[:, 0]

        fd = self.sock.fileno()
        rmsgs_ptr, msgs_ptr = _ptr(rmsgs), _ptr(msgs)
        got_flow: list[NDArray[np.uint32]] = []
        got_transit: list[NDArray[np.int64]] = []
        got_sent: list[NDArray[np.int64]] = []

        def receive() -> int:
            total = 0
            for _ in range(64):  # bounded: at most 64 batches per call
                rmsgs[:, 5] = _CTRL
                n = _recvmmsg(fd, rmsgs_ptr, _RX_BATCH, _MSG_DONTWAIT, None)
                if n <= 0:
                    break
                ok = (rlen[:n] == PACKET) & (rtype[:n] == _SCM_TIMESTAMPNS)
                stamps = rstamp[:n, 2] * 1_000_000_000 + rstamp[:n, 3]
                got_flow.append(rflow[:n][ok].copy())
                got_sent.append(rsent[:n][ok].copy())
                got_transit.append((stamps - rsent[:n])[ok])
                total += n
                if n < _RX_BATCH:
                    break
            return total

        sent = np.zeros(flows, dtype=np.int64)  # in send order
        slot_ns = PERIOD_NS // groups
        cycles = int(seconds * 1e9 // PERIOD_NS)
        late = np.zeros(cycles * groups, dtype=np.int64)
        cpu0 = time.process_time()
        t0 = time.monotonic_ns() + 50_000_000
        wall0 = time.clock_gettime_ns(time.CLOCK_REALTIME) + 50_000_000
        for k in range(cycles * groups):
            target = t0 + k * slot_ns
            # Sleeping overshoots by a few hundred µs on this kind of machine, so the
            # generator sleeps only when far ahead and otherwise spins on the clock. It reads
            # its socket once per slot (the kernel stamps packets as they arrive, so the wait
            # costs no accuracy): polling it non-stop would fight the relay's deliveries for
            # the socket's lock.
            for _ in range(10_000_000):
                now = time.monotonic_ns()
                if now >= target:
                    break
                if target - now > self.spin_ns:
                    time.sleep((target - now - self.spin_ns + 100_000) / 1e9)
            late[k] = now - target
            cycle, g = divmod(k, groups)
            lo, hi = int(bounds[g]), int(bounds[g + 1])
            seq[lo:hi] = cycle & 0xFFFF
            ts[lo:hi] = (cycle * 160) & 0xFFFFFFFF
            stamp[lo:hi] = time.clock_gettime_ns(time.CLOCK_REALTIME)
            start = lo
            for _ in range(100):  # bounded retries of a partial send
                n = _sendmmsg(fd, msgs_ptr + start * 64, hi - start, 0)
                if n < 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"sendmmsg: {os.strerror(err)}")
                sent[start:start + n] += 1
                start += n
                if start >= hi:
                    break
            receive()
        end = time.monotonic_ns() + int(drain * 1e9)
        while time.monotonic_ns() < end:
            if receive() == 0:
                time.sleep(0.001)
        gen_cpu = (time.process_time() - cpu0) / ((time.monotonic_ns() - t0) / 1e9)

        flow = np.concatenate(got_flow) if got_flow else np.zeros(0, np.uint32)
        transit = np.concatenate(got_transit) if got_transit else np.zeros(0, np.int64)
        sent_at = np.concatenate(got_sent) if got_sent else np.zeros(0, np.int64)
        sent_by_flow = np.zeros(flows, dtype=np.int64)
        sent_by_flow[order] = sent
        received = np.bincount(flow, minlength=flows)[:flows]
        lost_flows = int(np.count_nonzero(received < sent_by_flow))
        # Added delay: transit minus the best transit of the same flow (after the warm-up,
        # which holds the latching of every leg and the first recording ticks).
        if os.environ.get("MEDIA_LOADGEN_DUMP"):
            np.savez(os.environ["MEDIA_LOADGEN_DUMP"], flow=flow, transit=transit,
                     sent_at=sent_at - wall0, late=late)
        keep = sent_at >= wall0 + int(warmup * 1e9)
        flow, transit = flow[keep], transit[keep]
        if len(flow):
            best = np.full(flows, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(best, flow, transit)
            added = (transit - best[flow]) / 1e6
            p50, p99, worst = np.percentile(added, 50), np.percentile(added, 99), added.max()
        else:
            p50 = p99 = worst = float("nan")
        return LoadResult(
            sent=int(sent.sum()),
            received=int(received.sum()),
            lost_flows=lost_flows,
            delay_p50_ms=float(p50),
            delay_p99_ms=float(p99),
            delay_max_ms=float(worst),
            gen_late_p99_ms=float(np.percentile(late, 99) / 1e6) if len(late) else 0.0,
            gen_cpu=gen_cpu,
        )

    def close(self) -> None:
        self.sock.close()
