"""RTP data packets (RFC 3550 5.1) and receiver statistics (RFC 3550 A.1, A.8).

:class:`RtpPacket` parses and serialises one packet: ``RtpPacket.parse(data)`` and
``bytes(packet)`` are exact inverses for any packet whose padding octets are zero (the padding
content is not kept, only its length). :func:`peek_header` reads the fixed header alone for hot
paths that only need the sequence number or SSRC.

:class:`RtpStats` is the per-source bookkeeping a receiver keeps for its reception reports:
extended highest sequence number, packets expected and lost, fraction lost per reporting
interval and interarrival jitter. It is pure: arrival times are passed in.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = [
    "MAX_DROPOUT",
    "MAX_MISORDER",
    "MIN_SEQUENTIAL",
    "RTP_HEADER_SIZE",
    "RtpPacket",
    "RtpStats",
    "peek_header",
    "seq_diff",
    "seq_gt",
]

#: Size of the fixed RTP header (RFC 3550 5.1).
RTP_HEADER_SIZE = 12
#: RFC 3550 A.1: a forward jump of fewer packets than this is ordinary loss.
MAX_DROPOUT = 3000
#: RFC 3550 A.1: a backward step of up to this many packets is a late or duplicate packet.
MAX_MISORDER = 100
#: RFC 3550 A.1: sequential packets needed before a new source is believed.
MIN_SEQUENTIAL = 2

_SEQ_MOD = 1 << 16
_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")


def seq_gt(a: int, b: int) -> bool:
    """Whether 16-bit sequence number *a* comes after *b*, allowing for wrap (RFC 3550 A.1)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between 16-bit sequence numbers, in ``[-32768, 32767]``."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def peek_header(data: bytes) -> tuple[int, int, int, int, bool]:
    """Read ``(payload_type, sequence_number, timestamp, ssrc, marker)`` from the fixed header.

    Only the length and version are checked; the rest of the packet is not looked at.
    """
    if len(data) < RTP_HEADER_SIZE:
        raise ValueError("RTP packet is truncated")
    first, second, seq, ts, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise ValueError(f"RTP packet has unsupported version {first >> 6}")
    return second & 0x7F, seq, ts, ssrc, bool(second & 0x80)


