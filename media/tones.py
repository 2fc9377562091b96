"""Call-progress tones (ringback, busy, dial), beeps and silence as 20 ms engine frames.

All audio inside the media engine is mono int16 at 8,000 Hz (the G.711 rate, RFC 3551 4.5.14),
160 samples per 20 ms frame. A :class:`ToneSource` is a pull source: each
:meth:`ToneSource.next_frame` call returns the next 160 samples.

Tones are computed from the absolute sample index, so they are phase-continuous across frame
boundaries (no clicks between frames), and each "on" burst of a cadence has a short raised-cosine
ramp so that switching the tone on and off does not click either.

Regional plans follow ITU-T E.180 Supplement 2 ("Various tones used in national networks"):

=======  =============================================  ==============================
region   ringback                                       busy
=======  =============================================  ==============================
``us``   440+480 Hz, 2 s on / 4 s off                   480+620 Hz, 0.5 s on / 0.5 s off
``eu``   425 Hz, 1 s on / 4 s off (ETSI TR 101 041)     425 Hz, 0.5 s on / 0.5 s off
``uk``   400+450 Hz, 0.4 on 0.2 off 0.4 on 2 off        400 Hz, 0.375 s on / 0.375 s off
``jp``   400 Hz modulated by 16 Hz, 1 s on / 2 s off    400 Hz, 0.5 s on / 0.5 s off
=======  =============================================  ==============================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

SAMPLE_RATE = 8000
"""Engine sample rate in Hz (G.711, RFC 3551 4.5.14)."""
FRAME_SAMPLES = 160
"""Samples per 20 ms frame at :data:`SAMPLE_RATE`."""

Frame = NDArray[np.int16]
"""One 20 ms frame: a 1-D int16 array of :data:`FRAME_SAMPLES` samples."""

REGIONS = ("us", "eu", "uk", "jp")
"""Regions that have ringback, busy and dial tone plans."""

_RAMP_SAMPLES = 40  # 5 ms on/off ramp: long enough to avoid a click, short enough to keep cadence.
_DEFAULT_LEVEL = 0.25  # peak of the summed tone relative to full scale (about -12 dBFS).


@dataclass(frozen=True, slots=True)
class ToneSpec:
    """A tone plan: which frequencies sound and when.

    ``cadence`` lists ``(on_seconds, off_seconds)`` pairs that make up one cycle; an empty
    cadence means a continuous tone. ``modulation_hz`` multiplies the tone by
    ``(1 + cos(2 pi f t)) / 2`` (Japanese ringback is 400 Hz modulated by 16 Hz).
    ``repeat=False`` plays the cycle once and silence after it.
    """

    frequencies: tuple[float, ...]
    cadence: tuple[tuple[float, float], ...] = ()
    modulation_hz: float | None = None
    level: float = _DEFAULT_LEVEL
    repeat: bool = True

    def __post_init__(self) -> None:
        if not self.frequencies:
            raise ValueError("a tone needs at least one frequency")
        for freq in self.frequencies:
            if not 0 < freq < SAMPLE_RATE / 2:
                raise ValueError(f"tone frequency {freq} Hz is outside 0..{SAMPLE_RATE // 2} Hz")
        for on, off in self.cadence:
            if on < 0 or off < 0 or on + off <= 0:
                raise ValueError(f"bad cadence step ({on}, {off}): durations must be >= 0")
        if not 0 < self.level <= 1:
            raise ValueError(f"tone level {self.level} must be in (0, 1]")

    @property
    def cycle_seconds(self) -> float:
        """Length of one cadence cycle (0 for a continuous tone)."""
        return sum(on + off for on, off in self.cadence)


_RINGBACK: dict[str, ToneSpec] = {
    "us": ToneSpec((440.0, 480.0), ((2.0, 4.0),)),
    "eu": ToneSpec((425.0,), ((1.0, 4.0),)),
    "uk": ToneSpec((400.0, 450.0), ((0.4, 0.2), (0.4, 2.0))),
    "jp": ToneSpec((400.0,), ((1.0, 2.0),), modulation_hz=16.0),
}
_BUSY: dict[str, ToneSpec] = {
    "us": ToneSpec((480.0, 620.0), ((0.5, 0.5),)),
    "eu": ToneSpec((425.0,), ((0.5, 0.5),)),
    "uk": ToneSpec((400.0,), ((0.375, 0.375),)),
    "jp": ToneSpec((400.0,), ((0.5, 0.5),)),
}
_DIAL: dict[str, ToneSpec] = {
    "us": ToneSpec((350.0, 440.0)),
    "eu": ToneSpec((425.0,)),
    "uk": ToneSpec((350.0, 450.0)),
    "jp": ToneSpec((400.0,)),
}


def _plan(table: dict[str, ToneSpec], region: str, kind: str) -> ToneSpec:
    try:
        return table[region]
    except KeyError:
        raise ValueError(
            f"no {kind} tone for region {region!r}; known regions: {', '.join(REGIONS)}"
        ) from None


def ringback_spec(region: str = "us") -> ToneSpec:
    """The ringback (alerting) tone plan of ``region``; ValueError for an unknown region."""
    return _plan(_RINGBACK, region, "ringback")


def busy_spec(region: str = "us") -> ToneSpec:
    """The busy tone plan of ``region``; ValueError for an unknown region."""
    return _plan(_BUSY, region, "busy")


def dial_spec(region: str = "us") -> ToneSpec:
    """The continuous dial tone plan of ``region``; ValueError for an unknown region."""
    return _plan(_DIAL, region, "dial")


def beep_spec(frequency: float = 1000.0, seconds: float = 0.2) -> ToneSpec:
    """A single beep (e.g. the "start recording" or voicemail beep), played once."""
    return ToneSpec((frequency,), ((seconds, 0.0),), repeat=False)


def _envelope(spec: ToneSpec) -> NDArray[np.float64] | None:
    """One cycle's on/off gain, with raised-cosine ramps at each burst edge."""
    if not spec.cadence:
        return None
    parts: list[NDArray[np.float64]] = []
    for on, off in spec.cadence:
        n_on = round(on * SAMPLE_RATE)
        n_off = round(off * SAMPLE_RATE)
        burst = np.ones(n_on, dtype=np.float64)
        ramp = min(_RAMP_SAMPLES, n_on // 2)
        if ramp:
            rise = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
            burst[:ramp] = rise
            burst[n_on - ramp :] = rise[::-1]
        parts.append(burst)
        parts.append(np.zeros(n_off, dtype=np.float64))
    return np.concatenate(parts)


class ToneSource:
    """Pull source of 20 ms frames for one tone plan.

    ``next_frame()`` always returns a frame; a non-repeating tone (a beep) returns silence once
    it has played, and :attr:`done` tells the caller it has finished.
    """

    def __init__(self, spec: ToneSpec) -> None:
        self._spec = spec
        self._envelope = _envelope(spec)
        self._freqs = np.asarray(spec.frequencies, dtype=np.float64)[:, None]
        # Equal share per component so the sum never exceeds ``level``.
        self._amplitude = spec.level * 32767.0 / len(spec.frequencies)
        self._position = 0  # absolute sample index: keeps the phase continuous across frames.

    @property
    def spec(self) -> ToneSpec:
        """The tone plan being played."""
        return self._spec

    @property
    def done(self) -> bool:
        """True once a non-repeating tone has played completely."""
        return (
            not self._spec.repeat
            and self._envelope is not None
            and self._position >= len(self._envelope)
        )

    def reset(self) -> None:
        """Start again from the beginning of the cadence."""
        self._position = 0

    def next_frame(self) -> Frame:
        """The next 160 samples of the tone."""
        if self.done:
            return silence_frame()
        n = self._position + np.arange(FRAME_SAMPLES, dtype=np.int64)
        self._position += FRAME_SAMPLES
        t = n.astype(np.float64) / SAMPLE_RATE
        wave = np.sin(2.0 * np.pi * self._freqs * t).sum(axis=0)
        if self._spec.modulation_hz is not None:
            wave *= 0.5 + 0.5 * np.cos(2.0 * np.pi * self._spec.modulation_hz * t)
        if self._envelope is not None:
            cycle = len(self._envelope)
            if self._spec.repeat:
                gain = self._envelope[n % cycle]
            else:
                gain = np.zeros(FRAME_SAMPLES, dtype=np.float64)
                inside = n < cycle
                gain[inside] = self._envelope[n[inside]]
            wave *= gain
        out: Frame = np.rint(wave * self._amplitude).astype(np.int16)
        return out


def silence_frame() -> Frame:
    """One 20 ms frame of digital silence."""
    return np.zeros(FRAME_SAMPLES, dtype=np.int16)


def silence(frames: int) -> list[Frame]:
    """``frames`` frames of silence (``frames`` >= 0)."""
    if frames < 0:
        raise ValueError(f"frame count must be >= 0, got {frames}")
    return [silence_frame() for _ in range(frames)]


def ringback(region: str = "us") -> ToneSource:
    """Ringback tone source for ``region`` (``us``, ``eu``, ``uk``, ``jp``)."""
    return ToneSource(ringback_spec(region))


def busy(region: str = "us") -> ToneSource:
    """Busy tone source for ``region``."""
    return ToneSource(busy_spec(region))


def dial_tone(region: str = "us") -> ToneSource:
    """Continuous dial tone source for ``region``."""
    return ToneSource(dial_spec(region))


def beep(frequency: float = 1000.0, seconds: float = 0.2) -> list[Frame]:
    """The frames of one beep (default 1,000 Hz for 200 ms), ramped so it does not click."""
    source = ToneSource(beep_spec(frequency, seconds))
    frames: list[Frame] = []
    while not source.done:
        frames.append(source.next_frame())
    return frames
