"""DTMF: RFC 4733 events (with SIPp's captures), SIP INFO bodies, and in-band Goertzel detection."""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from media.dtmf import (
    DetectorSettings,
    DtmfDigit,
    InbandDetector,
    Rfc4733Receiver,
    Rfc4733Sender,
    TelephoneEvent,
    parse_info_body,
)
from media.g711 import ulaw_decode, ulaw_encode
from media.goertzel import HIGH_FREQS, KEYPAD, LOW_FREQS, GoertzelBank

KEYS = "0123456789*#ABCD"
RATE = 8000
SIPP_PCAPS = Path("/usr/share/sip-tester")

# ---------------------------------------------------------------------------------------------
# RFC 4733 payload, receiver and sender


def test_telephone_event_parse_and_bytes_round_trip() -> None:
    event = TelephoneEvent.parse(b"\x0b\x8a\x08\xc0")
    assert event == TelephoneEvent(event=11, end=True, volume=10, duration=2240)
    assert event.digit == "#"
    assert bytes(event) == b"\x0b\x8a\x08\xc0"
    # The reserved R bit is ignored on input and never sent.
    assert TelephoneEvent.parse(b"\x05\x4a\x01\x40") == TelephoneEvent(5, False, 10, 320)
    assert TelephoneEvent(16).digit is None
    assert [TelephoneEvent(i).digit for i in range(16)] == list(KEYS)


@pytest.mark.parametrize("payload", [b"", b"\x01", b"\x01\x02\x03"])
def test_telephone_event_rejects_short_payload(payload: bytes) -> None:
    with pytest.raises(ValueError, match="needs 4"):
        TelephoneEvent.parse(payload)


def test_telephone_event_rejects_out_of_range_fields() -> None:
    with pytest.raises(ValueError, match="volume"):
        TelephoneEvent(1, volume=64)
    with pytest.raises(ValueError, match="duration"):
        TelephoneEvent(1, duration=70000)
    with pytest.raises(ValueError, match="code"):
        TelephoneEvent(256)


def _pcap_rtp(path: Path) -> list[tuple[float, bytes]]:
    """(capture time, RTP packet) for each UDP datagram in a classic little/big-endian pcap."""
    data = path.read_bytes()
    magic = data[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">"}[magic]
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    assert linktype == 1, "Ethernet captures only"
    packets: list[tuple[float, bytes]] = []
    offset = 24
    while offset + 16 <= len(data):
        sec, usec, incl, _orig = struct.unpack(endian + "IIII", data[offset : offset + 16])
        frame = data[offset + 16 : offset + 16 + incl]
        offset += 16 + incl
        ethertype = struct.unpack("!H", frame[12:14])[0]
        ip = frame[14:]
        if ethertype != 0x0800 or ip[9] != 17:  # IPv4 / UDP only
            continue
        udp = ip[(ip[0] & 0x0F) * 4 :]
        packets.append((sec + usec / 1e6, udp[8:]))
    return packets


def _telephone_events(path: Path, payload_type: int = 101) -> list[tuple[float, int, bool, bytes]]:
    out = []
    for captured, rtp in _pcap_rtp(path):
        if rtp[1] & 0x7F != payload_type:
            continue
        timestamp = struct.unpack("!I", rtp[4:8])[0]
        out.append((captured, timestamp, bool(rtp[1] & 0x80), rtp[12:]))
    return out


@pytest.mark.parametrize("digit", [str(n) for n in range(10)] + ["star", "pound"])
def test_sipp_capture_gives_exactly_its_digit(digit: str) -> None:
    path = SIPP_PCAPS / f"dtmf_2833_{digit}.pcap"
    if not path.exists():
        pytest.fail("SIPp's pcaps are missing: apt-get install sip-tester")
    packets = _telephone_events(path)
    # SIPp's captures: payload type 101, one event of 280 ms, its end packet sent three times.
    assert len(packets) == 10
    receiver = Rfc4733Receiver()
    start = packets[0][0]
    got: list[DtmfDigit] = []
    for captured, timestamp, marker, payload in packets:
        got += receiver.feed(timestamp, marker, payload, captured - start)
    got += receiver.poll(packets[-1][0] - start + 10.0)
    expected = {"star": "*", "pound": "#"}.get(digit, digit)
    assert got == [DtmfDigit(expected, 280, "rfc4733")]
    assert receiver.get_timer() is None


