"""LocalLeg on a virtual clock: playout through the jitter buffer, concealment, stream restarts,
digits from RFC 4733, INFO and in-band tones, and garbage that must not crash it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.digits import DigitEvent, DtmfMode
from media.dtmf import Rfc4733Sender
from media.endpoint import Latch, LocalLeg
from media.g711 import PCMA, PCMU, ulaw_decode, ulaw_encode
from tests.media.dtmf_signals import Pcm, dual_tone, frames, rtp

TE = 101
PTIME = 0.02


def _speechlike(count: int, seed: int = 1) -> list[Pcm]:
    """``count`` distinct 20 ms frames (each a different noise burst), as µ-law decodes them."""
    rng = np.random.default_rng(seed)
    return [ulaw_decode(ulaw_encode(rng.normal(0, 3000, 160).astype(np.int16)))
            for _ in range(count)]


def _audio_packets(chunks: list[Pcm], seq0: int = 100, ts0: int = 5000,
                   ssrc: int = 0x1234) -> list[bytes]:
    return [rtp(seq0 + i, ts0 + i * len(c), ulaw_encode(c), ssrc=ssrc)
            for i, c in enumerate(chunks)]


def _run(leg: LocalLeg, arrivals: list[list[bytes]], extra_ticks: int = 5,
         t0: float = 0.0) -> list[Pcm | None]:
    """Tick by tick: deliver that tick's packets, then tick. Returns what each tick played."""
    out: list[Pcm | None] = []
    for i, batch in enumerate(arrivals + [[] for _ in range(extra_ticks)]):
        now = t0 + i * PTIME
        for pkt in batch:
            leg.on_rtp(pkt, now)
        out.append(leg.tick(now))
    return out


def _played(out: list[Pcm | None]) -> list[Pcm]:
    return [f for f in out if f is not None]


def test_in_order_audio_plays_out_unchanged_after_the_prefetch() -> None:
    leg = LocalLeg(PCMU)
    chunks = _speechlike(20)
    out = _run(leg, [[p] for p in _audio_packets(chunks)], extra_ticks=0)
    assert out[0] is None  # prefetch: playout waits for a second packet
    played = _played(out)
    assert len(played) == 19
    for got, want in zip(played, chunks, strict=False):
        assert got.dtype == np.int16 and len(got) == 160
        np.testing.assert_array_equal(got, want)
    assert leg.concealed == 0 and leg.packets == 20


def test_reordered_packets_are_played_in_sequence_order() -> None:
    leg = LocalLeg(PCMU)
    chunks = _speechlike(12)
    pkts = _audio_packets(chunks)
    order = [0, 2, 1, 3, 5, 4, 6, 7, 9, 8, 10, 11]
    out = _run(leg, [[pkts[i]] for i in order])
    played = _played(out)
    for got, want in zip(played[:12], chunks, strict=True):
        np.testing.assert_array_equal(got, want)
    assert leg.jitter.missing == 0 and leg.jitter.late == 0


def test_a_lost_packet_is_concealed_from_the_previous_frame() -> None:
    leg = LocalLeg(PCMU)
    chunks = _speechlike(10)
    pkts = _audio_packets(chunks)
    del pkts[4]
    arrivals = [[p] for p in pkts[:4]] + [[]] + [[p] for p in pkts[4:]]
    played = _played(_run(leg, arrivals, extra_ticks=1))
    assert len(played) == 10 and leg.concealed == 1 and leg.jitter.missing == 1
    for i in (0, 1, 2, 3, 5, 6, 7, 8, 9):
        np.testing.assert_array_equal(played[i], chunks[i])
    # The gap repeats frame 3, fading: same shape, never louder, not silence.
    gap = played[4].astype(np.float64)
    prev = chunks[3].astype(np.float64)
    assert np.all(np.abs(gap) <= np.abs(prev) + 1)
    assert np.corrcoef(gap, prev)[0, 1] > 0.95
    assert np.abs(gap[:20]).mean() > 0.8 * np.abs(prev[:20]).mean()


def test_a_phone_that_stops_sending_fades_out_then_gives_no_audio() -> None:
    leg = LocalLeg(PCMU)
    out = _run(leg, [[p] for p in _audio_packets(_speechlike(5))], extra_ticks=20)
    played = out[1:]
    # Five frames, then ten ticks of concealment, then nothing.
    assert all(f is not None for f in played[:15]) and set(played[15:]) == {None}
    fading = [float(np.abs(f).mean()) for f in played[4:9] if f is not None]
    assert fading == sorted(fading, reverse=True) and fading[3] > 0
    faded = played[9]
    assert faded is not None and not faded.any()  # 80 ms of fade, then silence


