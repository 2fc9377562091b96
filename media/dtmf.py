"""DTMF from the three places a phone puts it: RFC 4733 events, SIP INFO bodies, and the audio.

Whatever the source, a key press comes out as one :class:`DtmfDigit`, so the code that acts on
digits never needs to know which of the three detectors fired.

- :class:`TelephoneEvent` is the RFC 4733 2.3 payload (``parse`` / ``bytes``);
  :class:`Rfc4733Receiver` turns the packets of a telephone-event stream into digits, one per
  event however many redundant or retransmitted packets carry it, and
  :class:`Rfc4733Sender` produces the packets for a digit.
- :func:`parse_info_body` reads ``application/dtmf-relay`` and ``application/dtmf`` bodies of
  SIP INFO requests.
- :class:`InbandDetector` finds DTMF tones in PCM with Goertzel filters (:mod:`media.goertzel`).

All of it is sans-I/O: time, where it matters, is passed in as ``now`` (seconds, any monotonic
origin).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from media.goertzel import DetectorSettings, ToneTracker

__all__ = [
    "DTMF_EVENTS",
    "DetectorSettings",
    "DtmfDigit",
    "DtmfSource",
    "InbandDetector",
    "Rfc4733Packet",
    "Rfc4733Receiver",
    "Rfc4733Sender",
    "TelephoneEvent",
    "parse_info_body",
]

#: RFC 4733 3.2 (table 7): events 0-15 are the DTMF keys, in this order.
DTMF_EVENTS: Final = "0123456789*#ABCD"

DtmfSource = Literal["rfc4733", "info", "inband"]


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """One key press, from whichever source detected it."""

    digit: str
    """One of ``0123456789*#ABCD``."""
    duration_ms: int
    """How long the key was held, as the source reported or measured it."""
    source: DtmfSource
    """``"rfc4733"``, ``"info"`` or ``"inband"``."""


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """The RFC 4733 2.3 telephone-event payload: event, E bit, volume, duration."""

    event: int
    """Event code, 0-255; 0-15 are DTMF (RFC 4733 3.2)."""
    end: bool = False
    """The E bit: this packet reports the end of the event (RFC 4733 2.5.1.4)."""
    volume: int = 10
    """Power level as -dBm0, 0-63 (RFC 4733 2.3.4)."""
    duration: int = 0
    """Duration so far in RTP timestamp units, 0-65535 (RFC 4733 2.3.5)."""

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise ValueError(f"telephone-event code {self.event} out of range 0-255")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"telephone-event volume {self.volume} out of range 0-63")
        if not 0 <= self.duration <= 0xFFFF:
            raise ValueError(f"telephone-event duration {self.duration} out of range 0-65535")

    @property
    def digit(self) -> str | None:
        """The DTMF key for events 0-15, else ``None``."""
        return DTMF_EVENTS[self.event] if self.event < 16 else None

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview) -> TelephoneEvent:
        """Parse the first 4 bytes of a telephone-event payload.

        Raises ``ValueError`` for a payload shorter than 4 bytes. Extra bytes are ignored: one
        event per packet is all RFC 4733 2.5.1 sends without RFC 2198 redundancy.
        """
        if len(payload) < 4:
            raise ValueError(f"telephone-event payload is {len(payload)} bytes, needs 4")
        flags = payload[1]
        # RFC 4733 2.3: the R bit (0x40) is reserved; receivers ignore it.
        return cls(
            event=payload[0],
            end=bool(flags & 0x80),
            volume=flags & 0x3F,
            duration=(payload[2] << 8) | payload[3],
        )

    def __bytes__(self) -> bytes:
        flags = (0x80 if self.end else 0) | self.volume
        return bytes((self.event, flags, self.duration >> 8, self.duration & 0xFF))


