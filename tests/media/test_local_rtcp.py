"""RTCP from a leg the PBX terminates: reports about the phone's audio, over real UDP."""

from __future__ import annotations

import asyncio
import struct

import numpy as np
import pytest

from media.endpoint import LocalLeg
from media.g711 import PCMU
from media.local import LocalMedia
from media.playback import PlaybackEngine
from media.player import SamplesSource
from media.relay import PortAllocator
from media.rtcp import (
    RtcpBye,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpSenderReport,
    ntp_from_unix,
    parse_compound,
)
from tests.media.test_local import HOST, _Phone, _until
from tests.peers.ports import free_port_block

PHONE_SSRC = 0xC0FFEE


def _rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, PHONE_SSRC) + bytes([0xFF]) * 160


@pytest.mark.asyncio
async def test_reports_tell_the_phone_its_loss_and_end_with_bye() -> None:
    base = free_port_block(4)
    engine = PlaybackEngine()
    # The phone's RTP and RTCP sockets on a free pair, RTCP the next port up, as its SDP
    # says (RFC 3550 11).
    loop = asyncio.get_running_loop()
    phone_port = free_port_block(2)
    _, rtp_phone = await loop.create_datagram_endpoint(_Phone, local_addr=(HOST, phone_port))
    _, rtcp_phone = await loop.create_datagram_endpoint(
        _Phone, local_addr=(HOST, phone_port + 1))
    media = await LocalMedia.open(PortAllocator(base, base + 3), HOST, engine,
                                  LocalLeg(PCMU), lambda _e: None, rtcp_interval=0.3)
    try:
        media.set_remote(rtp_phone.addr)
        # The phone's own SR, so our reports can say when we got it (LSR/DLSR).
        sr = RtcpSenderReport(PHONE_SSRC, ntp_from_unix(1_700_000_000.0), 0, 0, 0)
        rtcp_phone.send(bytes(sr) + bytes(RtcpSdes.cname_packet(PHONE_SSRC, b"phone")),
                        (HOST, media.rtcp_port))
        # Packets 1..49 sent, every fifth lost on the way: 9 missing (RFC 3550 A.3 counts up
        # to the highest sequence number received).
        for seq in range(1, 50):
            if seq % 5:
                rtp_phone.send(_rtp(seq), (HOST, media.port))
            await asyncio.sleep(0.005)
        media.play(SamplesSource(np.zeros(1600, dtype=np.int16)))

        def report_with_block() -> RtcpSenderReport | RtcpReceiverReport | None:
            for _, data in rtcp_phone.received:
                for packet in parse_compound(data):
                    if isinstance(packet, RtcpSenderReport | RtcpReceiverReport) and \
                            packet.reports and packet.reports[0].highest_sequence == 49:
                        return packet
            return None

        await _until(lambda: report_with_block() is not None, timeout=5.0)
        report = report_with_block()
        assert report is not None
        block = report.reports[0]
        assert block.ssrc == PHONE_SSRC
        assert block.packets_lost == 9
        assert block.lsr == (ntp_from_unix(1_700_000_000.0) >> 16) & 0xFFFFFFFF
        # Every compound packet carries the CNAME of the same SSRC (RFC 3550 6.1).
        first = parse_compound(rtcp_phone.received[0][1])
        assert isinstance(first[1], RtcpSdes) and first[1].chunks[0].cname
        await _until(lambda: any(
            isinstance(p, RtcpSenderReport) and p.packet_count > 0
            for _, d in rtcp_phone.received for p in parse_compound(d)), timeout=5.0)
        ssrcs = {p.ssrc for _, d in rtcp_phone.received for p in parse_compound(d)
                 if isinstance(p, RtcpSenderReport | RtcpReceiverReport)}
        assert len(ssrcs) == 1
    finally:
        await media.close()
        engine.close()
    last = parse_compound(rtcp_phone.received[-1][1])
    assert isinstance(last[-1], RtcpBye) and last[-1].sources == list(ssrcs)
    for phone in (rtp_phone, rtcp_phone):
        assert phone.transport is not None
        phone.transport.close()