def test_nothing_received_means_no_audio_and_no_digits() -> None:
    leg = LocalLeg(PCMU, TE)
    assert all(leg.tick(i * PTIME) is None for i in range(50))
    assert leg.digits() == []


def test_30ms_packets_come_out_as_20ms_frames_without_a_seam() -> None:
    leg = LocalLeg(PCMA)
    rng = np.random.default_rng(4)
    audio = PCMA.decode(PCMA.encode(rng.normal(0, 3000, 240 * 20).astype(np.int16)))
    pkts = [rtp(7 + i, i * 240, PCMA.encode(audio[i * 240:(i + 1) * 240]), pt=8)
            for i in range(20)]
    # 30 ms packets: two arrive every three 20 ms ticks.
    arrivals: list[list[bytes]] = [[] for _ in range(30)]
    for i, p in enumerate(pkts):
        arrivals[int(i * 1.5)].append(p)
    played = _played(_run(leg, arrivals, extra_ticks=3))
    joined = np.concatenate(played)
    start = int(np.flatnonzero(joined == audio[0])[0])
    np.testing.assert_array_equal(joined[start:start + len(audio) - 480], audio[:len(audio) - 480])


def test_new_ssrc_restarts_playout_at_once_and_old_stragglers_are_dropped() -> None:
    leg = LocalLeg(PCMU)
    old = _speechlike(6, seed=1)
    new = _speechlike(6, seed=2)
    a = _audio_packets(old, seq0=1000, ssrc=1)
    b = _audio_packets(new, seq0=50000, ts0=9, ssrc=2)
    arrivals = [[p] for p in a] + [[b[0]], [b[1], a[5]], [b[2]], [b[3]], [b[4]], [b[5]]]
    played = _played(_run(leg, arrivals, extra_ticks=3))
    assert leg.ssrc_changes == 1 and leg.stale == 1
    # The new stream plays from its first packet, in full.
    for want in new:
        assert any(np.array_equal(got, want) for got in played)
    index = next(i for i, got in enumerate(played) if np.array_equal(got, new[0]))
    for k, want in enumerate(new):
        np.testing.assert_array_equal(played[index + k], want)


def test_sequence_jump_in_the_same_stream_is_followed() -> None:
    leg = LocalLeg(PCMU)
    chunks = _speechlike(12)
    first = _audio_packets(chunks[:6], seq0=10)
    second = _audio_packets(chunks[6:], seq0=30000, ts0=10**6)
    played = _played(_run(leg, [[p] for p in first + second], extra_ticks=4))
    assert any(np.array_equal(got, chunks[-1]) for got in played)
    assert leg.jitter.resyncs == 1


# ---------------------------------------------------------------------------------------------
# Digits


def _event_packets(digit: str, seq0: int, ts: int, *, ssrc: int = 0x1234,
                   ends: int = 3, duration_ms: int = 120) -> list[tuple[float, bytes]]:
    """(offset seconds, packet) for one key press, as a phone sends it (RFC 4733 2.5.1)."""
    planned = Rfc4733Sender().packets(digit, duration_ms)
    updates = [p for p in planned if not p.payload[1] & 0x80]
    end = [p for p in planned if p.payload[1] & 0x80][:ends]
    return [(p.offset_ms / 1000, rtp(seq0 + i, ts, p.payload, pt=TE, ssrc=ssrc, marker=p.marker))
            for i, p in enumerate(updates + end)]


def _tick_for(leg: LocalLeg, seconds: float, t0: float) -> float:
    t = t0
    while t < t0 + seconds:
        leg.tick(t)
        t += PTIME
    return t


def test_rfc4733_key_press_is_one_digit_event() -> None:
    leg = LocalLeg(PCMU, TE, DtmfMode.AUTO)
    for offset, pkt in _event_packets("5", 1, 8000):
        leg.on_rtp(pkt, 1.0 + offset)
    assert leg.digits() == [DigitEvent("5", "rfc4733", 1.12, 120)]
    _tick_for(leg, 1.0, 1.2)
    assert leg.digits() == []


def test_rfc4733_event_whose_end_packets_are_lost_is_reported_by_the_tick() -> None:
    leg = LocalLeg(PCMU, TE)
    for offset, pkt in _event_packets("#", 1, 8000, ends=0):
        leg.on_rtp(pkt, 1.0 + offset)
    assert leg.digits() == []
    _tick_for(leg, 1.0, 1.1)
    events = leg.digits()
    assert [(e.digit, e.source) for e in events] == [("#", "rfc4733")]
    assert 1.5 <= events[0].at <= 1.7


