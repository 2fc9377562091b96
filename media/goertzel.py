"""In-band DTMF detection (ITU-T Q.23 tones, Q.24 acceptance rules) with Goertzel filters.

Theory of operation: the PCM stream is cut into analysis blocks of ``BLOCK`` samples (102 at
8 kHz, 12.75 ms) that start every ``HOP`` samples (17, a sixth of a block). For each block the
detector evaluates the Goertzel power at the eight DTMF frequencies and at the second harmonics
of the four high-group ones (each at its nominal frequency and 1.2 % either side, keeping the
largest, so that senders off by Q.24's 1.5 % lose almost nothing), and the block energy. A block
is a *hit* for a key when:

1. the strongest row (low-group) and column (high-group) tones are each above an absolute level
   (``min_level_dbm0``, per tone);
2. each is stronger than the runner-up of its group by ``peak_margin_db``;
3. the twist is within limits: the high tone no more than ``normal_twist_db`` below the low one
   and no more than ``reverse_twist_db`` above it (Q.24 table 1 style figures, 8 dB / 4 dB);
4. the two tones carry at least ``min_tone_fraction`` of the block energy: speech and music
   spread their energy over many frequencies, a key press puts nearly all of it in two;
5. the second harmonic of the high tone is at least ``harmonic_margin_db`` below it (voiced
   speech is rich in harmonics; a DTMF generator is not).

Runs of hits for the same key make a tone. A tone is reported once, when it ends (after
``min_gap_ms`` without hits, or when another key's tone starts), and only if it lasted at least
``min_duration_ms``; its duration is estimated from the span of the blocks that hit.

Why 102-sample blocks: the first null of a 102-sample rectangular window is at 8000/102 = 78 Hz,
about the spacing of adjacent DTMF rows (73-89 Hz), so a row tone barely leaks into its
neighbour's filter, and a block is short enough that a 40 ms tone fills several of them
(spandsp and Asterisk use the same block length). The overlapping blocks, 17 samples (2.1 ms)
apart, measure the tone length finely enough that 40 ms tones are accepted and 30 ms ones
rejected even at 20 dB SNR; with half-block steps the two overlapped.

The second harmonics of the low group (1394-1882 Hz) are not checked: with this block length
they fall within the main lobe of the high-group filters (1394 Hz is only 58 Hz from 1336 Hz),
so a genuine key would fail the check.

Goertzel, vectorised: the Goertzel recursion computes one DFT term,
``|sum(x[n] * exp(-2j*pi*f*n/fs))|**2``, with one multiply per sample, which suits a scalar loop.
With numpy the same term for every block and every frequency is one matrix product of the
``(blocks, BLOCK)`` sample matrix with a precomputed ``(BLOCK, 2 * frequencies)`` cosine/sine
matrix. The result is the Goertzel output (the tests check it against the textbook recursion),
at a few microseconds per 20 ms frame instead of a Python loop over samples.

Nothing here reads a clock; positions are counted in samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["HIGH_FREQS", "KEYPAD", "LOW_FREQS", "DetectorSettings", "GoertzelBank", "ToneTracker"]

#: Q.23 low-group (row) frequencies in Hz.
LOW_FREQS: Final = (697.0, 770.0, 852.0, 941.0)
#: Q.23 high-group (column) frequencies in Hz.
HIGH_FREQS: Final = (1209.0, 1336.0, 1477.0, 1633.0)
#: Keys by (row, column).
KEYPAD: Final = ("123A", "456B", "789C", "*0#D")

_SPREAD: Final = 0.012

BLOCK: Final = 102
HOP: Final = 17
# A block at a tone's edge still hits once about 90 % of it is covered (the energy-share test
# sees the uncovered part as missing energy), so a run of h hits spans a tone of about
# (h - 1) * HOP + 0.8 * BLOCK samples; measured at 20 dB SNR this is within +-4 ms.
_EDGE_SHARE: Final = 0.8
# Tones are accepted from min_duration_ms minus this: the estimate spreads about +-4 ms with
# block alignment and noise, so 40 ms tones pass and 30 ms ones do not.
_DURATION_TOLERANCE_MS: Final = 5.0

# int16 level of a 0 dBm0 sine: G.711 puts full scale at +3.17 dBm0 (G.711 table 5 / 6).
_DBM0_AMPLITUDE: Final = 32767.0 * 10.0 ** (-3.17 / 20.0)


class GoertzelBank:
    """Goertzel power at fixed frequencies over blocks of ``block`` samples."""

    def __init__(self, freqs: tuple[float, ...], block: int, sample_rate: int) -> None:
        self.freqs = freqs
        self.block = block
        n = np.arange(block, dtype=np.float64)[:, None]
        omega = 2.0 * np.pi * np.asarray(freqs, dtype=np.float64)[None, :] / sample_rate
        self._basis = np.hstack([np.cos(omega * n), np.sin(omega * n)])

    def power(self, blocks: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``(nblocks, block)`` samples to ``(nblocks, len(freqs))`` Goertzel powers."""
        proj = blocks @ self._basis
        half = len(self.freqs)
        result: npt.NDArray[np.float64] = proj[:, :half] ** 2 + proj[:, half:] ** 2
        return result


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """Acceptance limits for :class:`media.dtmf.InbandDetector`."""

    min_level_dbm0: float = -30.0
    """Each tone must be at least this loud (Q.24 acceptance reaches down to about -25 dBm0)."""
    peak_margin_db: float = 6.0
    """Each tone must beat the other frequencies of its group by this much."""
    normal_twist_db: float = 8.0
    """How far the high tone may be below the low one."""
    reverse_twist_db: float = 4.0
    """How far the high tone may be above the low one."""
    min_tone_fraction: float = 0.8
    """Share of the block energy the two tones must carry."""
    harmonic_margin_db: float = 15.0
    """The high tone's second harmonic must be this far below it."""
    min_duration_ms: float = 40.0
    """Shorter tones are not reported (Q.24: 40 ms must be accepted)."""
    min_gap_ms: float = 25.0
    """Silence needed to end a tone; shorter dropouts are bridged."""


