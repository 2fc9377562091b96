"""The RTP relay: latching core and port allocator, then real UDP through the asyncio adapter."""

from __future__ import annotations

import asyncio
import errno
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from media.relay import Leg, NoPortsError, PortAllocator, RelaySession
from media.udp import RelayHandle, RtpRelay

A, B = Leg.A, Leg.B
PHONE_A = ("192.0.2.10", 4000)
PHONE_B = ("198.51.100.20", 6000)
NAT_A = ("203.0.113.99", 61234)
RTP = b"\x80\x00" + bytes(170)


# -- sans-I/O core -------------------------------------------------------------------------


def bridged() -> RelaySession:
    session = RelaySession()
    session.set_remote(A, PHONE_A)
    session.set_remote(B, PHONE_B)
    return session


def test_leg_other() -> None:
    assert A.other is B
    assert B.other is A


def test_forwards_both_ways_and_counts() -> None:
    session = bridged()
    assert session.on_packet(A, RTP, PHONE_A, False, 1.0) == (B, PHONE_B)
    assert session.on_packet(B, RTP, PHONE_B, False, 2.0) == (A, PHONE_A)
    assert session.on_packet(B, b"x" * 10, PHONE_B, False, 3.0) == (A, PHONE_A)
    stats = session.stats()
    assert (stats.a.rtp_packets, stats.a.rtp_bytes) == (1, len(RTP))
    assert (stats.b.rtp_packets, stats.b.rtp_bytes) == (2, len(RTP) + 10)
    assert stats.leg(A) is stats.a
    assert session.last_rx(A) == 1.0
    assert session.last_rx(B) == 3.0


def test_packets_before_any_remote_are_dropped() -> None:
    session = RelaySession()
    assert session.on_packet(A, RTP, PHONE_A, False, 1.0) is None
    assert session.stats().a.dropped_no_remote == 1
    assert session.last_rx(A) is None
    assert session.stats().a.latched is None


def test_packets_before_the_peer_answers_are_dropped_not_sent_anywhere() -> None:
    session = RelaySession()
    session.set_remote(A, PHONE_A)
    assert session.on_packet(A, RTP, PHONE_A, False, 1.0) is None
    assert session.stats().a.dropped_no_peer == 1
    assert session.stats().a.rtp_packets == 0
    assert session.last_rx(A) == 1.0  # the caller's phone is alive all the same
    # Once B answers, A's media flows, and it still comes only from A's latched source.
    session.set_remote(B, PHONE_B)
    assert session.on_packet(A, RTP, PHONE_A, False, 2.0) == (B, PHONE_B)


def test_latches_to_the_real_source_behind_nat() -> None:
    session = bridged()
    # SDP says 192.0.2.10:4000, but the phone's NAT sends from 203.0.113.99:61234.
    assert session.on_packet(A, RTP, NAT_A, False, 1.0) == (B, PHONE_B)
    assert session.stats().a.latched == NAT_A
    assert session.stats().a.remote == PHONE_A
    assert session.remote(A) == NAT_A
    assert session.on_packet(B, RTP, PHONE_B, False, 1.1) == (A, NAT_A)


def test_foreign_source_is_ignored_after_latching() -> None:
    session = bridged()
    session.on_packet(A, RTP, NAT_A, False, 1.0)
    assert session.on_packet(A, RTP, ("192.0.2.66", 4000), False, 2.0) is None
    stats = session.stats().a
    assert stats.dropped_foreign == 1
    assert stats.rtp_packets == 1
    assert session.last_rx(A) == 1.0


def test_the_sdp_address_takes_the_leg_back_from_whoever_latched_first() -> None:
    # RTP injection on an idle port ("RTP bleed"): a stranger's packet arrives before the
    # phone's; the phone, sending from the address its SDP gave, still gets its leg back.
    session = bridged()
    stranger = ("198.51.100.66", 5000)
    assert session.on_packet(A, RTP, stranger, False, 1.0) == (B, PHONE_B)
    assert session.on_packet(A, RTP, PHONE_A, False, 2.0) == (B, PHONE_B)
    assert session.stats().a.latched == PHONE_A
    assert session.on_packet(A, RTP, stranger, False, 3.0) is None
    assert session.on_packet(B, RTP, PHONE_B, False, 3.0) == (A, PHONE_A)


