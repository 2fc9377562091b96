"""Placing a call's two RTP streams on one timeline for a stereo recording (sans-I/O).

Packets arrive out of order, late or not at all, and each leg has its own RTP timestamp base.
Each packet is placed by its RTP timestamp relative to its leg's first packet, and that first
packet by its arrival time relative to the start of the recording, so loss and jitter neither
shift nor stretch the timeline and the two channels stay aligned. :meth:`RecordingMixer.take`
returns everything up to a moment a little in the past (the late-packet margin), as two
equally long int16 arrays: silence where nothing was received.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .g711 import alaw_decode, ulaw_decode
from .rtp import peek_header

RATE = 8000
_DECODERS = {0: ulaw_decode, 8: alaw_decode}


class RecordingMixer:
    """Collects the G.711 packets of legs 0 (caller) and 1 (callee) from ``start`` on."""

    __slots__ = ("_base", "_packets", "_written", "margin", "start")

    def __init__(self, start: float, margin: float = 0.2) -> None:
        self.start = start
        self.margin = margin
        #: per leg: (sample position of its first packet, that packet's RTP timestamp)
        self._base: list[tuple[int, int] | None] = [None, None]
        self._packets: list[list[tuple[int, int, bytes]]] = [[], []]  # (position, pt, payload)
        self._written = 0  # samples handed out so far

    def feed(self, leg: int, packet: bytes, arrival: float) -> None:
        """One RTP packet from ``leg``'s phone (called per packet: keep it cheap)."""
        if len(packet) < 12:
            return
        pt, _seq, ts, _ssrc, _marker = peek_header(packet)
        if pt not in _DECODERS:
            return  # telephone-events, comfort noise and other codecs are not audio here
        base = self._base[leg]
        if base is None:
            base = (max(0, round((arrival - self.start) * RATE)), ts)
            self._base[leg] = base
        # Signed 32-bit distance from the leg's first timestamp (RFC 3550: timestamps wrap).
        delta = ((ts - base[1] + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        header = 12 + 4 * (packet[0] & 0x0F)
        self._packets[leg].append((base[0] + delta, pt, packet[header:]))

    def take(self, now: float) -> tuple[NDArray[np.int16], NDArray[np.int16]]:
        """Both channels from the last take up to ``now - margin``."""
        return self._take(round((now - self.margin - self.start) * RATE))

    def take_all(self) -> tuple[NDArray[np.int16], NDArray[np.int16]]:
        """Everything received, to close the recording."""
        end = self._written
        for packets in self._packets:
            for pos, _pt, payload in packets:
                end = max(end, pos + len(payload))
        return self._take(end)

    def _take(self, end: int) -> tuple[NDArray[np.int16], NDArray[np.int16]]:
        start = self._written
        n = max(0, end - start)
        out = [np.zeros(n, dtype=np.int16), np.zeros(n, dtype=np.int16)]
        if n == 0:
            return out[0], out[1]
        for leg in (0, 1):
            keep: list[tuple[int, int, bytes]] = []
            channel = out[leg]
            for pos, pt, payload in self._packets[leg]:
                if pos >= end:
                    keep.append((pos, pt, payload))
                    continue
                pcm = _DECODERS[pt](payload)
                lo, hi = pos - start, pos - start + len(pcm)
                if hi <= 0:
                    continue  # later than the margin allowed: its moment is already written
                src_lo = max(0, -lo)
                src_hi = len(pcm) - max(0, hi - n)
                channel[max(0, lo) : min(n, hi)] = pcm[src_lo:src_hi]
                if hi > n:  # straddles the end: the rest goes out with the next take
                    rest = len(pcm) - (hi - n)
                    keep.append((end, pt, _reencode_tail(payload, rest)))
            self._packets[leg] = keep
        self._written = end
        return out[0], out[1]


def _reencode_tail(payload: bytes, skip: int) -> bytes:
    # G.711 is one byte per sample, so the tail of the payload is the tail of the audio.
    return payload[skip:]