class ToneTracker:
    """Block-level DTMF decisions and the hit-run state machine behind ``InbandDetector``."""

    def __init__(self, sample_rate: int, settings: DetectorSettings) -> None:
        if sample_rate < 8000:
            # The 3266 Hz harmonic filter (2 x 1633 Hz) needs a Nyquist frequency above it.
            raise ValueError(f"sample rate must be at least 8000 Hz, got {sample_rate}")
        scale = sample_rate / 8000.0
        self.block = max(16, round(BLOCK * scale))
        self.hop = max(8, round(HOP * scale))
        self.sample_rate = sample_rate
        self.settings = settings
        # Each tone is measured at its nominal frequency and at +-_SPREAD, keeping the largest:
        # Q.24 senders may be off by up to 1.5 %, which would cost a 102-sample filter up to
        # 1.5 dB on the high group and blur the energy-share test.
        nominal = LOW_FREQS + HIGH_FREQS + tuple(2.0 * f for f in HIGH_FREQS)
        freqs = tuple(f * (1.0 + d) for f in nominal for d in (-_SPREAD, 0.0, _SPREAD))
        self._bank = GoertzelBank(freqs, self.block, sample_rate)
        # Goertzel power of a sine of amplitude A over N samples is (A * N / 2) ** 2.
        floor_amp = _DBM0_AMPLITUDE * 10.0 ** (settings.min_level_dbm0 / 20.0)
        self._floor = (floor_amp * self.block / 2.0) ** 2
        self._peak = 10.0 ** (settings.peak_margin_db / 10.0)
        self._normal = 10.0 ** (settings.normal_twist_db / 10.0)
        self._reverse = 10.0 ** (settings.reverse_twist_db / 10.0)
        self._harmonic = 10.0 ** (settings.harmonic_margin_db / 10.0)
        # Tone energy from Goertzel power: a sine's energy over the block is A**2 * N / 2.
        self._energy_scale = 2.0 / self.block
        self._min_hits = self._hits_for(settings.min_duration_ms - _DURATION_TOLERANCE_MS)
        self._gap_blocks = max(1, math.ceil(settings.min_gap_ms * sample_rate / 1000 / self.hop))
        self._buffer = np.zeros(0, dtype=np.float64)
        self._key: str | None = None
        self._hits = 0
        self._misses = 0

    @property
    def active(self) -> bool:
        """True while a tone is being tracked: it is reported only once silence ends it."""
        return self._key is not None

    def reset(self) -> None:
        """Forget buffered samples and any tone in progress (a new audio stream starts)."""
        self._buffer = np.zeros(0, dtype=np.float64)
        self._key, self._hits, self._misses = None, 0, 0

    def _hits_for(self, duration_ms: float) -> int:
        samples = duration_ms * self.sample_rate / 1000.0
        return max(1, math.ceil((samples - _EDGE_SHARE * self.block) / self.hop) + 1)

    def classify(self, blocks: npt.NDArray[np.float64]) -> list[str | None]:
        """The key each block is a hit for, or ``None``."""
        power = self._bank.power(blocks).reshape(len(blocks), -1, 3).max(axis=2)
        low = power[:, 0:4]
        high = power[:, 4:8]
        harm = power[:, 8:12]
        rows = np.argmax(low, axis=1)
        cols = np.argmax(high, axis=1)
        idx = np.arange(len(blocks))
        p_low = low[idx, rows]
        p_high = high[idx, cols]
        low_runner = np.sort(low, axis=1)[:, -2]
        high_runner = np.sort(high, axis=1)[:, -2]
        energy = np.einsum("ij,ij->i", blocks, blocks)
        ok = (p_low >= self._floor) & (p_high >= self._floor)
        ok &= (p_low >= low_runner * self._peak) & (p_high >= high_runner * self._peak)
        ok &= (p_high * self._normal >= p_low) & (p_high <= p_low * self._reverse)
        ok &= (p_low + p_high) * self._energy_scale >= energy * self.settings.min_tone_fraction
        ok &= harm[idx, cols] * self._harmonic <= p_high
        return [KEYPAD[r][c] if hit else None for r, c, hit in zip(rows, cols, ok, strict=True)]

    def feed(self, pcm: npt.NDArray[np.float64]) -> list[tuple[str, float]]:
        """Consume samples; return ``(key, duration_ms)`` for each tone that ended."""
        data = np.concatenate([self._buffer, pcm]) if len(self._buffer) else pcm
        count = 0 if len(data) < self.block else (len(data) - self.block) // self.hop + 1
        if count == 0:
            self._buffer = data
            return []
        blocks = np.lib.stride_tricks.sliding_window_view(data, self.block)[:: self.hop][:count]
        self._buffer = data[count * self.hop :].copy()
        ended: list[tuple[str, float]] = []
        for key in self.classify(blocks):
            self._step(key, ended)
        return ended

    def _step(self, key: str | None, ended: list[tuple[str, float]]) -> None:
        if key is not None and key == self._key:
            self._hits += 1 + self._misses  # a bridged dropout counts as part of the tone
            self._misses = 0
            return
        if self._key is not None:
            if key is None:
                self._misses += 1
                if self._misses < self._gap_blocks:
                    return
            self._finish(ended)
        if key is not None:
            self._key, self._hits, self._misses = key, 1, 0

    def _finish(self, ended: list[tuple[str, float]]) -> None:
        if self._key is not None and self._hits >= self._min_hits:
            samples = _EDGE_SHARE * self.block + (self._hits - 1) * self.hop
            ended.append((self._key, samples * 1000.0 / self.sample_rate))
        self._key, self._hits, self._misses = None, 0, 0
