"""RTP packets (RFC 3550 5.1) and receiver statistics (RFC 3550 A.1, A.3, A.8)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.rtp import RtpPacket, RtpStats, peek_header, seq_diff, seq_gt

# A µ-law packet as a phone sends it: PT 0, seq 0x1234, ts 0xDEADBEEF, SSRC 0x01020304.
PCMU = bytes.fromhex("80001234deadbeef01020304") + b"\xff" * 160


def test_parse_plain_packet() -> None:
    packet = RtpPacket.parse(PCMU)
    assert packet == RtpPacket(
        payload_type=0,
        sequence_number=0x1234,
        timestamp=0xDEADBEEF,
        ssrc=0x01020304,
        payload=b"\xff" * 160,
    )
    assert packet.version == 2
    assert bytes(packet) == PCMU


def test_round_trip_csrc_extension_padding_marker() -> None:
    packet = RtpPacket(
        payload_type=101,
        marker=True,
        sequence_number=65535,
        timestamp=0xFFFFFFFF,
        ssrc=0xCAFEBABE,
        csrc=[1, 2, 0xFFFFFFFF],
        extension_profile=0xBEDE,
        extension=b"\x10\xaa\x00\x00",
        payload=b"\x05\x8a\x03\x20",
        padding_size=4,
    )
    data = bytes(packet)
    # V=2 P=1 X=1 CC=3; M=1 PT=101
    assert data[0] == 0x80 | 0x20 | 0x10 | 3
    assert data[1] == 0x80 | 101
    assert data[-1] == 4
    assert len(data) == 12 + 12 + 4 + 4 + 4 + 4
    assert RtpPacket.parse(data) == packet
    assert bytes(RtpPacket.parse(data)) == data


def test_empty_extension_is_kept() -> None:
    packet = RtpPacket(extension_profile=1, extension=b"", payload=b"x")
    data = bytes(packet)
    assert data[12:16] == b"\x00\x01\x00\x00"
    assert RtpPacket.parse(data) == packet


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "RTP packet is truncated"),
        (PCMU[:11], "RTP packet is truncated"),
        (b"\x40" + PCMU[1:], "RTP packet has unsupported version 1"),
        (b"\x82" + PCMU[1:12] + b"\x00" * 7, "RTP packet has truncated CSRC"),
        (b"\x90" + PCMU[1:12] + b"\xbe\xde", "RTP packet has truncated extension header"),
        (b"\x90" + PCMU[1:12] + b"\xbe\xde\x00\x02" + b"\x00" * 7, "truncated extension"),
        (b"\xa0" + PCMU[1:12] + b"ab\x00", "RTP packet has zero padding length"),
        (b"\xa0" + PCMU[1:12] + b"ab\x04", "RTP packet padding length exceeds the payload"),
    ],
)
def test_malformed_packets(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RtpPacket.parse(data)


def test_serialise_rejects_what_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="15 CSRC"):
        bytes(RtpPacket(csrc=list(range(16))))
    with pytest.raises(ValueError, match="multiple of 4"):
        bytes(RtpPacket(extension=b"abc"))
    with pytest.raises(ValueError, match="padding"):
        bytes(RtpPacket(padding_size=256))


@settings(max_examples=2000)
@given(st.binary(max_size=80))
def test_parse_fuzz_raises_only_value_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except ValueError:
        return
    again = RtpPacket.parse(bytes(packet))
    assert again == packet


@given(
    st.builds(
        RtpPacket,
        payload_type=st.integers(0, 127),
        marker=st.booleans(),
        sequence_number=st.integers(0, 0xFFFF),
        timestamp=st.integers(0, 0xFFFFFFFF),
        ssrc=st.integers(0, 0xFFFFFFFF),
        csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
        extension_profile=st.integers(0, 0xFFFF),
        extension=st.none() | st.binary(max_size=16).map(lambda b: b[: len(b) // 4 * 4]),
        payload=st.binary(max_size=40),
        padding_size=st.integers(0, 255),
    )
)
def test_round_trip_any_packet(packet: RtpPacket) -> None:
    if packet.extension is None:
        packet.extension_profile = 0  # only carried with an extension
    data = bytes(packet)
    assert RtpPacket.parse(data) == packet
    assert peek_header(data) == (
        packet.payload_type,
        packet.sequence_number,
        packet.timestamp,
        packet.ssrc,
        packet.marker,
    )


def test_peek_header() -> None:
    assert peek_header(PCMU) == (0, 0x1234, 0xDEADBEEF, 0x01020304, False)
    with pytest.raises(ValueError, match="truncated"):
        peek_header(PCMU[:5])
    with pytest.raises(ValueError, match="version 0"):
        peek_header(bytes(12))


def test_sequence_arithmetic_wraps() -> None:
    assert seq_gt(1, 0)
    assert not seq_gt(0, 1)
    assert not seq_gt(7, 7)
    assert seq_gt(0, 65535)
    assert seq_gt(5, 65530)
    assert not seq_gt(65530, 5)
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(100, 90) == 10
    assert seq_diff(0x8000, 0) == -0x8000
    assert seq_diff(0x7FFF, 0) == 0x7FFF


# -- statistics ----------------------------------------------------------------------------


def feed(stats: RtpStats, seqs: list[int], rate: int = 8000) -> None:
    for i, seq in enumerate(seqs):
        stats.update(seq, i * 160, i * 0.02, rate)


def test_probation_then_counting() -> None:
    stats = RtpStats()
    assert not stats.update(10, 0, 0.0, 8000)
    assert stats.received == 0
    assert stats.expected == 0
    assert stats.update(11, 160, 0.02, 8000)
    assert stats.received == 1
    assert stats.base_seq == 11
    assert stats.update(12, 320, 0.04, 8000)
    assert (stats.received, stats.expected, stats.cumulative_lost) == (2, 2, 0)


def test_probation_restarts_on_out_of_order_start() -> None:
    stats = RtpStats()
    assert not stats.update(10, 0, 0.0, 8000)
    assert not stats.update(20, 0, 0.0, 8000)
    assert stats.update(21, 0, 0.0, 8000)
    assert stats.base_seq == 21


def test_wrap_across_65535() -> None:
    stats = RtpStats()
    feed(stats, [(65530 + i) & 0xFFFF for i in range(12)])
    # 65530 is on probation; 65531..65535 then 0..5 are counted.
    assert stats.extended_highest_seq == 65536 + 5
    assert stats.received == 11
    assert stats.expected == 11
    assert stats.cumulative_lost == 0


def test_every_tenth_packet_lost() -> None:
    stats = RtpStats()
    seqs = [s for s in range(1000, 2001) if s % 10 != 5]
    feed(stats, seqs)
    # Probation consumed 1000; 1001..2000 expected, 100 of them missing.
    assert stats.expected == 1000
    assert stats.cumulative_lost == 100
    assert stats.take_fraction_lost() == 25  # 0.1 * 256 = 25.6, truncated
    # A new interval with no loss.
    feed(stats, list(range(2001, 2011)))
    assert stats.take_fraction_lost() == 0


def test_duplicates_make_loss_negative_and_fraction_zero() -> None:
    stats = RtpStats()
    feed(stats, [1, 2, 3, 3, 3])
    assert stats.cumulative_lost == -2
    assert stats.take_fraction_lost() == 0


def test_large_jump_needs_two_sequential_packets() -> None:
    stats = RtpStats()
    feed(stats, [1, 2, 3])
    assert not stats.update(40000, 0, 1.0, 8000)
    assert stats.extended_highest_seq == 3
    assert stats.update(40001, 160, 1.02, 8000)
    # The sender restarted: counting starts over from the new sequence.
    assert stats.base_seq == 40001
    assert stats.received == 1
    assert stats.expected == 1


def test_jitter_known_pattern() -> None:
    # 8 kHz, 20 ms frames (160 ticks). Transit deltas |D| alternate 0 and 80 ticks:
    # arrivals 0, 0.03, 0.04, 0.07, 0.08, ... (10 ms late every other packet).
    stats = RtpStats()
    arrivals = [i * 0.02 + (0.01 if i % 2 else 0.0) for i in range(8)]
    for i, arrival in enumerate(arrivals):
        stats.update(100 + i, i * 160, arrival, 8000)
    # Counted from seq 101 (the first is on probation); hand computation of RFC 3550 A.8:
    # J += (|D| - J)/16 with |D| = 80 for each of the 6 pairs.
    expected = 0.0
    for _ in range(6):
        expected += (80 - expected) / 16
    assert stats.jitter == int(expected) == 25
    assert stats.jitter_seconds == pytest.approx(expected / 8000)


def test_jitter_zero_when_perfectly_paced_across_timestamp_wrap() -> None:
    stats = RtpStats()
    for i in range(10):
        stats.update(i, (0xFFFFFFFF - 500 + i * 160) & 0xFFFFFFFF, i * 0.02, 8000)
    assert stats.jitter == 0


def test_header_fields_are_big_endian() -> None:
    data = bytes(RtpPacket(sequence_number=0x0102, timestamp=0x03040506, ssrc=0x0708090A))
    assert struct.unpack("!HII", data[2:12]) == (0x0102, 0x03040506, 0x0708090A)