def _feed_all(
    receiver: Rfc4733Receiver, packets: list[tuple[int, bool, bytes]], now: float = 0.0
) -> list[DtmfDigit]:
    out: list[DtmfDigit] = []
    for i, (timestamp, marker, payload) in enumerate(packets):
        out += receiver.feed(timestamp, marker, payload, now + i * 0.02)
    return out


def _event_packets(
    digit: str, timestamp: int, duration_ms: int = 100, *, ends: int = 3
) -> list[tuple[int, bool, bytes]]:
    planned = Rfc4733Sender().packets(digit, duration_ms)
    updates = [p for p in planned if not TelephoneEvent.parse(p.payload).end]
    end_packets = [p for p in planned if TelephoneEvent.parse(p.payload).end][:ends]
    return [(timestamp, p.marker, p.payload) for p in updates + end_packets]


def test_redundant_ends_and_duplicated_starts_give_one_digit() -> None:
    packets = _event_packets("7", 1000, 200)
    start = packets[0]
    noisy = [start, start, *packets[1:3], start, *packets[3:], packets[-1], packets[-1]]
    assert _feed_all(Rfc4733Receiver(), noisy) == [DtmfDigit("7", 200, "rfc4733")]


def test_late_copies_of_a_finished_event_are_ignored() -> None:
    first = _event_packets("1", 1000)
    second = _event_packets("2", 5000)
    receiver = Rfc4733Receiver()
    got = _feed_all(receiver, first + second[:2] + first[-1:] + first[:1] + second[2:])
    assert [d.digit for d in got] == ["1", "2"]


def test_event_with_lost_ends_is_flushed_by_the_next_event() -> None:
    lost_end = _event_packets("4", 1000, 200, ends=0)
    receiver = Rfc4733Receiver()
    assert _feed_all(receiver, lost_end) == []
    got = _feed_all(receiver, _event_packets("5", 3000), now=1.0)
    assert got == [DtmfDigit("4", 170, "rfc4733"), DtmfDigit("5", 100, "rfc4733")]


def test_event_with_lost_ends_is_flushed_by_poll_after_timeout() -> None:
    receiver = Rfc4733Receiver(timeout=0.5)
    packets = _event_packets("9", 1000, 200, ends=0)
    assert _feed_all(receiver, packets, now=10.0) == []
    last_seen = 10.0 + (len(packets) - 1) * 0.02
    assert receiver.get_timer() == pytest.approx(last_seen + 0.5)
    assert receiver.poll(last_seen + 0.4) == []
    assert receiver.poll(last_seen + 0.5) == [DtmfDigit("9", 170, "rfc4733")]
    assert receiver.poll(last_seen + 5.0) == []
    assert receiver.get_timer() is None
    # A straggler of the flushed event does not bring it back.
    assert receiver.feed(1000, False, packets[-1][2], last_seen + 6.0) == []


def test_flush_reports_the_open_event_and_forgets_the_stream() -> None:
    receiver = Rfc4733Receiver()
    packets = _event_packets("7", 1000, 200, ends=0)
    assert _feed_all(receiver, packets) == []
    assert receiver.flush() == [DtmfDigit("7", 170, "rfc4733")]
    assert receiver.get_timer() is None and receiver.flush() == []
    # A restarted stream may reuse the timestamp: it is a new press, not a late copy.
    assert [d.digit for d in _feed_all(receiver, _event_packets("7", 1000))] == ["7"]


def test_same_digit_twice_is_two_events() -> None:
    packets = _event_packets("0", 1000) + _event_packets("0", 2600)
    assert [d.digit for d in _feed_all(Rfc4733Receiver(), packets)] == ["0", "0"]


def test_end_only_event_and_malformed_packets() -> None:
    receiver = Rfc4733Receiver()
    assert receiver.feed(1, False, b"\x01\x02", 0.0) == []
    assert receiver.malformed == 1
    end = bytes(TelephoneEvent(3, True, 10, 800))
    assert receiver.feed(500, False, end, 0.1) == [DtmfDigit("3", 100, "rfc4733")]
    assert receiver.feed(500, False, end, 0.12) == []


def test_non_dtmf_events_are_not_digits() -> None:
    receiver = Rfc4733Receiver()
    flash = bytes(TelephoneEvent(16, True, 10, 800))
    assert receiver.feed(100, True, flash, 0.0) == []


