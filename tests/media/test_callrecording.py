"""Placing a call's two RTP streams on one recording timeline."""

from __future__ import annotations

import numpy as np

from media.callrecording import RATE, RecordingMixer
from media.g711 import alaw_encode, ulaw_encode
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


# -- the relay's way in: first packet with its time, then a plain list -------------------------


def _pkt8(seq: int, ts: int, value: int, ssrc: int = 7) -> bytes:
    return bytes(RtpPacket(payload_type=8, sequence_number=seq & 0xFFFF,
                           timestamp=ts & 0xFFFFFFFF, ssrc=ssrc,
                           payload=alaw_encode(np.full(160, value, dtype=np.int16))))


def _frames(channel: np.ndarray) -> list[int]:
    return [int(np.median(channel[i : i + 160])) for i in range(0, len(channel) - 159, 160)]


def test_capture_hands_back_a_list_that_the_relay_appends_to() -> None:
    mix = RecordingMixer(start=10.0, margin=0.0)
    assert mix.capture(0, _pkt(1, 0, 0, pt=101), 10.0) is None  # not audio: ask again
    batch = mix.capture(0, _pkt(1, 1000, 1000), 10.1)
    assert batch is not None and len(batch) == 1
    for n in range(2, 6):
        batch.append(_pkt(n, 1000 + 160 * (n - 1), 1000 * n))
    left, right = mix.take(10.2)
    assert len(left) == 1600
    assert _frames(left)[:5] == [0] * 5  # the 100 ms before the leg's first packet
    assert [round(f / 1000) for f in _frames(left)[5:]] == [1, 2, 3, 4, 5]
    assert not right.any()
    assert batch == []  # emptied in place: the relay keeps appending to the same list


def test_batched_placement_equals_packet_by_packet_placement() -> None:
    rng = np.random.default_rng(5)
    order = rng.permutation(60)
    order = order[order % 7 != 3]  # loss
    packets = [_pkt(int(n), 5000 + 160 * int(n), 100 * int(n)) for n in order]
    # Odd packets take the per-packet path: a CSRC, padding, a header extension.
    odd = RtpPacket(payload_type=0, sequence_number=99, timestamp=5000 + 160 * 61, ssrc=7,
                    payload=ulaw_encode(np.full(160, 4000, dtype=np.int16)), csrc=[1, 2])
    packets.append(bytes(odd))
    by_packet = RecordingMixer(start=0.0, margin=0.0)
    batched = RecordingMixer(start=0.0, margin=0.0)
    first = batched.capture(1, packets[0], 0.3)
    assert first is not None
    by_packet.feed(1, packets[0], 0.3)
    for packet in packets[1:]:
        by_packet.feed(1, packet, 0.3)
        first.append(packet)
    a = by_packet.take_all()
    b = batched.take_all()
    assert np.array_equal(a[1], b[1]) and len(a[1]) > 0
    csrc_at = 2400 + (61 - int(order[0])) * 160
    assert b[1][csrc_at : csrc_at + 160].min() > 3900  # the CSRC packet is placed too


def test_alaw_and_ulaw_legs_are_both_decoded() -> None:
    mix = RecordingMixer(start=0.0, margin=0.0)
    mix.feed(0, _pkt(1, 0, 3000), 0.0)
    mix.feed(1, _pkt8(1, 0, -3000), 0.0)
    left, right = mix.take_all()
    assert 2900 < int(np.median(left)) < 3100
    assert -3100 < int(np.median(right)) < -2900


def test_pause_keeps_the_timeline_and_silences_both_channels() -> None:
    mix = RecordingMixer(start=0.0, margin=0.0)
    batches = [mix.capture(leg, _pkt(0, 0, 2000), 0.0) for leg in (0, 1)]
    assert not mix.paused
    for n in range(1, 100):  # two seconds of audio on both legs
        if n == 75:
            assert mix.resume(1.5) and not mix.paused
            assert not mix.resume(1.6)
        for batch in batches:
            assert batch is not None
            batch.append(_pkt(n, 160 * n, 9000 if 25 <= n < 75 else 2000))
        if n == 24:
            assert mix.pause(0.5) and mix.paused
            assert not mix.pause(0.6)  # already paused
        if n == 50:
            left, right = mix.take(0.8)  # a take while paused
    rest = mix.take_all()
    full = np.concatenate([left, rest[0]]), np.concatenate([right, rest[1]])
    assert len(full[0]) == len(full[1]) == 100 * 160  # the file is as long as the call
    for channel in full:
        assert channel[:4000].min() > 1900
        assert not channel[4000:12000].any()  # nothing of the paused second
        assert channel[12000:].min() > 1900


