"""Signals for the DTMF tests: key tones, RTP packets, SIPp's pcap captures."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

from media.g711 import ulaw_decode, ulaw_encode
from media.goertzel import HIGH_FREQS, KEYPAD, LOW_FREQS
from media.rtp import RtpPacket

RATE = 8000
SIPP_PCAPS = Path("/usr/share/sip-tester")
Pcm = npt.NDArray[np.int16]
# Per-tone amplitude of -10 dBm0 (G.711 full scale is +3.17 dBm0).
TONE_AMPLITUDE = 32767 * 10 ** ((-10 - 3.17) / 20)


def dual_tone(key: str, ms: float, phase: float = 0.3) -> Pcm:
    """The Q.23 tone pair of ``key`` for ``ms`` milliseconds, through µ-law and back."""
    row = next(r for r, keys in enumerate(KEYPAD) if key in keys)
    col = KEYPAD[row].index(key)
    n = np.arange(round(ms * RATE / 1000))
    low = np.sin(2 * np.pi * LOW_FREQS[row] * n / RATE + phase)
    high = np.sin(2 * np.pi * HIGH_FREQS[col] * n / RATE + 2 * phase)
    return through_ulaw(TONE_AMPLITUDE * (low + high))


def through_ulaw(signal: npt.NDArray[np.float64]) -> Pcm:
    return ulaw_decode(ulaw_encode(np.clip(np.rint(signal), -32768, 32767).astype(np.int16)))


def frames(pcm: Pcm, size: int = 160) -> list[Pcm]:
    """``pcm`` cut into frames of ``size`` samples, the last padded with silence."""
    pad = (-len(pcm)) % size
    if pad:
        pcm = np.concatenate([pcm, np.zeros(pad, dtype=np.int16)])
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def rtp(
    seq: int, ts: int, payload: bytes, *, pt: int = 0, ssrc: int = 0x1234, marker: bool = False
) -> bytes:
    return bytes(RtpPacket(payload_type=pt, marker=marker, sequence_number=seq & 0xFFFF,
                           timestamp=ts & 0xFFFFFFFF, ssrc=ssrc, payload=payload))


def pcap_udp_payloads(path: Path) -> list[tuple[float, bytes]]:
    """(capture time, UDP payload) of each IPv4/UDP datagram in a classic pcap file."""
    data = path.read_bytes()
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">"}[data[:4]]
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    assert linktype == 1, "Ethernet captures only"
    out: list[tuple[float, bytes]] = []
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
        out.append((sec + usec / 1e6, udp[8:]))
    return out