def test_re_invite_with_new_address_unlatches_and_relatches() -> None:
    session = bridged()
    session.on_packet(A, RTP, NAT_A, False, 1.0)
    new_sdp = ("192.0.2.11", 4100)
    session.set_remote(A, new_sdp)
    assert session.stats().a.latched is None
    # Until A sends again, B's media goes to the new SDP address.
    assert session.on_packet(B, RTP, PHONE_B, False, 2.0) == (A, new_sdp)
    new_nat = ("203.0.113.99", 62000)
    assert session.on_packet(A, RTP, new_nat, False, 3.0) == (B, PHONE_B)
    assert session.on_packet(A, RTP, NAT_A, False, 3.1) is None  # the old source is foreign now
    assert session.on_packet(B, RTP, PHONE_B, False, 4.0) == (A, new_nat)


def test_re_invite_with_same_address_keeps_the_latch() -> None:
    session = bridged()
    session.on_packet(A, RTP, NAT_A, False, 1.0)
    session.set_remote(A, PHONE_A)  # e.g. a hold re-INVITE: only the direction changed
    assert session.stats().a.latched == NAT_A
    assert session.on_packet(A, RTP, ("192.0.2.66", 1), False, 2.0) is None


def test_rtcp_maps_to_rtcp_and_latches_separately() -> None:
    session = bridged()
    assert session.on_packet(A, b"\x81\xc9" + bytes(6), (NAT_A[0], 61300), True, 1.0) == (
        B,
        (PHONE_B[0], PHONE_B[1] + 1),
    )
    stats = session.stats().a
    assert stats.rtcp_latched == (NAT_A[0], 61300)
    assert (stats.rtcp_packets, stats.rtcp_bytes, stats.rtp_packets) == (1, 8, 0)
    assert stats.latched is None  # RTP has not latched yet
    assert session.on_packet(B, b"\x81\xc9" + bytes(6), (PHONE_B[0], 6001), True, 2.0) == (
        A,
        (NAT_A[0], 61300),
    )
    assert session.on_packet(A, RTP, NAT_A, False, 3.0) == (B, PHONE_B)


def test_explicit_rtcp_address() -> None:
    session = RelaySession()
    session.set_remote(A, PHONE_A)
    session.set_remote(B, PHONE_B, ("198.51.100.21", 7777))  # a=rtcp:7777 IN IP4 ...
    assert session.on_packet(A, b"rtcp", PHONE_A, True, 1.0) == (B, ("198.51.100.21", 7777))


def test_hold_without_address_stops_both_directions() -> None:
    session = bridged()
    session.set_remote(B, None)
    assert session.on_packet(A, RTP, PHONE_A, False, 1.0) is None
    assert session.on_packet(B, RTP, PHONE_B, False, 1.0) is None
    stats = session.stats()
    assert (stats.a.dropped_no_peer, stats.b.dropped_no_remote) == (1, 1)


def test_congestion_drop_is_not_counted_as_forwarded() -> None:
    session = bridged()
    assert session.on_packet(A, RTP, PHONE_A, False, 1.0) is not None
    session.count_congested(A, RTP, False)
    stats = session.stats().a
    assert (stats.rtp_packets, stats.rtp_bytes, stats.dropped_congested) == (0, 0, 1)


@pytest.mark.parametrize(
    "addr", [("1.2.3.4", 0), ("1.2.3.4", 70000), ("", 5000), ("1.2.3.4", 65535)]
)
def test_set_remote_rejects_bad_addresses(addr: tuple[str, int]) -> None:
    with pytest.raises(ValueError, match=r"remote address|RTCP"):
        RelaySession().set_remote(A, addr)


# -- port allocator ------------------------------------------------------------------------


