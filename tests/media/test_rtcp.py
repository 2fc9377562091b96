"""RTCP packets (RFC 3550 6.4 to 6.6), compound packets and reports built from statistics."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.rtcp import (
    NTP_UNIX_OFFSET,
    ReportBlock,
    RtcpBye,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpSenderReport,
    RtcpUnknown,
    SdesChunk,
    SdesItem,
    build_report,
    ntp_from_unix,
    ntp_middle32,
    parse_compound,
    serialize_compound,
    unix_from_ntp,
)
from media.rtp import RtpStats

BLOCK = ReportBlock(
    ssrc=0x11223344,
    fraction_lost=25,
    packets_lost=-3,
    highest_sequence=0x0001FFFF,
    jitter=80,
    lsr=0xAABBCCDD,
    dlsr=65536,
)


def test_ntp_helpers() -> None:
    ntp = ntp_from_unix(1.5)
    assert ntp == ((NTP_UNIX_OFFSET + 1) << 32) | 0x80000000
    assert unix_from_ntp(ntp) == 1.5
    assert ntp_middle32(0x0102030405060708) == 0x03040506
    assert unix_from_ntp(ntp_from_unix(1_700_000_000.25)) == pytest.approx(1_700_000_000.25)


def test_report_block_bytes() -> None:
    data = bytes(BLOCK)
    assert len(data) == 24
    # Cumulative loss is 24-bit two's complement right after the fraction.
    assert data[4:8] == bytes((25, 0xFF, 0xFF, 0xFD))
    assert ReportBlock.parse(data) == BLOCK
    with pytest.raises(ValueError, match="24 bits"):
        bytes(ReportBlock(ssrc=1, packets_lost=0x800000))


def test_compound_sr_sdes_round_trip() -> None:
    sr = RtcpSenderReport(
        ssrc=0xCAFEBABE,
        ntp_timestamp=ntp_from_unix(1_700_000_000.0),
        rtp_timestamp=160_000,
        packet_count=1000,
        octet_count=160_000,
        reports=[BLOCK],
    )
    sdes = RtcpSdes.cname_packet(0xCAFEBABE, b"pbx@192.0.2.1")
    data = bytes(sr) + bytes(sdes)
    # SR: header 4 + sender info 24 + one block 24; length field counts 32-bit words - 1.
    assert data[:4] == bytes((0x81, 200, 0, 12))
    # SDES: ssrc 4 + item 2 + 13 + null, padded to 20 bytes.
    assert data[52:56] == bytes((0x81, 202, 0, 5))
    packets = parse_compound(data)
    assert packets == [sr, sdes]
    assert serialize_compound(packets) == data
    assert isinstance(packets[1], RtcpSdes)
    assert packets[1].chunks[0].cname == b"pbx@192.0.2.1"


def test_rr_bye_and_unknown_round_trip() -> None:
    rr = RtcpReceiverReport(ssrc=7, reports=[BLOCK, ReportBlock(ssrc=9)])
    bye = RtcpBye(sources=[7, 8], reason=b"hangup")
    app = RtcpUnknown(packet_type=204, count=1, body=b"\x00\x00\x00\x07name1234")
    sdes = RtcpSdes(
        [
            SdesChunk(7, [SdesItem(1, b"a@b"), SdesItem(2, b"Alice")]),
            SdesChunk(8, []),
        ]
    )
    data = serialize_compound([rr, sdes, bye, app])
    assert parse_compound(data) == [rr, sdes, bye, app]
    assert RtcpReceiverReport.parse(bytes(rr)) == rr
    assert RtcpBye.parse(bytes(bye)) == bye
    assert RtcpBye.parse(bytes(RtcpBye([1]))) == RtcpBye([1])
    assert SdesChunk(8).cname is None


def test_padding_on_last_packet_is_stripped() -> None:
    rr = bytes(RtcpReceiverReport(ssrc=7))
    padded = bytes((0xA0, 201, 0, 2)) + rr[4:] + b"\x00\x00\x00\x04"
    assert parse_compound(padded) == [RtcpReceiverReport(ssrc=7)]
    with pytest.raises(ValueError, match="last packet"):
        parse_compound(padded + rr)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated"),
        (b"\x81\xc9\x00", "truncated"),
        (b"\x41\xc9\x00\x01\x00\x00\x00\x07", "unsupported version 1"),
        (b"\x81\xc9\x00\x07\x00\x00\x00\x07", "length exceeds"),
        (b"\x81\xc9\x00\x01\x00\x00\x00\x07", "truncated report blocks"),
        (b"\x80\xc8\x00\x01\x00\x00\x00\x07", "sender report is truncated"),
        (b"\x80\xc9\x00\x00", "receiver report is truncated"),
        (b"\x81\xca\x00\x01\x00\x00\x00\x07", "no end item"),
        (b"\x81\xca\x00\x02\x00\x00\x00\x07\x01\x09ab", "item is truncated"),
        (b"\x82\xcb\x00\x01\x00\x00\x00\x07", "truncated sources"),
        (b"\x81\xcb\x00\x02\x00\x00\x00\x07\x09abc", "reason is truncated"),
        (b"\xa0\xc9\x00\x01\x00\x00\x00\x00", "invalid padding"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_compound(data)


def test_single_packet_parse_checks_type_and_length() -> None:
    rr = bytes(RtcpReceiverReport(ssrc=7))
    with pytest.raises(ValueError, match="type 201 is not 200"):
        RtcpSenderReport.parse(rr)
    with pytest.raises(ValueError, match="trailing data"):
        RtcpReceiverReport.parse(rr + b"\x00")


@settings(max_examples=2000)
@given(st.binary(max_size=120))
def test_parse_compound_fuzz_raises_only_value_error(data: bytes) -> None:
    try:
        packets = parse_compound(data)
    except ValueError:
        return
    assert parse_compound(serialize_compound(packets)) == packets


@given(st.binary(min_size=4, max_size=60))
def test_fuzz_valid_header_any_body(body: bytes) -> None:
    body = body[: len(body) // 4 * 4]
    for packet_type in (200, 201, 202, 203):
        for count in (0, 1, 2):
            data = bytes((0x80 | count, packet_type)) + (len(body) // 4).to_bytes(2, "big")
            try:
                packets = parse_compound(data + body)
            except ValueError:
                continue
            assert parse_compound(serialize_compound(packets)) == packets


def test_build_report_from_stats() -> None:
    stats = RtpStats()
    # Probation on 65000, then 65001..65535, 0..1000 with every 10th packet missing.
    seqs = [(65000 + i) & 0xFFFF for i in range(1537) if i % 10 != 5]
    for i, seq in enumerate(seqs):
        stats.update(seq, i * 160, i * 0.02, 8000)
    last_sr = ntp_from_unix(1_700_000_000.5)
    block = build_report(stats, 0xABCD, last_sr_ntp=last_sr, last_sr_arrival=30.0, now=31.25)
    assert block.ssrc == 0xABCD
    assert block.highest_sequence == 65536 + 1000
    assert block.packets_lost == stats.cumulative_lost == 154
    assert block.fraction_lost == (154 << 8) // 1536
    assert block.lsr == ntp_middle32(last_sr)
    assert block.dlsr == int(1.25 * 65536)
    assert block.jitter == stats.jitter
    # The interval is closed: the next report sees no new loss.
    again = build_report(stats, 0xABCD)
    assert (again.fraction_lost, again.lsr, again.dlsr) == (0, 0, 0)
    packet = RtcpReceiverReport(ssrc=1, reports=[block])
    assert parse_compound(bytes(packet)) == [packet]


def test_build_report_clamps_cumulative_loss() -> None:
    stats = RtpStats()
    stats.update(0, 0, 0.0, 8000)
    stats.update(1, 0, 0.0, 8000)
    # Ordinary loss steps of < 3000 packets, 10 million packets lost in all.
    seq, ext = 1, 1
    while ext < 10_000_000:
        seq = (seq + 2999) & 0xFFFF
        ext += 2999
        stats.update(seq, 0, 0.0, 8000)
    assert stats.cumulative_lost > 0x7FFFFF
    block = build_report(stats, 1)
    assert block.packets_lost == 0x7FFFFF
    assert ReportBlock.parse(bytes(block)).packets_lost == 0x7FFFFF
