"""µ-law ↔ A-law between the legs: tables, packets, SDP, and the relay over real UDP."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from media.g711 import alaw_decode, transcode_ulaw_to_alaw, ulaw_encode
from media.relay import Leg, PortAllocator
from media.rtp import RtpPacket
from media.sdp import SessionDescription
from media.transcode import (
    ALAW_TO_ULAW,
    ULAW_TO_ALAW,
    Transcoding,
    g711_formats,
    offer_both_g711,
    rename_format,
    transcode_rtp,
)
from media.udp import RtpRelay

OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
)


def _tone(freq: float = 1000.0) -> np.ndarray:
    n = np.arange(160)
    return (8000 * np.sin(2 * np.pi * freq * n / 8000)).astype(np.int16)


def test_tables_match_the_codec() -> None:
    codes = bytes(range(256))
    assert codes.translate(ULAW_TO_ALAW) == transcode_ulaw_to_alaw(codes)
    assert len(ALAW_TO_ULAW) == 256


def test_packet_payload_and_type_are_converted_other_types_untouched() -> None:
    pkt = RtpPacket(payload_type=0, marker=True, sequence_number=7, timestamp=160, ssrc=9,
                    csrc=[1], extension=b"\x00" * 4, payload=ulaw_encode(_tone()))
    out = RtpPacket.parse(transcode_rtp(bytes(pkt), Transcoding.between(0, 8)))
    assert (out.payload_type, out.marker, out.sequence_number, out.ssrc) == (8, True, 7, 9)
    assert out.csrc == [1] and out.extension == b"\x00" * 4
    assert out.payload == transcode_ulaw_to_alaw(pkt.payload)
    dtmf = bytes(RtpPacket(payload_type=101, payload=b"\x05\x0a\x00\xa0"))
    assert transcode_rtp(dtmf, Transcoding.between(0, 8)) == dtmf


def test_offer_gets_the_other_g711_and_answer_is_renamed_back() -> None:
    offer = SessionDescription.parse(OFFER)
    both = offer_both_g711(offer)
    assert both.audio is not None and both.audio.formats == ("0", "101", "8")
    assert "a=rtpmap:8 PCMA/8000" in bytes(both).decode()
    assert offer_both_g711(both) is both  # already has both
    answer = SessionDescription.parse(OFFER.replace(b"RTP/AVP 0 101", b"RTP/AVP 8 101")
                                      .replace(b"rtpmap:0 PCMU", b"rtpmap:8 PCMA"))
    back = rename_format(answer, "8", "0")
    assert g711_formats(back) == ["0"]
    assert "a=rtpmap:0 PCMU/8000" in bytes(back).decode()


@pytest.mark.asyncio
async def test_relay_converts_each_direction() -> None:
    relay = RtpRelay(PortAllocator(41000, 41100))
    handle = await relay.open_session("127.0.0.1")
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for s in (a, b):
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        handle.set_remote(Leg.A, a.getsockname())
        handle.set_remote(Leg.B, b.getsockname())
        handle.set_transcoding(Leg.A, Transcoding.between(0, 8))
        handle.set_transcoding(Leg.B, Transcoding.between(8, 0))
        pkt = RtpPacket(payload_type=0, sequence_number=1, ssrc=5, payload=ulaw_encode(_tone()))
        a.sendto(bytes(pkt), ("127.0.0.1", handle.port(Leg.A)))
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(b, 2048), 2)
        got = RtpPacket.parse(data)
        assert got.payload_type == 8
        pcm = alaw_decode(got.payload).astype(np.float64)
        spectrum = np.abs(np.fft.rfft(pcm * np.hanning(160)))
        assert abs(np.argmax(spectrum) * 8000 / 160 - 1000) <= 50
    finally:
        a.close()
        b.close()
        await handle.close()