class Rfc4733Receiver:
    """Digits from the telephone-event packets of one RTP stream.

    Theory of operation: all packets of one event carry the RTP timestamp of its start
    (RFC 4733 2.5.1.3), so the timestamp identifies the event; the marker bit, retransmitted
    start packets and the three redundant end packets (2.5.1.4) change nothing. The digit is
    emitted once, on the first end packet. If every end packet is lost, it is emitted when a
    packet of another event arrives or, through :meth:`poll`, once no packet of the event has
    arrived for ``timeout`` seconds. Timestamps of finished events are remembered for a while
    so that late copies of their packets are not taken for new key presses.

    Long events (RFC 4733 2.5.2.3) continue with a new timestamp, exactly one full duration
    later, with no marker; such a segment extends the event instead of starting a new one.
    """

    def __init__(self, clock_rate: int = 8000, timeout: float = 0.5) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive, got {clock_rate}")
        self.clock_rate = clock_rate
        #: Seconds without a packet after which an unfinished event is emitted by :meth:`poll`.
        self.timeout = timeout
        #: Packets that were not a valid telephone-event payload.
        self.malformed = 0
        self._timestamp: int | None = None
        self._event = 0
        self._duration = 0  # duration of the current segment, in timestamp units
        self._extra = 0  # duration of earlier segments of a long event
        self._done = True
        self._last_seen = 0.0
        self._finished: deque[int] = deque(maxlen=16)

    def feed(
        self, timestamp: int, marker: bool, payload: bytes | bytearray | memoryview, now: float
    ) -> list[DtmfDigit]:
        """Take one telephone-event RTP packet; return the digits it completes (0, 1 or 2)."""
        try:
            event = TelephoneEvent.parse(payload)
        except ValueError:
            self.malformed += 1
            return []
        timestamp &= 0xFFFFFFFF
        out: list[DtmfDigit] = []
        if timestamp == self._timestamp:
            self._last_seen = now
            if not self._done:
                self._duration = max(self._duration, event.duration)
                if event.end:
                    self._emit(out)
            return out
        if timestamp in self._finished:
            return out  # a late copy of an event already reported
        if self._continues(timestamp, marker, event):
            self._extra += self._duration
        else:
            if not self._done:
                self._emit(out)  # its end packets were lost: RFC 4733 2.5.2.1
            self._extra = 0
        self._timestamp = timestamp
        self._event = event.event
        self._duration = event.duration
        self._done = False
        self._last_seen = now
        if event.end:
            self._emit(out)
        return out

    def _continues(self, timestamp: int, marker: bool, event: TelephoneEvent) -> bool:
        # RFC 4733 2.5.2.3: the next segment starts where the saturated one ended.
        return (
            not marker
            and not self._done
            and self._timestamp is not None
            and event.event == self._event
            and self._duration >= 0xFFFF - self.clock_rate // 10
            and (timestamp - self._timestamp) & 0xFFFFFFFF == self._duration
        )

    def get_timer(self) -> float | None:
        """When :meth:`poll` should next be called, or ``None`` if no event is open."""
        return None if self._done else self._last_seen + self.timeout

    def poll(self, now: float) -> list[DtmfDigit]:
        """Emit an event whose end packets never came, once ``timeout`` has passed."""
        out: list[DtmfDigit] = []
        if not self._done and now >= self._last_seen + self.timeout:
            self._emit(out)
        return out

    def flush(self) -> list[DtmfDigit]:
        """Emit the open event now and forget the stream (its sender restarted with a new SSRC,
        whose timestamps say nothing about the old ones)."""
        out: list[DtmfDigit] = []
        if not self._done:
            self._emit(out)
        self._timestamp = None
        self._extra = 0
        self._finished.clear()
        return out

    def _emit(self, out: list[DtmfDigit]) -> None:
        self._done = True
        if self._timestamp is not None:
            self._finished.append(self._timestamp)
        digit = DTMF_EVENTS[self._event] if self._event < 16 else None
        if digit is not None:  # other events (flash, tones) are not key presses
            total = self._extra + self._duration
            out.append(DtmfDigit(digit, round(total * 1000 / self.clock_rate), "rfc4733"))


@dataclass(frozen=True, slots=True)
class Rfc4733Packet:
    """One packet of a telephone event, as :class:`Rfc4733Sender` plans it."""

    offset_ms: float
    """When to send it, counted from the start of the key press."""
    marker: bool
    """RTP marker bit: set on the first packet of the event only (RFC 4733 2.5.1.3)."""
    payload: bytes
    """The telephone-event payload; every packet of the event uses the same RTP timestamp."""


