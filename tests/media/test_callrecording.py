"""Placing a call's two RTP streams on one recording timeline."""

from __future__ import annotations

import numpy as np

from media.callrecording import RecordingMixer
from media.g711 import ulaw_encode
from media.rtp import RtpPacket


def _pkt(seq: int, ts: int, value: int, pt: int = 0) -> bytes:
    pcm = np.full(160, value, dtype=np.int16)
    return bytes(RtpPacket(payload_type=pt, sequence_number=seq & 0xFFFF,
                           timestamp=ts & 0xFFFFFFFF, ssrc=7, payload=ulaw_encode(pcm)))


def test_packets_are_placed_by_timestamp_despite_reordering_and_loss() -> None:
    mix = RecordingMixer(start=100.0, margin=0.0)
    ts0 = 2**32 - 320  # the timestamp wraps during the call
    # caller: frames 0, 2, 1 (reordered), 3 lost, 4
    for n, arrival in ((0, 100.0), (2, 100.04), (1, 100.05), (4, 100.08)):
        mix.feed(0, _pkt(n, ts0 + 160 * n, 1000 * (n + 1)), arrival)
    left, right = mix.take(100.1)
    assert len(left) == len(right) == 800
    frames = [int(np.median(left[i * 160 : (i + 1) * 160])) for i in range(5)]
    assert frames[0] > 900 and frames[1] > 1900 and frames[2] > 2900
    assert frames[3] == 0  # the lost frame is silence, the timeline does not shift
    assert frames[4] > 4900
    assert not right.any()


def test_each_leg_starts_where_its_first_packet_arrived() -> None:
    mix = RecordingMixer(start=0.0, margin=0.0)
    mix.feed(0, _pkt(1, 5000, 3000), 0.0)
    mix.feed(1, _pkt(9, 123456, 3000), 0.5)  # the callee's audio starts half a second later
    left, right = mix.take_all()
    assert np.flatnonzero(left)[0] == 0
    assert np.flatnonzero(right)[0] == 4000


def test_a_packet_straddling_a_take_continues_in_the_next() -> None:
    mix = RecordingMixer(start=0.0, margin=0.0)
    mix.feed(0, _pkt(1, 0, 2000), 0.0)
    first, _ = mix.take(0.01)  # 80 samples: half the packet
    rest, _ = mix.take(0.02)
    assert len(first) == 80 and len(rest) == 80
    assert first.min() > 1900 and rest.min() > 1900


def test_non_audio_payloads_are_ignored() -> None:
    mix = RecordingMixer(start=0.0, margin=0.0)
    mix.feed(0, _pkt(1, 0, 2000, pt=101), 0.0)  # RFC 4733 telephone-event
    mix.feed(0, b"\x80\x00", 0.0)  # truncated
    left, _ = mix.take_all()
    assert len(left) == 0
