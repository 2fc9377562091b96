"""Write classic pcap files of RTP streams, for SIPp's ``play_pcap_audio`` to send into a call.

SIPp replays the UDP payloads of a capture with their original timing, from its media port to
the far end's, so only the RTP and the capture times matter here; the Ethernet/IPv4/UDP headers
are filled in plausibly (loopback addresses, checksum 0 which UDP over IPv4 allows).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

_ETH = b"\x00" * 12 + b"\x08\x00"  # two zero MAC addresses, EtherType IPv4


def _ipv4_udp(payload: bytes, sport: int = 6000, dport: int = 6002) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    checksum = 0
    for (word,) in struct.iter_unpack("!H", header):
        checksum += word
    checksum = (checksum & 0xFFFF) + (checksum >> 16)
    header = header[:10] + struct.pack("!H", ~checksum & 0xFFFF) + header[12:]
    return header + udp


def rtp_packets(payloads: Iterable[bytes], pt: int = 0, ssrc: int = 0x5150) -> list[bytes]:
    """One RTP packet per 20 ms payload of 160 samples (RFC 3550 5.1 header, no CSRC)."""
    out = []
    for n, payload in enumerate(payloads):
        marker = 0x80 if n == 0 else 0
        out.append(struct.pack("!BBHII", 0x80, marker | pt, n, n * 160, ssrc) + payload)
    return out


def write_pcap(path: Path, packets: list[bytes], ptime: float = 0.02) -> Path:
    """A pcap (LINKTYPE_ETHERNET) with ``packets`` as UDP payloads, ``ptime`` seconds apart."""
    parts = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for n, packet in enumerate(packets):
        frame = _ETH + _ipv4_udp(packet)
        at = 1_700_000_000 + n * ptime
        sec = int(at)
        usec = round((at - sec) * 1_000_000)
        parts.append(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(parts))
    return path