def test_long_event_segments_are_one_digit() -> None:
    # RFC 4733 2.5.2.3: a 10 s press is sent as a full 0xFFFF segment, then a new timestamp.
    receiver = Rfc4733Receiver()
    got = receiver.feed(1000, True, bytes(TelephoneEvent(8, False, 10, 400)), 0.0)
    got += receiver.feed(1000, False, bytes(TelephoneEvent(8, False, 10, 0xFFFF)), 8.0)
    got += receiver.feed(1000 + 0xFFFF, False, bytes(TelephoneEvent(8, False, 10, 400)), 8.1)
    got += receiver.feed(1000 + 0xFFFF, False, bytes(TelephoneEvent(8, True, 10, 14465)), 10.0)
    assert got == [DtmfDigit("8", 10000, "rfc4733")]


def test_sender_packet_plan() -> None:
    packets = Rfc4733Sender(ptime_ms=20).packets("#", 160)
    events = [TelephoneEvent.parse(p.payload) for p in packets]
    assert [p.offset_ms for p in packets] == [20, 70, 120, 160, 180, 200]
    assert [p.marker for p in packets] == [True, False, False, False, False, False]
    assert [e.duration for e in events] == [160, 560, 960, 1280, 1280, 1280]
    assert [e.end for e in events] == [False, False, False, True, True, True]
    assert {e.event for e in events} == {11}
    short = Rfc4733Sender(ptime_ms=30).packets("a", 20)
    assert [p.marker for p in short] == [True, False, False]
    assert TelephoneEvent.parse(short[0].payload) == TelephoneEvent(12, True, 10, 160)


@pytest.mark.parametrize("digit", list(KEYS))
def test_sender_to_receiver(digit: str) -> None:
    packets = Rfc4733Sender().packets(digit, 120)
    receiver = Rfc4733Receiver()
    got: list[DtmfDigit] = []
    for p in packets:
        got += receiver.feed(0xFFFFFF00, p.marker, p.payload, p.offset_ms / 1000)
    assert got == [DtmfDigit(digit, 120, "rfc4733")]


def test_sender_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="DTMF digit"):
        Rfc4733Sender().packets("E")
    with pytest.raises(ValueError, match="positive"):
        Rfc4733Sender().packets("1", 0)
    with pytest.raises(ValueError, match="segment"):
        Rfc4733Sender().packets("1", 9000)
    with pytest.raises(ValueError, match="volume"):
        Rfc4733Sender(volume=64)


# ---------------------------------------------------------------------------------------------
# SIP INFO


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", DtmfDigit("5", 160, "info")),
        ("Application/DTMF-Relay; x=y", b"signal= *\nduration=100", DtmfDigit("*", 100, "info")),
        ("application/dtmf-relay", b"Signal=11\r\nDuration=90", DtmfDigit("#", 90, "info")),
        ("application/dtmf-relay", b"Signal=d", DtmfDigit("D", 250, "info")),
        ("application/dtmf-relay", b"Signal=1\r\nDuration=x", DtmfDigit("1", 250, "info")),
        ("application/dtmf", b"5", DtmfDigit("5", 250, "info")),
        ("application/dtmf", b" # \r\n", DtmfDigit("#", 250, "info")),
        ("application/dtmf", b"10", DtmfDigit("*", 250, "info")),
        ("application/dtmf-relay", b"Signal=\r\nDuration=100", None),
        ("application/dtmf-relay", b"Signal=55", None),
        ("application/dtmf-relay", b"Duration=100", None),
        ("application/dtmf", b"", None),
        ("application/dtmf", b"\xff", None),
        ("application/sdp", b"Signal=5", None),
        ("text/plain", b"5", None),
    ],
)
def test_parse_info_body(content_type: str, body: bytes, expected: DtmfDigit | None) -> None:
    assert parse_info_body(content_type, body) == expected


# ---------------------------------------------------------------------------------------------
# In-band detection

Pcm = npt.NDArray[np.int16]
# Per-tone amplitude of -10 dBm0 (G.711 full scale is +3.17 dBm0).
TONE_AMPLITUDE = 32767 * 10 ** ((-10 - 3.17) / 20)


