"""The PBX's own RTP streams and the one 20 ms clock that drives them."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from media.g711 import PCMU, ulaw_decode
from media.playback import PlaybackEngine
from media.player import RtpStream
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
