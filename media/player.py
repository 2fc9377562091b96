"""An RTP stream of the PBX's own (music, prompts, tones): frames in, G.711 RTP packets out.

Sans-I/O: :meth:`RtpStream.next_packet` is called once per 20 ms tick by whoever owns the clock
(:mod:`media.playback`) and returns the bytes to send.
"""

from __future__ import annotations

import secrets
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from .g711 import Codec
from .rtp import RtpPacket

FRAME_SAMPLES = 160  # 20 ms at 8 kHz (RFC 3551 4.5.14: ptime 20 for G.711)


class FrameSource(Protocol):
    def next_frame(self) -> NDArray[np.int16] | None:
        """The next 160 samples, or None when the source has ended."""


class RtpStream:
    """Numbers, times and encodes one outgoing stream (RFC 3550 5.1: random SSRC, random
    initial sequence number and timestamp)."""

    __slots__ = ("_codec", "_packet", "_source", "ended")

    def __init__(self, source: FrameSource, codec: Codec) -> None:
        self._source = source
        self._codec = codec
        self._packet = RtpPacket(
            payload_type=codec.payload_type,
            marker=True,  # RFC 3551 4.1: the first packet of a talkspurt
            sequence_number=secrets.randbelow(1 << 16),
            timestamp=secrets.randbelow(1 << 32),
            ssrc=secrets.randbelow(1 << 32),
        )
        self.ended = False

    def next_packet(self) -> bytes | None:
        """The packet for the next 20 ms, or None once the source has ended."""
        frame = self._source.next_frame()
        if frame is None:
            self.ended = True
            return None
        pkt = self._packet
        pkt.payload = self._codec.encode(frame)
        data = bytes(pkt)
        pkt.marker = False
        pkt.sequence_number = (pkt.sequence_number + 1) & 0xFFFF
        pkt.timestamp = (pkt.timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
        return data