class Rfc4733Sender:
    """Plans the telephone-event packets for a key press (RFC 4733 2.5.1).

    The first packet goes out one ``ptime`` into the tone with the marker bit; updates with the
    growing duration follow every ``update_ms`` (RFC 4733 2.5.1.2 suggests 50 ms); the end
    packet is sent three times, ``ptime`` apart, with the final duration (2.5.1.4).
    """

    def __init__(
        self, ptime_ms: int = 20, clock_rate: int = 8000, volume: int = 10, update_ms: int = 50
    ) -> None:
        if ptime_ms <= 0 or update_ms <= 0 or clock_rate <= 0:
            raise ValueError("ptime, update interval and clock rate must be positive")
        if not 0 <= volume <= 63:
            raise ValueError(f"volume {volume} out of range 0-63")
        self.ptime_ms = ptime_ms
        self.clock_rate = clock_rate
        self.volume = volume
        self.update_ms = update_ms

    def packets(self, digit: str, duration_ms: int = 100) -> list[Rfc4733Packet]:
        """The packets for one key press of ``digit`` held for ``duration_ms``."""
        if len(digit) != 1 or digit.upper() not in DTMF_EVENTS:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        if duration_ms <= 0:
            raise ValueError(f"duration must be positive, got {duration_ms}")
        event = DTMF_EVENTS.index(digit.upper())
        total = round(duration_ms * self.clock_rate / 1000)
        if total > 0xFFFF:
            raise ValueError(f"duration {duration_ms} ms exceeds one event segment")
        out: list[Rfc4733Packet] = []
        offset = float(min(self.ptime_ms, duration_ms))
        while offset < duration_ms:
            units = round(offset * self.clock_rate / 1000)
            payload = bytes(TelephoneEvent(event, False, self.volume, units))
            out.append(Rfc4733Packet(offset, not out, payload))
            offset += self.update_ms
        end = bytes(TelephoneEvent(event, True, self.volume, total))
        for i in range(3):
            out.append(Rfc4733Packet(float(duration_ms + i * self.ptime_ms), not out, end))
        return out


_INFO_DEFAULT_DURATION_MS: Final = 250


def parse_info_body(content_type: str, body: bytes) -> DtmfDigit | None:
    """The digit in a SIP INFO body, or ``None`` if it carries none.

    ``application/dtmf-relay`` (the de facto Cisco format: ``Signal=5`` and ``Duration=160``
    lines) and ``application/dtmf`` (the key alone) are understood; ``Signal`` may also be an
    RFC 4733 event number (10 for ``*``, 11 for ``#``), as some phones send. A missing or bad
    duration becomes 250 ms.
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    try:
        text = body.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if media_type == "application/dtmf":
        digit = _info_digit(text)
        return None if digit is None else DtmfDigit(digit, _INFO_DEFAULT_DURATION_MS, "info")
    if media_type != "application/dtmf-relay":
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    digit = _info_digit(fields.get("signal", ""))
    if digit is None:
        return None
    duration = _INFO_DEFAULT_DURATION_MS
    raw = fields.get("duration", "")
    if raw.isdigit() and 0 < int(raw) <= 60_000:
        duration = int(raw)
    return DtmfDigit(digit, duration, "info")


def _info_digit(value: str) -> str | None:
    value = value.strip().upper()
    if len(value) == 1 and value in DTMF_EVENTS:
        return value
    if value.isdigit() and 10 <= int(value) <= 15:
        return DTMF_EVENTS[int(value)]
    return None


class InbandDetector:
    """DTMF key presses in 16-bit PCM, one :class:`DtmfDigit` per press.

    Feed consecutive frames of any length; a digit is returned when its tone has ended (the
    first ``settings.min_gap_ms`` of silence after it), with its measured duration. See
    :mod:`media.goertzel` for the checks each block passes.
    """

    def __init__(self, sample_rate: int = 8000, settings: DetectorSettings | None = None) -> None:
        self._tracker = ToneTracker(sample_rate, settings or DetectorSettings())
        self.sample_rate = sample_rate

    @property
    def active(self) -> bool:
        """True while a tone is in progress; feeding silence ends it (and reports it)."""
        return self._tracker.active

    def reset(self) -> None:
        """Drop any tone in progress without reporting it (the audio stream was replaced)."""
        self._tracker.reset()

    def feed(self, pcm: npt.NDArray[np.int16]) -> list[DtmfDigit]:
        """Analyse the next samples; return the key presses that ended in them."""
        if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16:
            raise TypeError("InbandDetector.feed expects a numpy int16 array")
        ended = self._tracker.feed(pcm.reshape(-1).astype(np.float64))
        return [DtmfDigit(key, math.floor(ms + 0.5), "inband") for key, ms in ended]
