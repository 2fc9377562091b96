"""The PBX's own RTP streams and the one 20 ms clock that drives them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from media.g711 import PCMU, ulaw_decode
from media.playback import PlaybackEngine
from media.player import FrameQueue, RtpStream, SamplesSource, SourceChain, silence_source
from media.relay import Leg, RelaySession
from media.rtp import RtpPacket
from media.tones import ToneSource, beep_spec


class _Frames:
    def __init__(self, count: int, freq: float = 1000.0) -> None:
        self.count = count
        self.t = 0

    def next_frame(self) -> np.ndarray | None:
        if self.count == 0:
            return None
        self.count -= 1
        n = np.arange(self.t, self.t + 160)
        self.t += 160
        return (8000 * np.sin(2 * np.pi * 1000 * n / 8000)).astype(np.int16)


def test_stream_numbers_times_and_encodes_packets() -> None:
    stream = RtpStream(_Frames(3), PCMU)
    pkts = [RtpPacket.parse(stream.next_packet() or b"") for _ in range(3)]
    assert stream.next_packet() is None and stream.ended
    assert [p.marker for p in pkts] == [True, False, False]
    assert all(p.payload_type == 0 and len(p.payload) == 160 for p in pkts)
    assert (pkts[1].sequence_number - pkts[0].sequence_number) & 0xFFFF == 1
    assert (pkts[2].timestamp - pkts[1].timestamp) & 0xFFFFFFFF == 160
    assert len({p.ssrc for p in pkts}) == 1
    pcm = ulaw_decode(pkts[1].payload).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(160)))
    assert abs(np.argmax(spectrum) * 8000 / 160 - 1000) <= 50


@pytest.mark.asyncio
async def test_engine_paces_every_stream_on_one_20ms_clock() -> None:
    engine = PlaybackEngine()
    got: dict[str, list[float]] = {"a": [], "b": []}
    loop = asyncio.get_running_loop()
    for key in got:
        engine.play(key, RtpStream(ToneSource(beep_spec(seconds=60)), PCMU),
                    lambda _d, k=key: got[k].append(loop.time()) or True)
    await asyncio.sleep(1.0)
    engine.stop("a")
    await asyncio.sleep(0.2)
    engine.close()
    # 20 ms pacing against an absolute start: about 50 packets a second, no drift.
    assert 45 <= len(got["a"]) <= 53
    assert len(got["b"]) - len(got["a"]) >= 8
    span = got["b"][-1] - got["b"][0]
    assert abs(span - (len(got["b"]) - 1) * 0.020) < 0.05


@pytest.mark.asyncio
async def test_finished_streams_leave_and_the_clock_stops() -> None:
    engine = PlaybackEngine()
    sent: list[bytes] = []
    engine.play("x", RtpStream(_Frames(5), PCMU), lambda d: sent.append(d) or True)
    await asyncio.sleep(0.3)
    assert len(sent) == 5 and len(engine) == 0
    assert engine._timer is None


def test_muted_leg_is_latched_but_not_forwarded() -> None:
    relay = RelaySession()
    relay.set_remote(Leg.A, ("127.0.0.1", 4000))
    relay.set_remote(Leg.B, ("127.0.0.1", 5000))
    relay.mute(Leg.A, True)
    assert relay.on_packet(Leg.A, b"x" * 172, ("127.0.0.1", 4000), False, 1.0) is None
    assert relay.last_rx(Leg.A) == 1.0
    assert relay.on_packet(Leg.B, b"y" * 172, ("127.0.0.1", 5000), False, 1.0) is not None
    relay.mute(Leg.A, False)
    assert relay.on_packet(Leg.A, b"x" * 172, ("127.0.0.1", 4000), False, 1.1) == (
        Leg.B, ("127.0.0.1", 5000))


# ---------------------------------------------------------------------------------------------
# Finite sources, chains and one RTP stream across prompts


def _tone(ms: int, freq: float = 1000.0) -> np.ndarray:
    n = np.arange(ms * 8)
    return (8000 * np.sin(2 * np.pi * freq * n / 8000)).astype(np.int16)


def test_samples_source_plays_once_and_pads_the_last_frame() -> None:
    source = SamplesSource(_tone(50))
    assert source.remaining_frames == 3
    got = [source.next_frame() for _ in range(4)]
    assert got[3] is None and source.remaining_frames == 0
    last = got[2]
    assert last is not None and len(last) == 160 and not last[80:].any() and last[:80].any()
    with pytest.raises(ValueError, match="1-D int16"):
        SamplesSource(np.zeros(10, dtype=np.float32))  # type: ignore[arg-type]
    assert silence_source(0.1).remaining_frames == 5
    with pytest.raises(ValueError, match="silence"):
        silence_source(-1)


def test_chain_plays_items_in_order_with_a_callback_each() -> None:
    done: list[str] = []
    chain = SourceChain()
    chain.append(SamplesSource(_tone(40)), lambda: done.append("prompt"))
    chain.append(silence_source(0.04), lambda: done.append("pause"))
    frames: list[np.ndarray] = []
    while (frame := chain.next_frame()) is not None and len(frames) < 100:
        frames.append(frame)
        if len(frames) == 3:
            chain.append(SamplesSource(_tone(20, 500)), lambda: done.append("next"))
    assert len(frames) == 5 and done == ["prompt", "pause", "next"]
    assert frames[0].any() and not frames[2].any() and frames[4].any()
    chain.append(ToneSource(beep_spec(seconds=60)))
    assert chain.next_frame() is not None and len(chain) == 1
    chain.skip()
    assert chain.next_frame() is None
    chain.append(silence_source(1))
    chain.clear()
    assert chain.next_frame() is None and len(chain) == 0


def test_stream_keeps_ssrc_seq_and_timestamps_across_sources_and_marks_gaps() -> None:
    stream = RtpStream(SamplesSource(_tone(40)), PCMU)
    t = 100.0
    first = [RtpPacket.parse(stream.next_packet(t + i * 0.02) or b"") for i in range(2)]
    assert stream.next_packet(t + 0.04) is None and stream.ended
    stream.set_source(SamplesSource(_tone(40)))
    assert not stream.ended
    # Resumed in the very tick the first source ended: no gap, no marker.
    cont = RtpPacket.parse(stream.next_packet(t + 0.04) or b"")
    # Then silence for 1 s (50 ticks) before the next prompt: timestamps jump, marker set.
    stream.next_packet(t + 0.06)
    stream.set_source(SamplesSource(_tone(40)))
    later = RtpPacket.parse(stream.next_packet(t + 1.08) or b"")
    pkts = [*first, cont, later]
    assert len({p.ssrc for p in pkts}) == 1 and stream.ssrc == pkts[0].ssrc
    assert [(p.sequence_number - pkts[0].sequence_number) & 0xFFFF for p in pkts] == [0, 1, 2, 4]
    assert [(p.timestamp - pkts[0].timestamp) & 0xFFFFFFFF for p in pkts] == [0, 160, 320, 8640]
    assert [p.marker for p in pkts] == [True, False, False, True]


# ---------------------------------------------------------------------------------------------
# The engine clock: subscribers, completion callbacks, immediate stop


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) until ``condition()`` holds: a loaded machine may run ticks late."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_subscribers_tick_every_20ms_on_ideal_times_and_the_clock_stops() -> None:
    engine = PlaybackEngine()
    times: list[float] = []
    engine.subscribe("leg", times.append)
    assert engine.subscribers == 1
    await _until(lambda: len(times) >= 25)
    assert engine.unsubscribe("leg") and not engine.unsubscribe("leg")
    count = len(times)
    await asyncio.sleep(0.1)
    assert len(times) == count and engine._timer is None
    # Absolute pacing: every tick is given its ideal time on the 20 ms grid, however late the
    # callback ran; only a loop blocked for over 10 ticks skips grid points.
    steps = np.diff(times) / 0.02
    assert np.allclose(steps, np.round(steps), atol=1e-6) and steps.min() > 0.5
    assert (np.round(steps) == 1).sum() >= 20 - engine.late_ticks
    assert abs(times[-1] - engine.now()) < 1.0


@pytest.mark.asyncio
async def test_on_done_fires_when_a_finite_stream_ends_not_when_stopped() -> None:
    engine = PlaybackEngine()
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    sent: list[bytes] = []
    engine.play("a", RtpStream(_Frames(4), PCMU), lambda d: sent.append(d) or True,
                on_done=lambda: ended.set_result(len(sent)))
    stopped: list[int] = []
    engine.play("b", RtpStream(_Frames(100_000), PCMU), lambda _d: True,
                on_done=lambda: stopped.append(1))
    assert await asyncio.wait_for(ended, 5.0) == 4
    assert engine.stop("b") and not engine.stop("b")
    await asyncio.sleep(0.1)
    assert stopped == [] and len(engine) == 0 and engine._timer is None


@pytest.mark.asyncio
async def test_prompt_chained_from_on_done_continues_in_the_same_tick() -> None:
    engine = PlaybackEngine()
    loop = asyncio.get_running_loop()
    ticks: list[float] = []
    pkts: list[RtpPacket] = []
    done = loop.create_future()
    stream = RtpStream(SamplesSource(_tone(60)), PCMU)

    def send(data: bytes) -> bool:
        pkts.append(RtpPacket.parse(data))
        return True

    def next_prompt() -> None:
        stream.set_source(SamplesSource(_tone(60, 500)))
        engine.play("leg", stream, send, on_done=lambda: done.set_result(len(ticks)))

    engine.subscribe("clock", lambda now: ticks.append(now))
    engine.play("leg", stream, send, on_done=next_prompt)
    ticks_at_end = await asyncio.wait_for(done, 5.0)
    engine.close()
    assert len(pkts) == 6
    assert [(p.sequence_number - pkts[0].sequence_number) & 0xFFFF for p in pkts] == list(range(6))
    if engine.late_ticks == 0:
        # Six packets in six ticks: the second prompt went out in the tick the first ended.
        assert ticks_at_end == 7  # the seventh tick found the second prompt ended
        assert [(p.timestamp - pkts[0].timestamp) & 0xFFFFFFFF for p in pkts] == [
            160 * i for i in range(6)]
        assert [p.marker for p in pkts] == [True] + [False] * 5


@pytest.mark.asyncio
async def test_a_subscriber_stopping_a_stream_stops_it_before_this_ticks_packet() -> None:
    engine = PlaybackEngine()
    sent: list[int] = []
    ticks: list[int] = []

    def subscriber(_now: float) -> None:
        ticks.append(len(sent))
        if len(ticks) == 5:
            engine.stop("prompt")  # a digit arrived: barge-in

    engine.play("prompt", RtpStream(_Frames(100_000), PCMU), lambda _d: sent.append(1) or True)
    engine.subscribe("leg", subscriber)
    await _until(lambda: len(ticks) >= 10)
    engine.close()
    # Ticks 1-4 each sent a packet; from tick 5 on, none.
    assert ticks[4] == 4 and len(sent) == 4


@pytest.mark.asyncio
async def test_a_failing_subscriber_or_stream_is_removed_and_the_clock_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = PlaybackEngine()
    good: list[float] = []

    def bad(_now: float) -> None:
        raise RuntimeError("boom")

    def bad_send(_data: bytes) -> bool:
        raise OSError("socket gone")

    engine.subscribe("bad", bad)
    engine.subscribe("good", good.append)
    engine.play("s", RtpStream(_Frames(100_000), PCMU), bad_send)
    await _until(lambda: len(good) >= 8)
    engine.close()
    assert engine.errors == 2 and engine.subscribers == 0 and len(engine) == 0
    assert sum("raised and was removed" in r.message for r in caplog.records) == 2


def test_frame_queue_plays_what_is_pushed_bounded_and_silence_in_between() -> None:
    queue = FrameQueue(depth=3)
    tone = _tone(20)
    silent = queue.next_frame()
    assert silent is not None and not silent.any()
    for _ in range(5):
        queue.push(tone)
    assert len(queue) == 3 and queue.dropped == 2
    assert all(np.array_equal(queue.next_frame(), tone) for _ in range(3))
    with pytest.raises(ValueError, match="160 int16"):
        queue.push(np.zeros(80, dtype=np.int16))
    queue.push(tone)
    queue.close()
    assert np.array_equal(queue.next_frame(), tone) and queue.next_frame() is None
    with pytest.raises(ValueError, match="depth"):
        FrameQueue(0)