def _dual_tone(
    key: str, ms: float, rng: np.random.Generator, *, deviation: float = 0.0, twist_db: float = 0.0
) -> npt.NDArray[np.float64]:
    """A key's tone pair; twist_db > 0 puts the high tone below the low one (normal twist)."""
    row = next(r for r, keys in enumerate(KEYPAD) if key in keys)
    col = KEYPAD[row].index(key)
    n = np.arange(round(ms * RATE / 1000))
    low = np.sin(2 * np.pi * LOW_FREQS[row] * (1 + deviation) * n / RATE + rng.uniform(0, 6.3))
    high = np.sin(2 * np.pi * HIGH_FREQS[col] * (1 + deviation) * n / RATE + rng.uniform(0, 6.3))
    result: npt.NDArray[np.float64] = TONE_AMPLITUDE * (low + 10 ** (-twist_db / 20) * high)
    return result


def _through_ulaw(signal: npt.NDArray[np.float64]) -> Pcm:
    return ulaw_decode(ulaw_encode(np.clip(np.rint(signal), -32768, 32767).astype(np.int16)))


def _sequence(
    keys: str,
    rng: np.random.Generator,
    *,
    tone_ms: float = 60.0,
    gap_ms: float = 60.0,
    snr_db: float | None = 20.0,
    deviation: float = 0.0,
    twist_db: float = 0.0,
) -> Pcm:
    parts = [np.zeros(int(rng.integers(0, 160)))]
    for i, key in enumerate(keys):
        dev = deviation * (1 if i % 2 == 0 else -1)
        parts.append(_dual_tone(key, tone_ms, rng, deviation=dev, twist_db=twist_db))
        parts.append(np.zeros(round(gap_ms * RATE / 1000)))
    signal = np.concatenate(parts)
    if snr_db is not None:
        tone_power = TONE_AMPLITUDE**2 * (1 + 10 ** (-twist_db / 10)) / 2
        signal = signal + rng.normal(0, np.sqrt(tone_power / 10 ** (snr_db / 10)), len(signal))
    return _through_ulaw(signal)


def _detect(pcm: Pcm, frame: int = 160, detector: InbandDetector | None = None) -> list[DtmfDigit]:
    detector = detector or InbandDetector()
    out: list[DtmfDigit] = []
    for start in range(0, len(pcm), frame):
        out += detector.feed(pcm[start : start + frame])
    out += detector.feed(np.zeros(800, dtype=np.int16))  # let the last tone end
    return out


def test_goertzel_bank_equals_the_goertzel_recursion() -> None:
    rng = np.random.default_rng(3)
    block = rng.normal(0, 1000, 102)
    freqs = (697.0, 1336.0, 2954.0)
    vectorised = GoertzelBank(freqs, 102, RATE).power(block[None, :])[0]
    for f, power in zip(freqs, vectorised, strict=True):
        coeff = 2 * np.cos(2 * np.pi * f / RATE)
        s1 = s2 = 0.0
        for x in block:
            s1, s2 = x + coeff * s1 - s2, s1
        assert power == pytest.approx(s1 * s1 + s2 * s2 - coeff * s1 * s2, rel=1e-9)