def test_allocator_hands_out_even_ports_with_room_for_rtcp() -> None:
    ports = PortAllocator(10001, 10010)
    assert ports.capacity == 4  # 10002, 10004, 10006, 10008 (10010 has no 10011)
    got = [ports.allocate() for _ in range(4)]
    assert got == [10002, 10004, 10006, 10008]
    assert ports.available == 0
    assert ports.in_use == 4
    with pytest.raises(NoPortsError, match=r"all 4 RTP port pairs in \[10001, 10010\]"):
        ports.allocate()


def test_allocator_reuses_released_ports_last() -> None:
    ports = PortAllocator(20000, 20007)
    first = ports.allocate()
    ports.release(first)
    assert [ports.allocate() for _ in range(4)] == [20002, 20004, 20006, 20000]
    with pytest.raises(NoPortsError):
        ports.allocate()
    ports.release(20004)
    assert ports.allocate() == 20004


def test_allocator_rejects_double_release_and_bad_ranges() -> None:
    ports = PortAllocator(20000, 20001)
    with pytest.raises(ValueError, match="not allocated"):
        ports.release(20000)
    for lo, hi in [(0, 10), (20000, 19000), (20001, 20002), (65534, 65536), (20000, 20000)]:
        with pytest.raises(ValueError, match="rtp_ports"):
            PortAllocator(lo, hi)


def test_allocator_is_constant_time() -> None:
    ports = PortAllocator(1024, 65535)
    start = time.perf_counter()
    allocated = [ports.allocate() for _ in range(ports.capacity)]
    for port in allocated:
        ports.release(port)
    assert time.perf_counter() - start < 1.0  # 32k of each; a linear scan would take minutes
    assert ports.available == ports.capacity == 32256


# -- real sockets through the asyncio adapter, under both event loops -----------------------

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def _loop_factories() -> list[Any]:
    factories: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        factories.append(pytest.param(None, id="uvloop", marks=pytest.mark.skip("no uvloop")))
    else:
        factories.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
    return factories


@pytest.fixture(params=_loop_factories())
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    """Run a coroutine on a fresh event loop of the parametrised kind, bounded in time."""
    factory: LoopFactory = request.param

    def runner(coro: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=factory) as loop_runner:
            loop_runner.run(asyncio.wait_for(coro, timeout=20))

    return runner


def port_range(size: int = 64) -> tuple[int, int]:
    # A random slice of the unprivileged range; ports another program holds are skipped.
    lo = random.randrange(20000, 60000, 2)
    return lo, lo + size - 1


def phone() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def rtp_packet(seq: int, ssrc: int) -> bytes:
    header = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc)
    return header + bytes([seq % 256]) * 160