def test_events_with_their_own_ssrc_and_a_restarted_event_stream() -> None:
    leg = LocalLeg(PCMU, TE)
    for offset, pkt in _event_packets("1", 1, 8000, ssrc=77, ends=0):
        leg.on_rtp(pkt, 1.0 + offset)
    # The phone restarts (new SSRC) mid-press: the cut press still counts, then the next one.
    for offset, pkt in _event_packets("2", 500, 123, ssrc=78):
        leg.on_rtp(pkt, 1.2 + offset)
    assert [e.digit for e in leg.digits()] == ["1", "2"]


def test_info_digit_is_an_event() -> None:
    leg = LocalLeg(PCMU, None, "auto")
    event = leg.on_info("application/dtmf-relay", b"Signal=*\r\nDuration=200\r\n", 3.0)
    assert event == DigitEvent("*", "info", 3.0, 200)
    assert leg.digits() == [event]


def _play_audio(leg: LocalLeg, pcm: Pcm, t0: float = 0.0, seq0: int = 0,
                extra: dict[int, list[bytes]] | None = None) -> list[DigitEvent]:
    """Send ``pcm`` as 20 ms µ-law packets, one per tick, plus ``extra`` packets at some ticks."""
    events: list[DigitEvent] = []
    for i, chunk in enumerate(frames(pcm)):
        now = t0 + i * PTIME
        leg.on_rtp(rtp(seq0 + i, i * 160, ulaw_encode(chunk)), now)
        for pkt in (extra or {}).get(i, []):
            leg.on_rtp(pkt, now)
        leg.tick(now)
        events += leg.digits()
    return events


def _silence(ms: int) -> Pcm:
    return np.zeros(ms * 8, dtype=np.int16)


def test_inband_tone_is_an_event_in_auto_mode_without_telephone_event() -> None:
    leg = LocalLeg(PCMU, None, "auto")
    audio = np.concatenate([_silence(200), dual_tone("8", 100), _silence(300)])
    events = _play_audio(leg, audio)
    assert [(e.digit, e.source) for e in events] == [("8", "inband")]
    assert events[0].duration_ms is not None and 85 <= events[0].duration_ms <= 115


def test_tone_leaking_next_to_rfc4733_is_one_event() -> None:
    # The phone sends the press as RFC 4733 and leaves the tone in the audio.
    leg = LocalLeg(PCMU, TE, "auto")
    audio = np.concatenate([_silence(200), dual_tone("3", 120), _silence(300)])
    extra: dict[int, list[bytes]] = {}
    for offset, pkt in _event_packets("3", 900, 1600):
        extra.setdefault(10 + round(offset / PTIME), []).append(pkt)
    events = _play_audio(leg, audio, extra=extra)
    assert [(e.digit, e.source) for e in events] == [("3", "rfc4733")]


def test_inband_mode_hears_the_tone_and_ignores_rfc4733_and_info() -> None:
    leg = LocalLeg(PCMU, TE, "inband")
    audio = np.concatenate([_silence(200), dual_tone("3", 120), _silence(300)])
    extra: dict[int, list[bytes]] = {}
    for offset, pkt in _event_packets("3", 900, 1600):
        extra.setdefault(10 + round(offset / PTIME), []).append(pkt)
    assert leg.on_info("application/dtmf", b"3", 0.25) is None
    events = _play_audio(leg, audio, extra=extra)
    assert [(e.digit, e.source) for e in events] == [("3", "inband")]


def test_rfc4733_and_info_for_the_same_press_is_one_event() -> None:
    leg = LocalLeg(PCMU, TE, "auto")
    leg.on_info("application/dtmf-relay", b"Signal=4\r\nDuration=120\r\n", 0.99)
    for offset, pkt in _event_packets("4", 1, 8000):
        leg.on_rtp(pkt, 1.0 + offset)
    assert [(e.digit, e.source) for e in leg.digits()] == [("4", "info")]
    assert leg.collector.duplicates == 1


def test_tone_at_the_very_end_of_the_stream_is_still_reported() -> None:
    leg = LocalLeg(PCMU, None, "inband")
    events = _play_audio(leg, np.concatenate([_silence(100), dual_tone("D", 100)]))
    assert events == []
    _tick_for(leg, 0.5, 10.0)
    assert [e.digit for e in leg.digits()] == ["D"]


