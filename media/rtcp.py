"""RTCP packets (RFC 3550 6.4 to 6.6) and compound packets (RFC 3550 6.1).

Each packet type is a dataclass with ``parse(data)`` (one whole packet, common header included)
and ``bytes(packet)``. :func:`parse_compound` splits a compound datagram; packet types other
than SR, RR, SDES and BYE (APP, feedback, XR) come back as :class:`RtcpUnknown` with their body
kept, so a compound packet serialises back to the same bytes. Padding (the P bit, allowed on
the last packet of a compound) is stripped on parse and never emitted.

:func:`build_report` turns :class:`media.rtp.RtpStats` into a reception report block. Wall-clock
time for NTP timestamps and the arrival time of the last SR are passed in; nothing here reads a
clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

from media.rtp import RtpStats

__all__ = [
    "NTP_UNIX_OFFSET",
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "SDES_CNAME",
    "ReportBlock",
    "RtcpBye",
    "RtcpPacket",
    "RtcpReceiverReport",
    "RtcpSdes",
    "RtcpSenderReport",
    "RtcpUnknown",
    "SdesChunk",
    "SdesItem",
    "build_report",
    "ntp_from_unix",
    "ntp_middle32",
    "parse_compound",
    "serialize_compound",
    "unix_from_ntp",
]

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
#: SDES item type of the canonical name (RFC 3550 6.5.1).
SDES_CNAME = 1
#: Seconds from the NTP epoch (1900) to the Unix epoch (1970).
NTP_UNIX_OFFSET = 2208988800

_HEADER = struct.Struct("!BBH")
_BLOCK = struct.Struct("!IB3sIIII")
_SENDER_INFO = struct.Struct("!IQIII")


def ntp_from_unix(seconds: float) -> int:
    """The 64-bit NTP timestamp (RFC 3550 4) of a Unix time in seconds."""
    whole = int(seconds)
    frac = int((seconds - whole) * (1 << 32)) & 0xFFFFFFFF
    return (((whole + NTP_UNIX_OFFSET) & 0xFFFFFFFF) << 32) | frac


def unix_from_ntp(ntp: int) -> float:
    """The Unix time in seconds of a 64-bit NTP timestamp."""
    return (ntp >> 32) - NTP_UNIX_OFFSET + (ntp & 0xFFFFFFFF) / (1 << 32)


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp, as carried in LSR (RFC 3550 6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


def _split_header(data: bytes, expected_type: int | None) -> tuple[int, int, bytes]:
    """Check one packet's common header; return ``(count, packet_type, body)``."""
    if len(data) < 4:
        raise ValueError("RTCP packet is truncated")
    first, packet_type, words = _HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise ValueError(f"RTCP packet has unsupported version {first >> 6}")
    if expected_type is not None and packet_type != expected_type:
        raise ValueError(f"RTCP packet type {packet_type} is not {expected_type}")
    end = 4 * (words + 1)
    if end > len(data):
        raise ValueError("RTCP packet length exceeds the data")
    if end < len(data):
        raise ValueError("RTCP packet has trailing data")
    body = bytes(data[4:end])
    if first & 0x20:
        # RFC 3550 6.4.1: the last octet counts the padding, itself included.
        pad = body[-1] if body else 0
        if pad == 0 or pad > len(body):
            raise ValueError("RTCP packet has an invalid padding length")
        body = body[:-pad]
    return first & 0x1F, packet_type, body