@pytest.mark.parametrize("deviation", [0.015, -0.015])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_all_sixteen_keys_detected_once_each(deviation: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pcm = _sequence(KEYS, rng, deviation=deviation)
    got = _detect(pcm)
    assert "".join(d.digit for d in got) == KEYS
    assert all(d.source == "inband" for d in got)
    assert all(45 <= d.duration_ms <= 75 for d in got), [d.duration_ms for d in got]


@pytest.mark.parametrize("frame", [1, 37, 160, 1000])
def test_detection_does_not_depend_on_frame_size(frame: int) -> None:
    pcm = _sequence("159#", np.random.default_rng(7), deviation=0.015)
    assert "".join(d.digit for d in _detect(pcm, frame)) == "159#"


@pytest.mark.parametrize("seed", range(4))
def test_forty_ms_tones_are_accepted(seed: int) -> None:
    pcm = _sequence(KEYS, np.random.default_rng(seed), tone_ms=40, gap_ms=50, deviation=0.015)
    assert "".join(d.digit for d in _detect(pcm)) == KEYS


@pytest.mark.parametrize("seed", range(4))
def test_thirty_ms_tones_are_rejected(seed: int) -> None:
    pcm = _sequence(KEYS, np.random.default_rng(seed), tone_ms=30, gap_ms=60, deviation=0.015)
    assert _detect(pcm) == []


def test_long_press_is_one_digit_and_short_dropout_is_bridged() -> None:
    rng = np.random.default_rng(5)
    press = np.concatenate([_dual_tone("6", 400, rng), np.zeros(80), _dual_tone("6", 300, rng)])
    got = _detect(_through_ulaw(press))
    assert [d.digit for d in got] == ["6"]
    assert 700 <= got[0].duration_ms <= 800


def test_reset_drops_a_tone_in_progress() -> None:
    rng = np.random.default_rng(7)
    detector = InbandDetector()
    assert detector.feed(_through_ulaw(_dual_tone("2", 100, rng))) == []
    assert detector.active
    detector.reset()
    assert not detector.active
    assert detector.feed(np.zeros(800, dtype=np.int16)) == []
    # The next tone is detected as usual.
    assert [d.digit for d in _detect(_through_ulaw(_dual_tone("2", 100, rng)), 160, detector)] == [
        "2"]


def test_same_key_after_a_real_pause_is_two_digits() -> None:
    pcm = _sequence("33", np.random.default_rng(6), tone_ms=50, gap_ms=40)
    assert "".join(d.digit for d in _detect(pcm)) == "33"


@pytest.mark.parametrize(("twist_db", "accepted"), [(6.0, True), (-3.0, True), (10.0, False),
                                                     (-6.0, False)])
def test_twist_limits(twist_db: float, accepted: bool) -> None:
    pcm = _sequence("147*2580369#ABCD", np.random.default_rng(8), twist_db=twist_db, snr_db=30)
    got = "".join(d.digit for d in _detect(pcm))
    assert got == ("147*2580369#ABCD" if accepted else "")


def test_quiet_tones_below_the_floor_are_ignored() -> None:
    rng = np.random.default_rng(9)
    quiet = _dual_tone("5", 200, rng) * 10 ** (-30 / 20)  # -40 dBm0 per tone
    assert _detect(_through_ulaw(quiet)) == []


def _espeak_speech(tmp_path: Path) -> Pcm:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.fail("espeak-ng and sox are needed: apt-get install espeak-ng sox")
    text = (
        "Thank you for calling. Your account number is 4 7 1 9 2 3 0 6 8 5. "
        "Please press one for sales, two for support, or hold for the operator. "
        "The total comes to three hundred and twelve dollars and fifty cents, due on "
        "the twenty first of March. Call us back at 555 0199 extension 42."
    )
    raw = tmp_path / "speech.wav"
    narrow = tmp_path / "speech8k.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, timeout=60)
    subprocess.run(
        ["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(narrow)], check=True, timeout=60
    )
    with wave.open(str(narrow), "rb") as w:
        assert w.getframerate() == RATE and w.getsampwidth() == 2
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    # Speak up to a loud call level (peaks near full scale) so the energy floor is no help.
    return _through_ulaw(samples * (30000 / np.max(np.abs(samples))))


def test_no_digits_in_speech(tmp_path: Path) -> None:
    speech = _espeak_speech(tmp_path)
    assert len(speech) > 8 * RATE
    assert _detect(speech) == []
    # A caller pressing keys between sentences: exactly those keys, once each.
    rng = np.random.default_rng(10)
    half = len(speech) // 2
    pause = np.zeros(RATE // 10, dtype=np.int16)
    press = _through_ulaw(_dual_tone("#", 100, rng))
    mixed = np.concatenate([speech[:half], pause, press, pause, press, pause, speech[half:]])
    assert [d.digit for d in _detect(mixed)] == ["#", "#"]


def _music(seconds: float, rng: np.random.Generator) -> Pcm:
    """Chords of three or four equal-tempered notes with harmonics and vibrato."""
    n = np.arange(round(seconds * RATE))
    t = n / RATE
    signal = np.zeros(len(n))
    chord_len = RATE // 2
    for start in range(0, len(n), chord_len):
        span = slice(start, start + chord_len)
        ts = t[span]
        root = int(rng.integers(-9, 15))  # semitones from A4
        for interval in (0, 4, 7, 12)[: int(rng.integers(3, 5))]:
            f0 = 440.0 * 2 ** ((root + interval) / 12)
            vibrato = 1 + 0.006 * np.sin(2 * np.pi * 5.5 * ts + rng.uniform(0, 6.3))
            phase = 2 * np.pi * np.cumsum(f0 * vibrato) / RATE
            for harmonic, level in ((1, 1.0), (2, 0.5), (3, 0.3)):
                signal[span] += level * np.sin(harmonic * phase)
        envelope = np.minimum(1.0, np.linspace(0, 8, len(ts)))
        signal[span] *= envelope
    return _through_ulaw(signal * (26000 / np.max(np.abs(signal))))


def test_no_digits_in_music() -> None:
    music = _music(12.0, np.random.default_rng(11))
    assert _detect(music) == []


def test_near_dtmf_chord_without_harmonics_is_still_rejected_by_the_third_note() -> None:
    # F5 (698.5 Hz) and E6 (1318.5 Hz) sit inside the "2" tolerances; a third note spoils it.
    rng = np.random.default_rng(12)
    n = np.arange(RATE)
    chord = sum(np.sin(2 * np.pi * f * n / RATE + rng.uniform(0, 6.3)) for f in
                (698.46, 1318.51, 1046.5))
    assert _detect(_through_ulaw(TONE_AMPLITUDE * np.asarray(chord))) == []


def test_no_digits_in_the_hold_music() -> None:
    import soundfile
    path = Path(__file__).resolve().parents[2] / "media" / "assets" / "hold_music.flac"
    if not path.exists():
        pytest.fail("the shipped hold music (media/assets/hold_music.flac) is missing")
    samples, rate = soundfile.read(str(path), dtype="int16")
    assert rate == RATE
    assert _detect(_through_ulaw(np.asarray(samples, dtype=np.float64).reshape(-1))) == []


@pytest.mark.parametrize(
    "freqs",
    [(350.0, 440.0), (440.0, 480.0), (480.0, 620.0), (400.0, 450.0), (425.0,), (1000.0,)],
    ids=["us-dial", "us-ringback", "us-busy", "uk-ringback", "eu-tone", "beep"],
)
def test_no_digits_in_call_progress_tones(freqs: tuple[float, ...]) -> None:
    # Dual-tone call-progress signals (ITU-T E.180) at full call level must not look like keys.
    n = np.arange(2 * RATE)
    signal = sum(TONE_AMPLITUDE * 2 * np.sin(2 * np.pi * f * n / RATE) for f in freqs)
    assert _detect(_through_ulaw(np.asarray(signal))) == []


@pytest.mark.parametrize("rate", [16000, 11025])
def test_other_sample_rates(rate: int) -> None:
    rng = np.random.default_rng(15)
    n = np.arange(rate // 10)
    gap = np.zeros(rate // 10)
    parts = []
    for key in "19#D":
        row = next(r for r, keys in enumerate(KEYPAD) if key in keys)
        col = KEYPAD[row].index(key)
        low = np.sin(2 * np.pi * LOW_FREQS[row] * n / rate)
        high = np.sin(2 * np.pi * HIGH_FREQS[col] * n / rate)
        parts += [TONE_AMPLITUDE * (low + high), gap]
    signal = np.concatenate(parts) + rng.normal(0, TONE_AMPLITUDE / 10, len(parts) * len(n))
    got = _detect(np.rint(signal).astype(np.int16), 320, InbandDetector(rate))
    assert "".join(d.digit for d in got) == "19#D"
    assert all(90 <= d.duration_ms <= 110 for d in got)
    with pytest.raises(ValueError, match="8000"):
        InbandDetector(4000)


def test_feed_rejects_wrong_dtype() -> None:
    with pytest.raises(TypeError, match="int16"):
        InbandDetector().feed(np.zeros(160))  # type: ignore[arg-type]


def test_custom_settings_change_the_minimum_duration() -> None:
    detector = InbandDetector(settings=DetectorSettings(min_duration_ms=80.0))
    pcm = _sequence("12", np.random.default_rng(13), tone_ms=60)
    assert _detect(pcm, detector=detector) == []


def test_detector_cost_per_frame_is_reported() -> None:
    pcm = _sequence(KEYS * 4, np.random.default_rng(14))
    frames = [pcm[i : i + 160] for i in range(0, len(pcm) - 159, 160)]
    detector = InbandDetector()
    start = time.perf_counter()
    for frame in frames:
        detector.feed(frame)
    per_frame_us = (time.perf_counter() - start) / len(frames) * 1e6
    print(f"\nin-band DTMF detector: {per_frame_us:.1f} µs per 20 ms frame")
    assert per_frame_us < 5000
