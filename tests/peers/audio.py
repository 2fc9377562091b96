"""Numpy audio helpers for the test peers: tone generation and simple analysis.

All signals are mono int16 PCM at 8 kHz unless a rate is given, the format the
test phones exchange over G.711 (RFC 3551 section 4.5.14).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

RATE = 8000
"""Default sample rate in Hz (narrow-band telephony)."""

Samples = npt.NDArray[np.int16]


def sine(
    freq: float, seconds: float, rate: int = RATE, amplitude: float = 8000.0, phase: float = 0.0
) -> Samples:
    """Return ``seconds`` of a sine tone at ``freq`` Hz as int16 samples.

    ``amplitude`` is the peak in int16 units (8000 is about -12 dBFS, loud but
    far from G.711 clipping). ``phase`` is the starting phase in radians, so
    consecutive chunks can be stitched without clicks (see :class:`ToneGenerator`).
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    if not 0 <= amplitude <= 32767:
        raise ValueError(f"amplitude must be within 0..32767, got {amplitude}")
    n = round(seconds * rate)
    t = np.arange(n, dtype=np.float64) / rate
    wave = amplitude * np.sin(2.0 * np.pi * freq * t + phase)
    return np.round(wave).astype(np.int16)


class ToneGenerator:
    """A phase-continuous tone source: successive :meth:`next` calls join seamlessly.

    A frequency of 0 produces digital silence.
    """

    def __init__(self, freq: float, rate: int = RATE, amplitude: float = 8000.0) -> None:
        """Create a generator for ``freq`` Hz at ``rate`` samples per second."""
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.freq = float(freq)
        self.rate = rate
        self.amplitude = amplitude
        self._phase = 0.0

    def next(self, n: int) -> Samples:
        """Return the next ``n`` samples."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if self.freq == 0.0:
            return np.zeros(n, dtype=np.int16)
        step = 2.0 * np.pi * self.freq / self.rate
        phases = self._phase + step * np.arange(n, dtype=np.float64)
        self._phase = float((self._phase + step * n) % (2.0 * np.pi))
        return np.round(self.amplitude * np.sin(phases)).astype(np.int16)


def rms(samples: npt.ArrayLike) -> float:
    """Root mean square of the samples, in int16 units (0.0 for no samples)."""
    data = np.asarray(samples, dtype=np.float64)
    if data.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(data * data)))


def dominant_frequency(samples: npt.ArrayLike, rate: int = RATE) -> float:
    """Frequency in Hz of the strongest spectral peak, or 0.0 for silence.

    A Hann window limits leakage, and the peak bin is refined by parabolic
    interpolation on the log magnitudes, so a 0.5 s window at 8 kHz resolves
    a tone to well under 1 Hz. The DC bin is ignored.
    """
    data = np.asarray(samples, dtype=np.float64)
    if data.size < 16 or rate <= 0:
        return 0.0
    data = data - data.mean()
    if not np.any(data):
        return 0.0
    spectrum = np.abs(np.fft.rfft(data * np.hanning(data.size)))
    spectrum[0] = 0.0
    peak = int(np.argmax(spectrum))
    if spectrum[peak] == 0.0:
        return 0.0
    offset = 0.0
    if 0 < peak < spectrum.size - 1:
        a, b, c = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denom = a - 2.0 * b + c
        if denom != 0.0:
            offset = float(0.5 * (a - c) / denom)
    return float((peak + offset) * rate / data.size)


def pcm_to_samples(pcm: bytes) -> Samples:
    """Interpret native-endian 16-bit PCM bytes as samples (an odd last byte is dropped)."""
    usable = len(pcm) - (len(pcm) % 2)
    return np.frombuffer(pcm[:usable], dtype=np.int16)
