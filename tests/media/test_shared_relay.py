"""The shared-port relay: every leg of every call on one UDP port, told apart by source address.

Real UDP on loopback; the phones are sockets on 127.0.0.2 and up (all of 127/8 is local).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys

import numpy as np
import pytest

from media.callrecording import RecordingMixer
from media.g711 import alaw_decode, ulaw_encode
from media.relay import Leg, PortAllocator
from media.shared import SharedPortRelay, SharedRelayHandle
from media.transcode import Transcoding
from media.udp import RelayHandle, RtpRelay

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="recvmmsg/sendmmsg: Linux only")

A, B = Leg.A, Leg.B
HOST = "127.0.0.1"


def rtp(seq: int, pt: int = 0, payload: bytes = bytes(160), ssrc: int = 0x1234) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, seq * 160, ssrc) + payload


def phone(n: int) -> socket.socket:
    """A phone on 127.0.0.n with a free RTP port (and nothing bound on port + 1)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((f"127.0.0.{n}", 0))
    sock.setblocking(False)
    return sock


def addr(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()
    return host, port


async def receive(sock: socket.socket, count: int = 1, timeout: float = 1.0,
                  ) -> list[tuple[bytes, tuple[str, int]]]:
    """Up to ``count`` datagrams within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    got: list[tuple[bytes, tuple[str, int]]] = []
    while len(got) < count and loop.time() < end:
        try:
            got.append(sock.recvfrom(4096))
        except BlockingIOError:
            await asyncio.sleep(0.005)
    return got


async def quiet(sock: socket.socket, timeout: float = 0.2) -> bool:
    """True if nothing arrives within ``timeout``."""
    return not await receive(sock, 1, timeout)


async def settle() -> None:
    await asyncio.sleep(0.05)


class Sink:
    """A recorder like RecordingMixer as the relay sees it."""

    def __init__(self) -> None:
        self.first: list[tuple[int, bytes]] = []
        self.lists: list[list[bytes]] = [[], []]
        self.restarts: list[int] = []

    def capture(self, leg: int, packet: bytes, now: float) -> list[bytes] | None:
        self.first.append((leg, packet))
        return self.lists[leg]

    def restart(self, leg: int) -> None:
        self.restarts.append(leg)


@pytest.fixture
def relay() -> RtpRelay:
    return RtpRelay(PortAllocator(40000, 49999), shared_port=True)


def engine(relay: RtpRelay) -> SharedPortRelay:
    assert relay.shared is not None
    return relay.shared


async def call(relay: RtpRelay, a: socket.socket, b: socket.socket) -> RelayHandle:
    handle = await relay.open_session(HOST)
    handle.set_remote(A, addr(a))
    handle.set_remote(B, addr(b))
    return handle


@pytest.mark.asyncio
async def test_two_calls_on_one_port_reach_only_their_peers(relay: RtpRelay) -> None:
    a1, b1, a2, b2 = phone(2), phone(3), phone(4), phone(5)
    try:
        h1 = await call(relay, a1, b1)
        h2 = await call(relay, a2, b2)
        port = h1.port(A)
        assert h1.port(B) == h2.port(A) == h2.port(B) == port
        assert h1.rtcp_port(A) == port + 1
        a1.sendto(rtp(1, payload=b"1" * 160), (HOST, port))
        a2.sendto(rtp(1, payload=b"2" * 160), (HOST, port))
        b2.sendto(rtp(7, payload=b"3" * 160), (HOST, port))
        got_b1, got_b2, got_a2 = await receive(b1), await receive(b2), await receive(a2)
        assert [d[12:13] for d, _ in got_b1] == [b"1"]
        assert [d[12:13] for d, _ in got_b2] == [b"2"]
        assert [d[12:13] for d, _ in got_a2] == [b"3"]
        assert got_b1[0][1] == (HOST, port)  # from the shared port: symmetric RTP
        assert await quiet(a1)
        stats = h1.stats()
        assert (stats.a.rtp_packets, stats.a.rtp_bytes) == (1, 172)
        assert stats.b.rtp_packets == 0
        assert h2.stats().b.rtp_packets == 1
        assert relay.sessions == 2
    finally:
        await relay.close()
        for s in (a1, b1, a2, b2):
            s.close()


@pytest.mark.asyncio
async def test_a_burst_of_many_calls_in_one_batch(relay: RtpRelay) -> None:
    # 40 calls: more than the engine's first tables hold, so they grow on the way.
    phones = [phone(10 + n) for n in range(80)]
    try:
        handles = [await call(relay, phones[2 * c], phones[2 * c + 1]) for c in range(40)]
        port = handles[0].port(A)
        for seq in range(5):
            for n, sock in enumerate(phones):
                sock.sendto(rtp(seq, payload=bytes([n]) * 160), (HOST, port))
        for n, sock in enumerate(phones):
            got = await receive(sock, 5)
            assert [d[12] for d, _ in got] == [n ^ 1] * 5
        assert all(h.stats().a.rtp_packets == 5 for h in handles)
    finally:
        await relay.close()
        for s in phones:
            s.close()


@pytest.mark.asyncio
async def test_unknown_source_is_dropped_and_counted(relay: RtpRelay) -> None:
    a, b, stranger = phone(2), phone(3), phone(6)
    try:
        handle = await call(relay, a, b)
        stranger.sendto(rtp(1), (HOST, handle.port(A)))
        # A's host but another port is another source as well.
        other_port = phone(2)
        other_port.sendto(rtp(2), (HOST, handle.port(A)))
        other_port.close()
        assert await quiet(a) and await quiet(b)
        assert engine(relay).dropped_unknown == 2
        assert handle.stats().a.rtp_packets == 0
        assert handle.last_rx(A) is None
    finally:
        await relay.close()
        for s in (a, b, stranger):
            s.close()


@pytest.mark.asyncio
async def test_nothing_flows_before_the_peer_is_known(relay: RtpRelay) -> None:
    a, b = phone(2), phone(3)
    try:
        handle = await relay.open_session(HOST)
        handle.set_remote(A, addr(a))
        a.sendto(rtp(1), (HOST, handle.port(A)))
        await settle()
        stats = handle.stats().a
        assert stats.dropped_no_peer == 1 and stats.rtp_packets == 0
        assert handle.last_rx(A) is not None  # the caller's phone is alive all the same
        handle.set_remote(B, addr(b))
        a.sendto(rtp(2), (HOST, handle.port(A)))
        assert len(await receive(b)) == 1
    finally:
        await relay.close()
        a.close()
        b.close()


@pytest.mark.asyncio
async def test_remote_change_moves_the_leg(relay: RtpRelay) -> None:
    a, b, a_new = phone(2), phone(3), phone(7)
    try:
        handle = await call(relay, a, b)
        sink = Sink()
        handle.set_recorder(sink)
        handle.set_remote(A, addr(a))  # the same address: nothing restarts
        assert sink.restarts == []
        handle.set_remote(A, addr(a_new))  # a re-INVITE or transfer: a new phone
        assert sink.restarts == [A]
        a.sendto(rtp(1), (HOST, handle.port(A)))  # the old address is nobody's now
        assert await quiet(b)
        a_new.sendto(rtp(2), (HOST, handle.port(A)))
        assert len(await receive(b)) == 1
        b.sendto(rtp(3), (HOST, handle.port(B)))
        assert len(await receive(a_new)) == 1
        assert await quiet(a)
        assert handle.stats().a.remote == addr(a_new)
        handle.set_remote(A, None)  # unknown again (on hold without an address)
        b.sendto(rtp(4), (HOST, handle.port(B)))
        assert await quiet(a_new)
        assert handle.stats().b.dropped_no_peer == 1
    finally:
        await relay.close()
        for s in (a, b, a_new):
            s.close()


@pytest.mark.asyncio
async def test_a_moved_phone_belongs_to_the_newest_leg(relay: RtpRelay) -> None:
    a, b, c = phone(2), phone(3), phone(4)
    try:
        first = await call(relay, a, b)
        second = await relay.open_session(HOST)
        second.set_remote(A, addr(a))  # phone a moves to the second call (a transfer)
        second.set_remote(B, addr(c))
        a.sendto(rtp(1), (HOST, first.port(A)))
        assert len(await receive(c)) == 1
        assert await quiet(b)
        assert first.stats().a.latched is None
    finally:
        await relay.close()
        for s in (a, b, c):
            s.close()


@pytest.mark.asyncio
async def test_mute_drops_what_the_leg_sends_but_counts_it(relay: RtpRelay) -> None:
    a, b = phone(2), phone(3)
    try:
        handle = await call(relay, a, b)
        handle.mute(A, True)
        a.sendto(rtp(1), (HOST, handle.port(A)))
        b.sendto(rtp(1), (HOST, handle.port(B)))
        assert len(await receive(a)) == 1  # B is not muted
        assert await quiet(b)
        assert handle.last_rx(A) is not None
        assert handle.stats().a.rtp_packets == 0
        assert handle.send_rtp(B, rtp(9, payload=b"m" * 160))  # music on hold for B
        got = await receive(b)
        assert got[0][0][12:13] == b"m" and got[0][1] == (HOST, handle.port(B))
        handle.mute(A, False)
        a.sendto(rtp(2), (HOST, handle.port(A)))
        assert len(await receive(b)) == 1
    finally:
        await relay.close()
        a.close()
        b.close()


@pytest.mark.asyncio
async def test_transcoding_ulaw_to_alaw(relay: RtpRelay) -> None:
    a, b = phone(2), phone(3)
    try:
        handle = await call(relay, a, b)
        handle.set_transcoding(A, Transcoding.between(0, 8))
        handle.set_transcoding(B, Transcoding.between(8, 0))
        tone = (np.sin(np.arange(160) / 5) * 8000).astype(np.int16)
        ulaw = ulaw_encode(tone)
        a.sendto(rtp(1, 0, ulaw), (HOST, handle.port(A)))
        # A header with one CSRC takes the per-packet way: converted all the same.
        csrc = struct.pack("!BBHIII", 0x81, 0, 2, 320, 0x1234, 0x99) + ulaw
        a.sendto(csrc, (HOST, handle.port(A)))
        a.sendto(rtp(3, 101, bytes(4)), (HOST, handle.port(A)))  # telephone-event: unchanged
        got = [d for d, _ in await receive(b, 3)]
        assert len(got) == 3
        assert got[0][1] == 8 and got[1][1] == 8 and got[2][1] == 101
        for packet, header in ((got[0], 12), (got[1], 16)):
            decoded = alaw_decode(packet[header:]).astype(np.int32)
            assert np.abs(decoded - tone).max() < 600
        assert got[1][:2] == b"\x81\x08" and got[1][12:16] == csrc[12:16]
        assert got[2] == rtp(3, 101, bytes(4))
        handle.set_transcoding(A, None)
        a.sendto(rtp(4, 0, ulaw), (HOST, handle.port(A)))
        assert (await receive(b))[0][0][12:] == ulaw
    finally:
        await relay.close()
        a.close()
        b.close()


@pytest.mark.asyncio
async def test_recording_receives_what_each_phone_sends(relay: RtpRelay) -> None:
    a, b = phone(2), phone(3)
    try:
        handle = await call(relay, a, b)
        sink = Sink()
        handle.set_recorder(sink)
        for seq in range(3):
            a.sendto(rtp(seq, payload=b"a" * 160), (HOST, handle.port(A)))
            b.sendto(rtp(seq, payload=b"b" * 160), (HOST, handle.port(B)))
        await receive(a, 3)
        await receive(b, 3)
        assert sorted(leg for leg, _ in sink.first) == [A, B]
        assert len(sink.lists[A]) == 2 and len(sink.lists[B]) == 2
        assert sink.lists[A][0] == rtp(1, payload=b"a" * 160)
        handle.set_recorder(None)
        a.sendto(rtp(9), (HOST, handle.port(A)))
        await receive(b)
        assert len(sink.lists[A]) == 2
    finally:
        await relay.close()
        a.close()
        b.close()


@pytest.mark.asyncio
async def test_recording_through_the_mixer(relay: RtpRelay) -> None:
    a, b = phone(2), phone(3)
    loop = asyncio.get_running_loop()
    try:
        handle = await call(relay, a, b)
        mixer = RecordingMixer(loop.time(), margin=0.0)
        handle.set_recorder(mixer)
        tone = (np.sin(np.arange(160) / 5) * 8000).astype(np.int16)
        for seq in range(5):
            a.sendto(rtp(seq, 0, ulaw_encode(tone)), (HOST, handle.port(A)))
        assert len(await receive(b, 5)) == 5
        left, right = mixer.take_all()
        assert len(left) >= 800 and not right.any()
        assert np.abs(left[-800:-640].astype(np.int32) - tone).max() < 600
    finally:
        await relay.close()
        a.close()
        b.close()


@pytest.mark.asyncio
async def test_rtcp_goes_between_the_rtcp_addresses(relay: RtpRelay) -> None:
    a, b = phone(2), phone(3)
    a_rtcp, b_rtcp = phone(2), phone(3)
    try:
        handle = await relay.open_session(HOST)
        handle.set_remote(A, addr(a), addr(a_rtcp))
        handle.set_remote(B, addr(b), addr(b_rtcp))
        report = b"\x81\xc9\x00\x07" + bytes(28)
        a_rtcp.sendto(report, (HOST, handle.rtcp_port(A)))
        got = await receive(b_rtcp)
        assert got == [(report, (HOST, handle.rtcp_port(B)))]
        a_rtcp.sendto(report, (HOST, handle.port(A)))  # RTCP's source is not A's RTP
        assert await quiet(b)
        stats = handle.stats().a
        assert (stats.rtcp_packets, stats.rtp_packets) == (1, 0)
        assert stats.rtcp_latched == addr(a_rtcp)
    finally:
        await relay.close()
        for s in (a, b, a_rtcp, b_rtcp):
            s.close()


@pytest.mark.asyncio
async def test_garbage_never_raises(relay: RtpRelay) -> None:
    a, b, stranger = phone(2), phone(3), phone(6)
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        handle = await call(relay, a, b)
        handle.set_recorder(RecordingMixer(loop.time()))
        handle.set_transcoding(A, Transcoding.between(0, 8))
        junk = [b"", b"\x80", b"\x00" * 11, b"\xff" * 12, b"\x9f\x00" + bytes(10),
                b"\xb0\x00" + bytes(20), b"not rtp at all", bytes(1400)]
        for data in junk:
            for sock in (a, b, stranger):
                sock.sendto(data, (HOST, handle.port(A)))
                sock.sendto(data, (HOST, handle.rtcp_port(A)))
        # A datagram longer than a receive slot is dropped, not truncated and sent.
        a.sendto(bytes(4000), (HOST, handle.port(A)))
        got = await receive(b, len(junk) + 1)
        assert len(got) == len(junk)  # whatever a known phone sends is relayed
        assert all(len(d) <= 1400 for d, _ in got)
        assert engine(relay).dropped_oversize == 1
        a.sendto(rtp(1), (HOST, handle.port(A)))
        assert len(await receive(b)) == 1
        assert errors == []
    finally:
        await relay.close()
        for s in (a, b, stranger):
            s.close()


@pytest.mark.asyncio
async def test_close_frees_everything() -> None:
    ports = PortAllocator(40000, 49999)
    relay = RtpRelay(ports, shared_port=True)
    a, b = phone(2), phone(3)
    try:
        h1 = await call(relay, a, b)
        assert ports.in_use == 1  # one pair for every call
        h2 = await call(relay, phone(4), phone(5))
        assert ports.in_use == 1
        port = h1.port(A)
        a.sendto(rtp(1), (HOST, port))
        assert len(await receive(b)) == 1
        await h1.close()
        await h1.close()  # twice is fine
        assert h1.closed and relay.sessions == 1
        assert h1.stats().a.rtp_packets == 1  # the counters as they were at close
        assert not h1.send_rtp(A, rtp(2))
        a.sendto(rtp(2), (HOST, port))
        assert await quiet(b)  # the legs are nobody's now
        h3 = await call(relay, a, b)  # the freed legs are reused, counters from zero
        assert h3.stats().a.rtp_packets == 0
        await h2.close()
        await relay.close()
        assert ports.in_use == 0 and relay.sessions == 0
        # The port pair is free again: it can be bound.
        for p in (port, port + 1):
            check = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            check.bind((HOST, p))
            check.close()
    finally:
        await relay.close()
        a.close()
        b.close()


@pytest.mark.asyncio
async def test_bad_input_gets_clear_errors(relay: RtpRelay) -> None:
    with pytest.raises(ValueError, match="IPv4 only"):
        await relay.open_session("::1")
    with pytest.raises(ValueError, match="not an IP address"):
        await relay.open_session("localhost")
    handle = await relay.open_session(HOST)
    try:
        with pytest.raises(ValueError, match="not an IP address"):
            handle.set_remote(A, ("phone.example.com", 4000))
        with pytest.raises(ValueError, match="IPv4 only"):
            handle.set_remote(A, ("2001:db8::1", 4000))
        with pytest.raises(ValueError, match="port"):
            handle.set_remote(A, ("127.0.0.2", 0))
        handle.set_remote(A, ("::ffff:127.0.0.2", 4000))  # IPv4-mapped is IPv4
        assert handle.stats().a.remote == ("127.0.0.2", 4000)
    finally:
        await relay.close()


@pytest.mark.asyncio
async def test_rtp_relay_chooses_the_shared_port_by_argument() -> None:
    relay = RtpRelay(PortAllocator(40000, 49999), shared_port=True)
    a, b = phone(2), phone(3)
    try:
        first = await relay.open_session(HOST)
        second = await relay.open_session(HOST)
        assert isinstance(first, RelayHandle)  # what the call controller holds
        assert isinstance(first, SharedRelayHandle)
        assert first.port(A) == second.port(B)
        assert relay.sessions == 2 and relay.shared is not None
        first.set_remote(A, addr(a))
        first.set_remote(B, addr(b))
        a.sendto(rtp(1), (HOST, first.port(A)))
        assert len(await receive(b)) == 1
    finally:
        await relay.close()
        a.close()
        b.close()
    assert relay.sessions == 0
    per_call = RtpRelay(PortAllocator(40000, 49999))
    try:
        one, two = await per_call.open_session(HOST), await per_call.open_session(HOST)
        assert one.port(A) != two.port(A) and per_call.shared is None
    finally:
        await per_call.close()


@pytest.mark.asyncio
async def test_the_older_call_gets_its_phone_back_when_the_newer_one_ends(
        relay: RtpRelay) -> None:
    # A phone with one RTP port takes a second call (call waiting); when that call ends, the
    # first call's audio flows again.
    a, b, c = phone(2), phone(3), phone(4)
    try:
        first = await call(relay, a, b)
        second = await relay.open_session(HOST)
        second.set_remote(A, addr(a))
        second.set_remote(B, addr(c))
        await second.close()
        a.sendto(rtp(1), (HOST, first.port(A)))
        assert len(await receive(b)) == 1
    finally:
        await relay.close()
        for s in (a, b, c):
            s.close()


@pytest.mark.asyncio
async def test_an_empty_keepalive_from_a_recorded_leg_is_harmless(relay: RtpRelay) -> None:
    a, b = phone(2), phone(3)
    sink = Sink()
    try:
        handle = await call(relay, a, b)
        handle.set_recorder(sink)
        a.sendto(b"", (HOST, handle.port(A)))
        a.sendto(rtp(1), (HOST, handle.port(A)))
        assert len(await receive(b)) >= 1
    finally:
        await relay.close()
        for s in (a, b):
            s.close()