async def receive(sock: socket.socket, count: int, timeout: float = 3.0) -> list[tuple[bytes, Any]]:
    """Read up to ``count`` datagrams, giving up after ``timeout`` seconds."""
    got: list[tuple[bytes, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        try:
            got.append(sock.recvfrom(2048))
        except BlockingIOError:
            await asyncio.sleep(0.002)
    return got


async def settle(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.002)


async def with_relay(body: Callable[[RtpRelay, RelayHandle], Awaitable[None]]) -> None:
    relay = RtpRelay(PortAllocator(*port_range()))
    handle = await relay.open_session("127.0.0.1")
    try:
        await body(relay, handle)
    finally:
        await relay.close()
    assert relay.sessions == 0
    assert relay.ports.in_use == 0


def test_two_phones_talk_through_the_relay(run: Callable[..., None]) -> None:
    async def body(relay: RtpRelay, handle: RelayHandle) -> None:
        a, b = phone(), phone()
        with a, b:
            handle.set_remote(A, a.getsockname())
            handle.set_remote(B, b.getsockname())
            relay_a = ("127.0.0.1", handle.port(A))
            relay_b = ("127.0.0.1", handle.port(B))
            sent_a = [rtp_packet(seq, 0xAAAA) for seq in range(50)]
            sent_b = [rtp_packet(seq, 0xBBBB) for seq in range(50)]
            for pa, pb in zip(sent_a, sent_b, strict=True):
                a.sendto(pa, relay_a)
                b.sendto(pb, relay_b)
                await asyncio.sleep(0)  # paced a little, like a phone's 20 ms clock
            at_b = await receive(b, 50)
            at_a = await receive(a, 50)
            assert [data for data, _ in at_b] == sent_a  # all of them, in order, intact
            assert [data for data, _ in at_a] == sent_b
            # Each phone hears the relay from the port it sends to (symmetric RTP, RFC 4961).
            assert {addr for _, addr in at_b} == {relay_b}
            assert {addr for _, addr in at_a} == {relay_a}
            stats = handle.stats()
            assert (stats.a.rtp_packets, stats.b.rtp_packets) == (50, 50)
            assert stats.a.rtp_bytes == sum(map(len, sent_a))
            last = handle.last_rx(A)
            assert last is not None
            assert abs(last - asyncio.get_running_loop().time()) < 5

    run(with_relay(body))


def test_rtcp_goes_between_the_rtcp_ports(run: Callable[..., None]) -> None:
    async def body(relay: RtpRelay, handle: RelayHandle) -> None:
        a_rtp, a_rtcp, b_rtp, b_rtcp = phone(), phone(), phone(), phone()
        with a_rtp, a_rtcp, b_rtp, b_rtcp:
            handle.set_remote(A, a_rtp.getsockname(), a_rtcp.getsockname())
            handle.set_remote(B, b_rtp.getsockname(), b_rtcp.getsockname())
            assert handle.rtcp_port(A) == handle.port(A) + 1
            report = b"\x81\xc9\x00\x07" + bytes(28)
            a_rtcp.sendto(report, ("127.0.0.1", handle.rtcp_port(A)))
            got = await receive(b_rtcp, 1)
            assert got == [(report, ("127.0.0.1", handle.rtcp_port(B)))]
            assert await receive(b_rtp, 1, timeout=0.1) == []
            assert handle.stats().a.rtcp_packets == 1

    run(with_relay(body))


def test_foreign_sender_is_ignored_after_latching(run: Callable[..., None]) -> None:
    async def body(relay: RtpRelay, handle: RelayHandle) -> None:
        a, b, intruder = phone(), phone(), phone()
        with a, b, intruder:
            handle.set_remote(A, a.getsockname())
            handle.set_remote(B, b.getsockname())
            relay_a = ("127.0.0.1", handle.port(A))
            a.sendto(rtp_packet(1, 1), relay_a)
            assert len(await receive(b, 1)) == 1
            for seq in range(5):
                intruder.sendto(rtp_packet(seq, 666), relay_a)
            await settle(lambda: handle.stats().a.dropped_foreign == 5)
            a.sendto(rtp_packet(2, 1), relay_a)
            got = await receive(b, 6, timeout=0.5)
            assert [data for data, _ in got] == [rtp_packet(2, 1)]
            assert handle.stats().a.dropped_foreign == 5

    run(with_relay(body))


def test_phone_behind_nat_gets_media_at_its_real_port(run: Callable[..., None]) -> None:
    async def body(relay: RtpRelay, handle: RelayHandle) -> None:
        a, b = phone(), phone()
        with a, b:
            # A's SDP names a port it does not send from (its NAT rewrote the source).
            sdp_port = a.getsockname()[1] + 1 if a.getsockname()[1] < 65000 else 1024
            handle.set_remote(A, ("127.0.0.1", sdp_port))
            handle.set_remote(B, b.getsockname())
            a.sendto(rtp_packet(1, 1), ("127.0.0.1", handle.port(A)))
            assert len(await receive(b, 1)) == 1
            assert handle.stats().a.latched == a.getsockname()
            for seq in range(10):
                b.sendto(rtp_packet(seq, 2), ("127.0.0.1", handle.port(B)))
            got = await receive(a, 10)
            assert [data for data, _ in got] == [rtp_packet(seq, 2) for seq in range(10)]

    run(with_relay(body))


def test_media_before_the_callee_answers_is_dropped(run: Callable[..., None]) -> None:
    async def body(relay: RtpRelay, handle: RelayHandle) -> None:
        a, b = phone(), phone()
        with a, b:
            handle.set_remote(A, a.getsockname())
            a.sendto(rtp_packet(1, 1), ("127.0.0.1", handle.port(A)))
            b.sendto(rtp_packet(1, 2), ("127.0.0.1", handle.port(B)))
            await settle(lambda: handle.stats().a.dropped_no_peer == 1
                         and handle.stats().b.dropped_no_remote == 1)
            stats = handle.stats()
            assert (stats.a.dropped_no_peer, stats.b.dropped_no_remote) == (1, 1)
            assert await receive(a, 1, timeout=0.1) == []
            handle.set_remote(B, b.getsockname())  # the 200 OK arrived
            a.sendto(rtp_packet(2, 1), ("127.0.0.1", handle.port(A)))
            assert [d for d, _ in await receive(b, 1)] == [rtp_packet(2, 1)]

    run(with_relay(body))


def test_set_remote_needs_an_ip_literal(run: Callable[..., None]) -> None:
    async def body(relay: RtpRelay, handle: RelayHandle) -> None:
        with pytest.raises(ValueError, match="not an IP address literal"):
            handle.set_remote(A, ("phone.example", 4000))
        with pytest.raises(ValueError, match="bound to IPv4"):
            handle.set_remote(A, ("2001:db8::1", 4000))

    run(with_relay(body))


def test_close_releases_ports_and_skips_busy_ones(run: Callable[..., None]) -> None:
    async def body() -> None:
        lo, hi = port_range(8)
        busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with busy:
            try:
                busy.bind(("127.0.0.1", lo))
            except OSError as exc:  # someone else already holds it: just as good
                assert exc.errno == errno.EADDRINUSE
            relay = RtpRelay(PortAllocator(lo, hi))  # pairs at lo, lo+2, lo+4, lo+6
            first = await relay.open_session("127.0.0.1")
            ports = {first.port(A), first.port(B)}
            assert lo not in ports
            assert relay.ports.in_use == 2
            with pytest.raises(NoPortsError):
                await relay.open_session("127.0.0.1")
            assert relay.ports.in_use == 2  # the failed attempt gave back what it took
            await first.close()
            await first.close()  # idempotent
            assert first.closed
            assert relay.ports.in_use == 0
            for port in ports:  # the sockets are really gone
                probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                with probe:
                    probe.bind(("127.0.0.1", port))
                    probe.close()
            async with await relay.open_session("127.0.0.1") as again:
                assert {again.port(A), again.port(B)} <= {lo + 2, lo + 4, lo + 6}
            assert relay.sessions == 0

    run(body())


def test_bind_host_must_be_an_ip_literal(run: Callable[..., None]) -> None:
    async def body() -> None:
        relay = RtpRelay(PortAllocator(*port_range()))
        with pytest.raises(ValueError, match="not an IP address literal"):
            await relay.open_session("localhost")
        assert relay.ports.in_use == 0

    run(body())


def test_ipv6_loopback(run: Callable[..., None]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")

    async def body() -> None:
        relay = RtpRelay(PortAllocator(*port_range()))
        try:
            handle = await relay.open_session("::1")
        except OSError as exc:
            pytest.skip(f"IPv6 loopback unavailable: {exc}")
        try:
            a = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            b = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            with a, b:
                for sock in (a, b):
                    sock.bind(("::1", 0))
                    sock.setblocking(False)
                handle.set_remote(A, a.getsockname()[:2])
                handle.set_remote(B, b.getsockname()[:2])
                a.sendto(rtp_packet(7, 1), ("::1", handle.port(A)))
                assert [d for d, _ in await receive(b, 1)] == [rtp_packet(7, 1)]
                b.sendto(rtp_packet(8, 2), ("::1", handle.port(B)))
                assert [d for d, _ in await receive(a, 1)] == [rtp_packet(8, 2)]
        finally:
            await relay.close()

    run(body())