@dataclass(slots=True)
class RtpPacket:
    """One RTP data packet (RFC 3550 5.1). The version is always 2."""

    payload_type: int = 0
    marker: bool = False
    sequence_number: int = 0
    timestamp: int = 0
    ssrc: int = 0
    csrc: list[int] = field(default_factory=list)
    #: Profile-defined 16 bits of the header extension (RFC 3550 5.3.1).
    extension_profile: int = 0
    #: Header extension data (a multiple of 4 bytes); ``None`` when the X bit is clear.
    extension: bytes | None = None
    payload: bytes = b""
    #: Number of padding octets, including the final count octet; 0 when the P bit is clear.
    padding_size: int = 0

    @property
    def version(self) -> int:
        """The RTP version, always 2."""
        return 2

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one RTP packet; raise :class:`ValueError` naming what is wrong."""
        size = len(data)
        if size < RTP_HEADER_SIZE:
            raise ValueError("RTP packet is truncated")
        first, second, seq, ts, ssrc = _HEADER.unpack_from(data)
        version = first >> 6
        if version != 2:
            raise ValueError(f"RTP packet has unsupported version {version}")
        cc = first & 0x0F
        pos = RTP_HEADER_SIZE + 4 * cc
        if pos > size:
            raise ValueError("RTP packet has truncated CSRC")
        csrc = list(struct.unpack_from(f"!{cc}I", data, RTP_HEADER_SIZE)) if cc else []
        ext_profile = 0
        extension: bytes | None = None
        if first & 0x10:
            # RFC 3550 5.3.1: 16-bit profile field, 16-bit length in 32-bit words.
            if pos + 4 > size:
                raise ValueError("RTP packet has truncated extension header")
            ext_profile, ext_words = _EXT_HEADER.unpack_from(data, pos)
            pos += 4
            end = pos + 4 * ext_words
            if end > size:
                raise ValueError("RTP packet has truncated extension")
            extension = bytes(data[pos:end])
            pos = end
        end = size
        padding_size = 0
        if first & 0x20:
            # RFC 3550 5.1: the last octet counts the padding octets, itself included.
            padding_size = data[-1]
            if padding_size == 0:
                raise ValueError("RTP packet has zero padding length")
            if padding_size > size - pos:
                raise ValueError("RTP packet padding length exceeds the payload")
            end = size - padding_size
        return cls(
            payload_type=second & 0x7F,
            marker=bool(second & 0x80),
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            csrc=csrc,
            extension_profile=ext_profile,
            extension=extension,
            payload=bytes(data[pos:end]),
            padding_size=padding_size,
        )

    def __bytes__(self) -> bytes:
        cc = len(self.csrc)
        if cc > 15:
            raise ValueError("RTP packet cannot carry more than 15 CSRC")
        if not 0 <= self.padding_size <= 255:
            raise ValueError("RTP padding size must be 0..255")
        first = 0x80 | cc
        if self.padding_size:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        out = _HEADER.pack(
            first,
            (self.marker << 7) | (self.payload_type & 0x7F),
            self.sequence_number & 0xFFFF,
            self.timestamp & 0xFFFFFFFF,
            self.ssrc & 0xFFFFFFFF,
        )
        if cc:
            out += struct.pack(f"!{cc}I", *self.csrc)
        if self.extension is not None:
            words, rest = divmod(len(self.extension), 4)
            if rest:
                raise ValueError("RTP header extension length must be a multiple of 4 bytes")
            out += _EXT_HEADER.pack(self.extension_profile, words) + self.extension
        out += self.payload
        if self.padding_size:
            out += bytes(self.padding_size - 1) + bytes((self.padding_size,))
        return out


class RtpStats:
    """Reception statistics for one source (RFC 3550 A.1 sequence validation, A.8 jitter).

    Feed every packet to :meth:`update`. A new source is on probation until
    :data:`MIN_SEQUENTIAL` packets arrive in sequence; a jump of :data:`MAX_DROPOUT` or more is
    believed (the sender restarted) only when the next packet follows it.
    """

    __slots__ = (
        "_bad_seq",
        "_base_seq",
        "_clock_rate",
        "_cycles",
        "_expected_prior",
        "_jitter",
        "_max_seq",
        "_probation",
        "_received",
        "_received_prior",
        "_started",
        "_transit",
    )

    def __init__(self) -> None:
        self._started = False
        self._base_seq = 0
        self._max_seq = 0
        self._bad_seq = _SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._probation = MIN_SEQUENTIAL
        self._transit: float | None = None
        self._jitter = 0.0
        self._clock_rate = 8000

    def _init_seq(self, seq: int) -> None:
        # RFC 3550 A.1 init_seq()
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = _SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._transit = None

    def update(self, seq: int, timestamp: int, arrival: float, clock_rate: int) -> bool:
        """Account one packet that arrived at *arrival* seconds; return whether it is valid.

        Invalid packets (on probation, or an unconfirmed large jump) are not counted.
        """
        if not self._started:
            # RFC 3550 A.1: a new source starts on probation.
            self._started = True
            self._init_seq(seq)
            self._max_seq = (seq - 1) & 0xFFFF
            self._probation = MIN_SEQUENTIAL
        udelta = (seq - self._max_seq) & 0xFFFF
        if self._probation:
            if seq == (self._max_seq + 1) & 0xFFFF:
                self._probation -= 1
                self._max_seq = seq
                if self._probation == 0:
                    self._init_seq(seq)
                    self._count(timestamp, arrival, clock_rate)
                    return True
            else:
                self._probation = MIN_SEQUENTIAL - 1
                self._max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            if seq < self._max_seq:
                # Wrapped: count another 64K cycle.
                self._cycles += _SEQ_MOD
            self._max_seq = seq
        elif udelta <= _SEQ_MOD - MAX_MISORDER:
            if seq == self._bad_seq:
                # Two sequential packets after a jump: the sender restarted (RFC 3550 A.1).
                self._init_seq(seq)
            else:
                self._bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: duplicate or reordered packet, counted as received.
        self._count(timestamp, arrival, clock_rate)
        return True

    def _count(self, timestamp: int, arrival: float, clock_rate: int) -> None:
        self._received += 1
        self._clock_rate = clock_rate
        # RFC 3550 A.8: transit time in timestamp units; J += (|D| - J) / 16.
        transit = arrival * clock_rate - timestamp
        if self._transit is not None:
            d = transit - self._transit
            # The RTP timestamp wraps at 2**32; take the short way round.
            d = (d + 2.0**31) % 2.0**32 - 2.0**31
            self._jitter += (abs(d) - self._jitter) / 16.0
        self._transit = transit

    @property
    def extended_highest_seq(self) -> int:
        """Highest sequence number received, with wrap cycles in the upper 16 bits."""
        return self._cycles + self._max_seq

    @property
    def base_seq(self) -> int:
        """First valid sequence number of this source."""
        return self._base_seq

    @property
    def received(self) -> int:
        """Valid packets received (duplicates included, as in RFC 3550 A.3)."""
        return self._received

    @property
    def expected(self) -> int:
        """Packets expected from the first to the highest sequence number (RFC 3550 A.3)."""
        if self._probation or not self._started:
            return 0
        return self.extended_highest_seq - self._base_seq + 1

    @property
    def cumulative_lost(self) -> int:
        """Packets expected minus packets received; negative when duplicates arrived."""
        return self.expected - self._received

    @property
    def jitter(self) -> int:
        """Interarrival jitter estimate in timestamp units (RFC 3550 A.8)."""
        return int(self._jitter)

    @property
    def jitter_seconds(self) -> float:
        """Interarrival jitter estimate in seconds, at the last packet's clock rate."""
        return self._jitter / self._clock_rate

    def take_fraction_lost(self) -> int:
        """Fraction lost since the previous call, in 1/256 units; starts a new interval.

        RFC 3550 A.3: duplicates can make the interval's loss negative, reported as 0.
        """
        expected = self.expected
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self._received - self._received_prior
        self._received_prior = self._received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            return 0
        return min(255, (lost_interval << 8) // expected_interval)
