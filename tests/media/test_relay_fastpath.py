"""The relay's per-port fast path and its recorder hook: same decisions as the core, less work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from media.callrecording import RecordingMixer
from media.g711 import ulaw_encode
from media.relay import Leg, RelaySession
from media.transcode import Transcoding
from media.udp import RelayHandle, RtpRelay
from tests.media.test_relay import (
    PHONE_A,
    PHONE_B,
    RTP,
    bridged,
    phone,
    receive,
    rtp_packet,
    run,  # noqa: F401  (fixture)
    settle,
    with_relay,
)

A, B = Leg.A, Leg.B


class _Sink:
    """A recorder that wants the time of every leg's first packet, then a list."""

    def __init__(self) -> None:
        self.captured: list[tuple[int, bytes, float]] = []
        self.lists: list[list[bytes]] = [[], []]
        self.restarts: list[int] = []

    def capture(self, leg: int, packet: bytes, now: float) -> list[bytes] | None:
        self.captured.append((leg, packet, now))
        return self.lists[leg]

    def restart(self, leg: int) -> None:
        self.restarts.append(leg)


def test_fast_destination_only_once_latched_and_routable() -> None:
    session = RelaySession()
    rtp_a = session.channels[A * 2]
    assert rtp_a.fast is None
    session.set_remote(A, PHONE_A)
    assert rtp_a.fast is None  # not latched, and B unknown
    session.on_packet(A, RTP, PHONE_A, False, 1.0)
    assert rtp_a.latched == PHONE_A and rtp_a.fast is None  # B still unknown
    session.set_remote(B, PHONE_B)
    assert rtp_a.fast == PHONE_B
    assert session.channels[B * 2].fast is None  # B has not sent yet: not latched


def test_anything_unusual_leaves_the_fast_path() -> None:
    session = bridged()
    session.on_packet(A, RTP, PHONE_A, False, 1.0)
    rtp_a = session.channels[A * 2]
    assert rtp_a.fast == PHONE_B
    session.mute(A, True)
    assert rtp_a.fast is None
    session.mute(A, False)
    session.set_transcoding(A, Transcoding.between(0, 8))
    assert rtp_a.fast is None and session.xcode[A] is not None
    session.set_transcoding(A, None)
    session.set_blocked(B, False, True)  # B's RTP socket is full
    assert rtp_a.fast is None
    assert session.channels[A * 2 + 1].fast is None  # RTCP was never latched anyway
    session.set_blocked(B, False, False)
    assert rtp_a.fast == PHONE_B
    session.set_remote(A, ("192.0.2.99", 4000))  # a new phone: unlatched until it sends
    assert rtp_a.fast is None and rtp_a.latched is None


def test_recorder_gets_the_first_packet_with_its_time_then_a_list() -> None:
    session = bridged()
    sink = _Sink()
    session.set_recorder(sink)
    session.on_packet(A, RTP, PHONE_A, False, 1.0)
    assert sink.captured == [(0, RTP, 1.0)]
    rtp_a = session.channels[A * 2]
    assert rtp_a.rec is sink.lists[0] and rtp_a.fast == PHONE_B
    session.on_packet(A, b"\x80\x00two" + bytes(167), PHONE_A, False, 1.02)
    assert len(sink.captured) == 1 and len(sink.lists[0]) == 1  # appended, not captured
    session.on_packet(A, b"\x81\xc9" + bytes(6), (PHONE_A[0], 4001), True, 1.03)
    assert len(sink.lists[0]) == 1  # RTCP is not recorded
    # A new phone on leg A: the recorder restarts the leg and times its first packet again.
    session.set_remote(A, ("192.0.2.99", 4000))
    assert sink.restarts == [0] and rtp_a.rec is None
    session.on_packet(A, RTP, ("192.0.2.99", 4000), False, 5.0)
    assert sink.captured[-1] == (0, RTP, 5.0)
    session.set_recorder(None)
    assert rtp_a.rec is None and rtp_a.fast == PHONE_B