def test_a_new_phone_on_a_leg_starts_a_new_stream_on_the_same_timeline() -> None:
    mix = RecordingMixer(start=0.0, margin=0.0)
    batch = mix.capture(1, _pkt(10, 777, 1000), 0.0)
    assert batch is not None
    for n in range(1, 25):
        batch.append(_pkt(10 + n, 777 + 160 * n, 1000))
    _, before = mix.take(0.4)
    # The call controller replaces the far phone: the relay restarts the leg, and the new
    # phone has its own SSRC, sequence numbers and timestamp base (and codec).
    mix.restart(1)
    fresh = mix.capture(1, _pkt8(40000, 3_000_000_000, -2000, ssrc=99), 1.0)
    assert fresh is not None
    for n in range(1, 25):
        fresh.append(_pkt8(40000 + n, 3_000_000_000 + 160 * n, -2000, ssrc=99))
    _, right = mix.take_all()
    whole = np.concatenate([before, right])
    assert len(whole) == 8000 + 25 * 160  # one timeline: the new phone from 1.0 s on
    assert whole[:4000].min() > 900
    assert not whole[4000:8000].any()  # the gap while the call was being transferred
    assert whole[8000:].max() < -1900


def test_a_new_ssrc_without_notice_goes_on_where_the_old_stream_stopped() -> None:
    mix = RecordingMixer(start=0.0, margin=0.0)
    batch = mix.capture(0, _pkt(1, 0, 1000), 0.0)
    assert batch is not None
    for n in range(1, 10):
        batch.append(_pkt(1 + n, 160 * n, 1000))
    for n in range(10):  # the phone restarted its stream: new SSRC, random timestamp base
        batch.append(_pkt(500 + n, 123_456_789 + 160 * n, 3000))
    left, _ = mix.take_all()
    assert len(left) == 20 * 160
    assert left[:1600].min() > 900 and left[1600:].min() > 2900


def test_a_wild_timestamp_does_not_grow_the_recording() -> None:
    mix = RecordingMixer(start=0.0, margin=0.0)
    batch = mix.capture(0, _pkt(1, 0, 1000), 0.0)
    assert batch is not None
    batch.append(_pkt(2, 2**31 - 1, 1000))  # as far ahead as a timestamp can be
    left, _ = mix.take(0.1)
    assert len(left) == 800
    left, _ = mix.take_all()
    assert len(left) <= 160  # placed where the stream stood, not 3 days later


def test_packets_later_than_the_margin_are_dropped() -> None:
    mix = RecordingMixer(start=0.0, margin=0.0)
    batch = mix.capture(0, _pkt(1, 0, 1000), 0.0)
    assert batch is not None
    batch.append(_pkt(2, 160, 1000))
    first, _ = mix.take(0.1)  # 800 samples written
    batch.append(_pkt(3, 320, 5000))  # its moment (40-60 ms) has already gone to the file
    batch.append(_pkt(7, 960, 5000))  # 120 ms: still to come
    rest, _ = mix.take(0.2)
    assert len(first) == len(rest) == 800
    assert not first[320:].any()
    assert not rest[:160].any()  # the late packet went nowhere, not into the next second
    assert rest[160:320].min() > 4900


def test_a_leg_back_from_silence_with_a_new_ssrc_is_not_dropped_as_late() -> None:
    mix = RecordingMixer(start=0.0, margin=0.2)
    batch = mix.capture(0, _pkt(1, 0, 1000), 0.0)
    assert batch is not None
    for n in range(1, 25):
        batch.append(_pkt(1 + n, 160 * n, 1000))
    taken = [mix.take(t)[0] for t in (1.0, 2.0, 3.0)]  # then on hold: nothing for 2.5 s
    for n in range(50):  # resumed with a new SSRC and timestamp base, same address
        batch.append(_pkt(900 + n, 7_777_777 + 160 * n, 3000))
    taken.append(mix.take(4.0)[0])
    taken.append(mix.take_all()[0])
    left = np.concatenate(taken)
    assert left[:4000].min() > 900
    assert (left > 2900).sum() == 50 * 160  # all of it, after the silence
    assert int(np.flatnonzero(left > 2900)[0]) >= 3 * RATE - 1600


def test_a_stream_that_resumes_without_a_timestamp_jump_is_not_lost() -> None:
    # A phone silent for a second (a short hold) that then goes on with contiguous timestamps:
    # its audio after the gap must land at its arrival time, not in the already written past.
    from media.callrecording import RecordingMixer

    def packet(seq: int) -> bytes:
        return (bytes([0x80, 0]) + seq.to_bytes(2, "big") + (seq * 160).to_bytes(4, "big")
                + (7).to_bytes(4, "big") + b"\x00" * 160)

    mixer = RecordingMixer(0.0)
    out, sink, seq, t, next_take = [], None, 0, 0.01, 1.0
    while t < 20:
        while next_take <= t:
            out.append(mixer.take(next_take)[0])
            next_take += 1
        if not 5 <= t < 6:
            p = packet(seq)
            if sink is None:
                sink = mixer.capture(0, p, t)
            else:
                sink.append(p)
            seq += 1
        t += 0.02
    out.append(mixer.take_all()[0])
    audio = np.concatenate(out)
    after = audio[7 * 8000: 19 * 8000]
    assert np.count_nonzero(after) / len(after) > 0.98