def test_renegotiated_telephone_event_switches_auto_mode() -> None:
    leg = LocalLeg(PCMU, None, "auto")
    leg.set_telephone_event(TE)
    assert leg.telephone_event_pt == TE and leg.mode is DtmfMode.AUTO
    for offset, pkt in _event_packets("9", 1, 8000):
        leg.on_rtp(pkt, 1.0 + offset)
    leg.set_telephone_event(None)
    assert leg.telephone_event_pt is None
    for offset, pkt in _event_packets("6", 10, 9000):
        leg.on_rtp(pkt, 2.0 + offset)  # PT 101 is no longer negotiated: ignored
    assert [e.digit for e in leg.digits()] == ["9"]
    assert leg.ignored == 5


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_constructor_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown codec"):
        LocalLeg(18)
    with pytest.raises(ValueError, match="is the audio codec's"):
        LocalLeg(PCMU, 0)
    with pytest.raises(ValueError, match="not in 0-127"):
        LocalLeg(PCMU, 200)
    with pytest.raises(ValueError, match="unknown DTMF mode"):
        LocalLeg(PCMU, TE, "loud")
    assert LocalLeg("pcma").codec is PCMA and LocalLeg(0).codec is PCMU


@pytest.mark.parametrize(
    ("packet", "counter"),
    [
        (b"", "malformed"),
        (b"\x80\x00\x00", "malformed"),
        (b"\x40" + bytes(20), "malformed"),  # version 1
        (b"\x8f\x00" + bytes(14), "malformed"),  # 15 CSRC announced, none there
        (b"\x90\x00" + bytes(10) + b"\x00\x00\xff\xff", "malformed"),  # extension too long
        (b"\xa0\x00" + bytes(10) + b"\x00" * 3 + b"\x00", "malformed"),  # zero padding count
        (b"\xa0\x00" + bytes(10) + b"\x00" * 3 + b"\x40", "malformed"),  # padding > payload
        (rtp(1, 0, b"\x00" * 160, pt=8), "ignored"),  # PCMA when PCMU was negotiated
        (rtp(1, 0, b"\x00", pt=13), "ignored"),  # comfort noise
        (b"\x81\xc9" + bytes(30), "ignored"),  # RTCP multiplexed on the RTP port
    ],
)
def test_garbage_is_counted_and_ignored(packet: bytes, counter: str) -> None:
    leg = LocalLeg(PCMU, TE)
    leg.on_rtp(packet, 1.0)
    assert getattr(leg, counter) == 1
    assert leg.packets == 0
    assert leg.tick(1.0) is None


def test_short_telephone_event_payloads_do_not_make_digits() -> None:
    leg = LocalLeg(PCMU, TE)
    leg.on_rtp(rtp(1, 0, b"\x05\x8a", pt=TE), 1.0)
    _tick_for(leg, 1.0, 1.0)
    assert leg.digits() == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=200), max_size=20), st.sampled_from([0, 101]))
def test_any_datagrams_never_raise(datagrams: list[bytes], pt: int) -> None:
    leg = LocalLeg(PCMU, TE, "auto")
    for i, data in enumerate(datagrams):
        if len(data) >= 2:
            data = bytes([0x80 | (data[0] & 0x3F), (data[1] & 0x80) | pt]) + data[2:]
        leg.on_rtp(data, i * PTIME)
        frame = leg.tick(i * PTIME)
        assert frame is None or (frame.dtype == np.int16 and frame.shape == (160,))
    leg.digits()


def test_latch_takes_the_first_source_and_ignores_others() -> None:
    latch = Latch()
    assert not latch.accept(("10.0.0.1", 4000))
    assert latch.dropped_no_remote == 1
    latch.set_remote(("192.168.1.2", 4000))
    assert latch.destination() == ("192.168.1.2", 4000)
    assert latch.destination(rtcp=True) == ("192.168.1.2", 4001)
    assert latch.accept(("203.0.113.5", 31000))  # behind a NAT: latched
    assert latch.destination() == ("203.0.113.5", 31000)
    assert not latch.accept(("203.0.113.9", 31000)) and latch.dropped_foreign == 1
    assert latch.accept(("203.0.113.5", 31001), rtcp=True)
    latch.set_remote(("192.168.1.2", 4000))  # same address again: still latched
    assert latch.latched == ("203.0.113.5", 31000)
    latch.set_remote(("192.168.1.3", 4000))  # a new phone: latch again
    assert latch.latched is None and latch.accept(("198.51.100.1", 5000))
    with pytest.raises(ValueError, match="bad remote address"):
        latch.set_remote(("", 0))
    with pytest.raises(ValueError, match="no room for RTCP"):
        latch.set_remote(("10.0.0.1", 65535))