def test_muted_leg_is_still_recorded() -> None:
    session = bridged()
    sink = _Sink()
    session.set_recorder(sink)
    session.mute(A, True)
    assert session.on_packet(A, RTP, PHONE_A, False, 1.0) is None
    assert session.on_packet(A, RTP, PHONE_A, False, 1.02) is None
    assert len(sink.captured) == 1 and len(sink.lists[0]) == 1


def test_observe_turns_moved_counters_into_a_receive_time() -> None:
    session = bridged()
    session.on_packet(A, RTP, PHONE_A, False, 1.0)
    session.observe(2.0)
    assert session.last_rx(A) == 1.0  # nothing new since the packet that carried its time
    # What the I/O layer does on the fast path: count, no time.
    session.channels[A * 2].packets += 1
    session.observe(3.0)
    assert session.last_rx(A) == 3.0
    assert session.last_rx(B) is None
    session.observe(4.0)
    assert session.last_rx(A) == 3.0


def test_fast_path_counts_and_latching_over_real_sockets(run: Callable[..., None]) -> None:  # noqa: F811
    async def body(relay: RtpRelay, handle: RelayHandle) -> None:
        a, b, intruder = phone(), phone(), phone()
        with a, b, intruder:
            handle.set_remote(A, a.getsockname())
            handle.set_remote(B, b.getsockname())
            relay_a = ("127.0.0.1", handle.port(A))
            for seq in range(30):
                a.sendto(rtp_packet(seq, 1), relay_a)
                intruder.sendto(rtp_packet(seq, 666), relay_a)
                await asyncio.sleep(0.001)
            got = await receive(b, 30)
            assert [data for data, _ in got] == [rtp_packet(seq, 1) for seq in range(30)]
            await settle(lambda: handle.stats().a.dropped_foreign == 30)
            stats = handle.stats().a
            assert (stats.rtp_packets, stats.rtp_bytes) == (30, 30 * 172)
            assert stats.dropped_foreign == 30  # counted on the slow path
            last = handle.last_rx(A)
            assert last is not None
            assert abs(last - asyncio.get_running_loop().time()) < 1
            assert await receive(a, 1, timeout=0.05) == []  # B said nothing

    run(with_relay(body))


def test_recording_through_the_relay_and_a_new_phone_mid_call(run: Callable[..., None]) -> None:  # noqa: F811
    async def body(relay: RtpRelay, handle: RelayHandle) -> None:
        loop = asyncio.get_running_loop()
        a, b, c = phone(), phone(), phone()
        with a, b, c:
            handle.set_remote(A, a.getsockname())
            handle.set_remote(B, b.getsockname())
            mixer = RecordingMixer(loop.time(), margin=0.0)
            handle.set_recorder(mixer)
            relay_a, relay_b = ("127.0.0.1", handle.port(A)), ("127.0.0.1", handle.port(B))

            def frame(seq: int, ts: int, ssrc: int, value: int) -> bytes:
                return (rtp_packet(seq, ssrc)[:4] + ts.to_bytes(4, "big")
                        + ssrc.to_bytes(4, "big")
                        + ulaw_encode(np.full(160, value, dtype=np.int16)))

            # Paced like phones (20 ms), so that the timeline is real time.
            for n in range(10):
                a.sendto(frame(n, 160 * n, 1, 1000), relay_a)
                b.sendto(frame(n, 160 * n, 2, 2000), relay_b)
                await asyncio.sleep(0.02)
            await receive(b, 10)
            await receive(a, 10)
            # B is replaced by C (a transfer): same relay, new address, new stream.
            handle.set_remote(B, c.getsockname())
            for n in range(10):
                c.sendto(frame(900 + n, 5_000_000 + 160 * n, 3, -2000), relay_b)
                await asyncio.sleep(0.02)
            await receive(a, 10)
            left, right = mixer.take_all()
            assert len(left) == len(right) > 0
            assert (left > 900).sum() >= 1600  # ten frames of A
            assert (right > 1900).sum() >= 1600 and (right < -1900).sum() >= 1600
            last_b = int(np.flatnonzero(right > 1900)[-1])
            first_c = int(np.flatnonzero(right < -1900)[0])
            assert first_c > last_b  # C comes after B on the one timeline
            handle.set_recorder(None)

    run(with_relay(body))
