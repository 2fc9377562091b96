"""Key presses from every DTMF source of a call, as one stream of :class:`DigitEvent`.

A phone can signal a key three ways: RFC 4733 telephone-events in its RTP, a SIP INFO request
(``application/dtmf-relay`` or ``application/dtmf``), or the dual tone itself in the audio.
Which of them the PBX listens to is set per user or trunk with a :class:`DtmfMode`:

==========  ===================================================================================
``auto``    RFC 4733 when ``telephone-event`` was negotiated in the SDP, else in-band; SIP INFO
            is always accepted
``rfc4733`` RFC 4733 only
``info``    SIP INFO only
``inband``  in-band tones only
==========  ===================================================================================

Theory of operation for duplicates: many phones send one key press two ways at once (RFC 4733
and INFO; or RFC 4733 while the tone still leaks into the audio). The detectors report a press
at different moments: INFO usually when the key goes down, RFC 4733 on its end packet (when the
key comes up), the in-band detector after the tone and a short silence, behind the jitter
buffer. :class:`DigitCollector` therefore keeps the events it emitted for a short while, each
with the set of sources that reported it. A digit from source S is the *same* key press as an
earlier event with the same digit when S has not reported that event yet and the two are close
in time (``window`` plus the longer of the two durations, since a long press moves the RFC 4733
report away from the INFO one). Otherwise it is a new key press: two presses of the same key
from the same source are never merged, however fast they come.

Sans-I/O: time is passed in as ``now`` (seconds, any monotonic origin).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from media.dtmf import DtmfDigit, DtmfSource, parse_info_body

__all__ = ["DigitCollector", "DigitEvent", "DigitSource", "DtmfMode"]

DigitSource = DtmfSource
"""``"rfc4733"``, ``"info"`` or ``"inband"``."""

#: Default matching window for the same press reported by two sources, in seconds.
DEFAULT_WINDOW: Final = 0.4
_LONGEST_PRESS_S: Final = 60.0
# Emitted events remembered for matching; a person cannot press more keys than this in a window.
_HISTORY: Final = 32


class DtmfMode(StrEnum):
    """How the PBX listens for keys from a phone (``users[].dtmf_mode`` in the config)."""

    AUTO = "auto"
    RFC4733 = "rfc4733"
    INFO = "info"
    INBAND = "inband"


@dataclass(frozen=True, slots=True)
class DigitEvent:
    """One key press, whichever source reported it first."""

    digit: str
    """One of ``0123456789*#ABCD``."""
    source: DigitSource
    """The source that reported the press first: ``"rfc4733"``, ``"info"`` or ``"inband"``."""
    at: float
    """The ``now`` at which the press was detected, in seconds."""
    duration_ms: int | None
    """How long the key was held as that source reported or measured it, if known."""


@dataclass(slots=True)
class _Recent:
    event: DigitEvent
    sources: set[str]


class DigitCollector:
    """Decides which DTMF sources are listened to and merges one press reported twice.

    Feed it with :meth:`offer` (a :class:`~media.dtmf.DtmfDigit` from any detector) or
    :meth:`offer_info` (a SIP INFO body); take the key presses with :meth:`drain`.
    """

    __slots__ = ("_queue", "_recent", "_sources", "_telephone_event", "duplicates", "ignored",
                 "mode", "window")

    def __init__(
        self,
        mode: DtmfMode | str = DtmfMode.AUTO,
        telephone_event: bool = False,
        *,
        window: float = DEFAULT_WINDOW,
    ) -> None:
        try:
            self.mode = DtmfMode(mode)
        except ValueError:
            choices = ", ".join(m.value for m in DtmfMode)
            raise ValueError(f"unknown DTMF mode {mode!r}; expected one of {choices}") from None
        if window < 0:
            raise ValueError(f"duplicate window must be >= 0 seconds, got {window}")
        #: Seconds within which the same digit from another source is the same key press.
        self.window = window
        self._telephone_event = telephone_event
        self._sources = _listened(self.mode, telephone_event)
        self._recent: deque[_Recent] = deque(maxlen=_HISTORY)
        self._queue: list[DigitEvent] = []
        #: Digits dropped as a second report of a press already emitted.
        self.duplicates = 0
        #: Digits dropped because the mode does not listen to their source.
        self.ignored = 0

    @property
    def telephone_event(self) -> bool:
        """Whether ``telephone-event`` was negotiated (decides ``auto``)."""
        return self._telephone_event

    def set_telephone_event(self, negotiated: bool) -> None:
        """A new SDP answer (re-INVITE) gained or lost ``telephone-event``."""
        self._telephone_event = negotiated
        self._sources = _listened(self.mode, negotiated)

    def listens(self, source: DigitSource) -> bool:
        """Whether digits from ``source`` are accepted in this mode."""
        return source in self._sources

    def offer(self, digit: DtmfDigit, now: float) -> DigitEvent | None:
        """Take one digit from a detector. Returns the new :class:`DigitEvent` (also queued for
        :meth:`drain`), or ``None`` when the source is not listened to or the press was
        already reported by another source."""
        if digit.source not in self._sources:
            self.ignored += 1
            return None
        recent = self._recent
        while recent and _expired(recent[0].event, now, self.window):
            recent.popleft()
        for seen in recent:
            event = seen.event
            if (
                event.digit == digit.digit
                and digit.source not in seen.sources
                and abs(now - event.at) <= self.window + _longest_s(event, digit)
            ):
                seen.sources.add(digit.source)
                self.duplicates += 1
                return None
        new = DigitEvent(digit.digit, digit.source, now, digit.duration_ms)
        recent.append(_Recent(new, {digit.source}))
        self._queue.append(new)
        return new

    def offer_info(self, content_type: str, body: bytes, now: float) -> DigitEvent | None:
        """Take the body of a SIP INFO request; like :meth:`offer` for the digit it carries.

        Bodies that carry no DTMF (other content types, garbage) return ``None``.
        """
        digit = parse_info_body(content_type, body)
        return None if digit is None else self.offer(digit, now)

    def drain(self) -> list[DigitEvent]:
        """The key presses accepted since the last call, oldest first."""
        out = self._queue
        if out:
            self._queue = []
        return out

    def __len__(self) -> int:
        """Number of key presses waiting to be drained."""
        return len(self._queue)


def _listened(mode: DtmfMode, telephone_event: bool) -> frozenset[str]:
    if mode is DtmfMode.AUTO:
        return frozenset(("rfc4733", "info") if telephone_event else ("inband", "info"))
    return frozenset((mode.value,))


def _longest_s(event: DigitEvent, digit: DtmfDigit) -> float:
    return max(event.duration_ms or 0, digit.duration_ms) / 1000.0


def _expired(event: DigitEvent, now: float, window: float) -> bool:
    # Nothing a detector reports can match an event older than the window plus the longest
    # press a source reports (INFO durations are capped at 60 s by media.dtmf).
    return now - event.at > window + _LONGEST_PRESS_S