def _pack(count: int, packet_type: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise ValueError("RTCP packet body must be a multiple of 4 bytes")
    if not 0 <= count <= 31:
        raise ValueError("RTCP count field must be 0..31")
    return _HEADER.pack(0x80 | count, packet_type, len(body) // 4) + body


@dataclass(slots=True)
class ReportBlock:
    """One reception report block (RFC 3550 6.4.1)."""

    ssrc: int
    #: Fraction lost since the previous report, in 1/256 units.
    fraction_lost: int = 0
    #: Cumulative packets lost, 24-bit signed.
    packets_lost: int = 0
    highest_sequence: int = 0
    #: Interarrival jitter in timestamp units.
    jitter: int = 0
    #: Middle 32 bits of the NTP timestamp of the last SR received from this source.
    lsr: int = 0
    #: Delay since that SR, in units of 1/65536 s.
    dlsr: int = 0

    SIZE: ClassVar[int] = 24

    @classmethod
    def parse(cls, data: bytes) -> ReportBlock:
        """Parse a 24-byte report block."""
        if len(data) < cls.SIZE:
            raise ValueError("RTCP report block is truncated")
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data)
        return cls(
            ssrc=ssrc,
            fraction_lost=fraction,
            packets_lost=int.from_bytes(lost, "big", signed=True),
            highest_sequence=highest,
            jitter=jitter,
            lsr=lsr,
            dlsr=dlsr,
        )

    def __bytes__(self) -> bytes:
        if not -0x800000 <= self.packets_lost <= 0x7FFFFF:
            raise ValueError("RTCP cumulative loss must fit 24 bits signed")
        return _BLOCK.pack(
            self.ssrc,
            self.fraction_lost,
            self.packets_lost.to_bytes(3, "big", signed=True),
            self.highest_sequence,
            self.jitter,
            self.lsr,
            self.dlsr,
        )


def _parse_blocks(count: int, body: bytes, offset: int) -> tuple[list[ReportBlock], bytes]:
    end = offset + count * ReportBlock.SIZE
    if end > len(body):
        raise ValueError("RTCP packet has truncated report blocks")
    blocks = [ReportBlock.parse(body[i : i + 24]) for i in range(offset, end, 24)]
    return blocks, body[end:]


@dataclass(slots=True)
class RtcpSenderReport:
    """Sender report, SR (RFC 3550 6.4.1)."""

    ssrc: int
    #: 64-bit NTP timestamp of the wall clock when the report was sent.
    ntp_timestamp: int = 0
    rtp_timestamp: int = 0
    packet_count: int = 0
    octet_count: int = 0
    reports: list[ReportBlock] = field(default_factory=list)
    #: Profile-specific extension after the report blocks (kept verbatim).
    extension: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> RtcpSenderReport:
        """Parse one SR packet."""
        count, _, body = _split_header(data, RTCP_SR)
        if len(body) < 24:
            raise ValueError("RTCP sender report is truncated")
        ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body)
        blocks, rest = _parse_blocks(count, body, 24)
        return cls(ssrc, ntp, rtp_ts, packets, octets, blocks, rest)

    def __bytes__(self) -> bytes:
        body = _SENDER_INFO.pack(
            self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
        )
        body += b"".join(bytes(r) for r in self.reports) + self.extension
        return _pack(len(self.reports), RTCP_SR, body)


@dataclass(slots=True)
class RtcpReceiverReport:
    """Receiver report, RR (RFC 3550 6.4.2)."""

    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)
    #: Profile-specific extension after the report blocks (kept verbatim).
    extension: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> RtcpReceiverReport:
        """Parse one RR packet."""
        count, _, body = _split_header(data, RTCP_RR)
        if len(body) < 4:
            raise ValueError("RTCP receiver report is truncated")
        blocks, rest = _parse_blocks(count, body, 4)
        return cls(int.from_bytes(body[:4], "big"), blocks, rest)

    def __bytes__(self) -> bytes:
        body = self.ssrc.to_bytes(4, "big") + b"".join(bytes(r) for r in self.reports)
        return _pack(len(self.reports), RTCP_RR, body + self.extension)


@dataclass(frozen=True, slots=True)
class SdesItem:
    """One SDES item (RFC 3550 6.5): type 1..8 and up to 255 octets of text."""

    type: int
    value: bytes


@dataclass(slots=True)
class SdesChunk:
    """The SDES items of one source."""

    ssrc: int
    items: list[SdesItem] = field(default_factory=list)

    @property
    def cname(self) -> bytes | None:
        """The CNAME item's value, if present (RFC 3550 6.5.1)."""
        for item in self.items:
            if item.type == SDES_CNAME:
                return item.value
        return None


@dataclass(slots=True)
class RtcpSdes:
    """Source description, SDES (RFC 3550 6.5)."""

    chunks: list[SdesChunk] = field(default_factory=list)

    @classmethod
    def cname_packet(cls, ssrc: int, cname: bytes) -> RtcpSdes:
        """An SDES packet carrying one source's CNAME, as every compound packet must."""
        return cls([SdesChunk(ssrc, [SdesItem(SDES_CNAME, cname)])])

    @classmethod
    def parse(cls, data: bytes) -> RtcpSdes:
        """Parse one SDES packet."""
        count, _, body = _split_header(data, RTCP_SDES)
        chunks: list[SdesChunk] = []
        pos = 0
        for _ in range(count):
            if pos + 4 > len(body):
                raise ValueError("RTCP SDES chunk is truncated")
            chunk = SdesChunk(int.from_bytes(body[pos : pos + 4], "big"))
            pos += 4
            while True:
                if pos >= len(body):
                    raise ValueError("RTCP SDES chunk has no end item")
                item_type = body[pos]
                if item_type == 0:
                    # RFC 3550 6.5: a null item ends the list; pad to the next 32-bit word.
                    pos = (pos + 4) & ~3
                    break
                if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                    raise ValueError("RTCP SDES item is truncated")
                length = body[pos + 1]
                chunk.items.append(SdesItem(item_type, body[pos + 2 : pos + 2 + length]))
                pos += 2 + length
            chunks.append(chunk)
        return cls(chunks)

    def __bytes__(self) -> bytes:
        body = bytearray()
        for chunk in self.chunks:
            body += chunk.ssrc.to_bytes(4, "big")
            for item in chunk.items:
                if not 1 <= item.type <= 255 or len(item.value) > 255:
                    raise ValueError("RTCP SDES item must have type 1..255 and <= 255 octets")
                body += bytes((item.type, len(item.value))) + item.value
            # At least one null octet ends the chunk, then pad to 32 bits.
            body += bytes(4 - len(body) % 4)
        return _pack(len(self.chunks), RTCP_SDES, bytes(body))


@dataclass(slots=True)
class RtcpBye:
    """Goodbye, BYE (RFC 3550 6.6)."""

    sources: list[int] = field(default_factory=list)
    reason: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> RtcpBye:
        """Parse one BYE packet."""
        count, _, body = _split_header(data, RTCP_BYE)
        end = 4 * count
        if end > len(body):
            raise ValueError("RTCP BYE has truncated sources")
        sources = list(struct.unpack_from(f"!{count}I", body))
        reason = b""
        if end < len(body):
            length = body[end]
            if end + 1 + length > len(body):
                raise ValueError("RTCP BYE reason is truncated")
            reason = body[end + 1 : end + 1 + length]
        return cls(sources, reason)

    def __bytes__(self) -> bytes:
        body = b"".join(s.to_bytes(4, "big") for s in self.sources)
        if self.reason:
            if len(self.reason) > 255:
                raise ValueError("RTCP BYE reason must be <= 255 octets")
            body += bytes((len(self.reason),)) + self.reason
            body += bytes(-len(body) % 4)
        return _pack(len(self.sources), RTCP_BYE, body)


@dataclass(slots=True)
class RtcpUnknown:
    """A packet type this module does not interpret (APP, feedback, XR), kept verbatim."""

    packet_type: int
    count: int = 0
    body: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> RtcpUnknown:
        """Parse one packet of any type without looking inside."""
        count, packet_type, body = _split_header(data, None)
        return cls(packet_type, count, body)

    def __bytes__(self) -> bytes:
        return _pack(self.count, self.packet_type, self.body)


RtcpPacket = RtcpSenderReport | RtcpReceiverReport | RtcpSdes | RtcpBye | RtcpUnknown

_PARSERS: dict[int, type[RtcpSenderReport | RtcpReceiverReport | RtcpSdes | RtcpBye]] = {
    RTCP_SR: RtcpSenderReport,
    RTCP_RR: RtcpReceiverReport,
    RTCP_SDES: RtcpSdes,
    RTCP_BYE: RtcpBye,
}


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Split a compound RTCP datagram into its packets (RFC 3550 6.1).

    Raises :class:`ValueError` if any packet is malformed or the lengths do not add up. The
    first-packet-must-be-a-report rule is not enforced, so reduced-size RTCP (RFC 5506) parses.
    """
    packets: list[RtcpPacket] = []
    pos = 0
    size = len(data)
    if size == 0:
        raise ValueError("RTCP packet is truncated")
    while pos < size:
        if pos + 4 > size:
            raise ValueError("RTCP packet is truncated")
        end = pos + 4 * (int.from_bytes(data[pos + 2 : pos + 4], "big") + 1)
        if end > size:
            raise ValueError("RTCP packet length exceeds the data")
        if data[pos] & 0x20 and end != size:
            # RFC 3550 6.4.1: only the last packet of a compound may be padded.
            raise ValueError("RTCP padding is only allowed on the last packet")
        chunk = data[pos:end]
        parser = _PARSERS.get(data[pos + 1])
        packets.append(parser.parse(chunk) if parser else RtcpUnknown.parse(chunk))
        pos = end
    return packets


def serialize_compound(packets: list[RtcpPacket]) -> bytes:
    """Concatenate packets into one compound RTCP datagram."""
    return b"".join(bytes(p) for p in packets)


def build_report(
    stats: RtpStats,
    ssrc: int,
    *,
    last_sr_ntp: int | None = None,
    last_sr_arrival: float | None = None,
    now: float = 0.0,
) -> ReportBlock:
    """A reception report block about source *ssrc* from its statistics (RFC 3550 6.4.1, A.3).

    Closes the statistics' reporting interval (fraction lost). *last_sr_ntp* is the 64-bit NTP
    timestamp of the last SR received from the source and *last_sr_arrival* the time it arrived,
    on the same clock as *now* (seconds); without them LSR and DLSR are 0.
    """
    lost = max(-0x800000, min(0x7FFFFF, stats.cumulative_lost))
    lsr = dlsr = 0
    if last_sr_ntp is not None and last_sr_arrival is not None:
        lsr = ntp_middle32(last_sr_ntp)
        # DLSR is in units of 1/65536 s; never negative even if the clocks disagree.
        dlsr = min(0xFFFFFFFF, max(0, int((now - last_sr_arrival) * 65536)))
    return ReportBlock(
        ssrc=ssrc,
        fraction_lost=stats.take_fraction_lost(),
        packets_lost=lost,
        highest_sequence=stats.extended_highest_seq & 0xFFFFFFFF,
        jitter=min(stats.jitter, 0xFFFFFFFF),
        lsr=lsr,
        dlsr=dlsr,
    )
