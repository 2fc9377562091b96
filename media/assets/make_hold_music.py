"""Render the PBX's default music on hold into ``hold_music.flac`` (run by hand, deterministic).

    python media/assets/make_hold_music.py

The piece is synthesised here from nothing but numpy: a slow I-vi-IV-V progression in C major
(four chords of 6 s, 24 s in all) played by a soft pad of three voices, a plucked bass and a
quiet bell-like arpeggio. Every note is rendered on a circular timeline, so a tail that rings
past the end wraps round to the beginning and the file loops without a seam. Partials are kept
below 3.4 kHz (the telephone band, ITU-T G.712) and the result is written as 8 kHz mono FLAC.
The output is dedicated to the public domain (CC0); see LICENSE-NOTE.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf  # type: ignore[import-untyped]
from numpy.typing import NDArray

RATE = 8000
CHORD_SECONDS = 6.0
BAND_TOP_HZ = 3400.0
OUT = Path(__file__).resolve().parent / "hold_music.flac"

# MIDI note numbers; each chord: bass note and three pad voices (close voicing around middle C).
PROGRESSION = [
    (48, (60, 64, 67)),  # C major
    (45, (60, 64, 69)),  # A minor
    (41, (60, 65, 69)),  # F major
    (43, (59, 62, 67)),  # G major
]
# Arpeggio pattern over the pad voices (indices), one note per 0.75 s, octave up.
ARPEGGIO = [0, 1, 2, 1, 2, 1, 0, 1]


def hz(note: int) -> float:
    return float(440.0 * 2.0 ** ((note - 69) / 12.0))


def add_circular(buf: NDArray[np.float64], start: int, sound: NDArray[np.float64]) -> None:
    """Add ``sound`` at ``start``, wrapping past the end back to the beginning."""
    idx = (start + np.arange(len(sound))) % len(buf)
    np.add.at(buf, idx, sound)


def voice(
    freq: float, seconds: float, partials: list[float], attack: float, decay: float, release: float
) -> NDArray[np.float64]:
    """One note: a few harmonics under an attack / exponential decay / release envelope."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    wave = np.zeros(n)
    for k, amp in enumerate(partials, start=1):
        if freq * k < BAND_TOP_HZ:
            wave += amp * np.sin(2 * np.pi * freq * k * t)
    env = np.minimum(1.0, t / attack) * np.exp(-t / decay)
    tail = np.clip((seconds - t) / release, 0.0, 1.0)
    result: NDArray[np.float64] = wave * env * tail
    return result


def render() -> NDArray[np.int16]:
    total = int(CHORD_SECONDS * len(PROGRESSION) * RATE)
    buf = np.zeros(total)
    for i, (bass, pad) in enumerate(PROGRESSION):
        start = int(i * CHORD_SECONDS * RATE)
        # Pad: slow swell, long ring that overlaps the next chord (wrapping at the end).
        for note in pad:
            buf_note = voice(hz(note), CHORD_SECONDS + 1.5, [1.0, 0.3, 0.1], 1.2, 6.0, 1.5)
            add_circular(buf, start, 0.16 * buf_note)
        # Bass an octave below the chord root, twice per chord; harmonics make it audible on
        # handsets that cut everything below about 300 Hz.
        for beat in (0.0, 3.0):
            pluck = voice(hz(bass), 3.0, [0.6, 0.8, 0.5, 0.3], 0.03, 1.2, 0.3)
            add_circular(buf, start + int(beat * RATE), 0.22 * pluck)
        # Bell arpeggio: soft 20 ms attack (no click), quick decay.
        for j, which in enumerate(ARPEGGIO):
            bell = voice(hz(pad[which] + 12), 1.5, [1.0, 0.0, 0.15], 0.02, 0.35, 0.2)
            add_circular(buf, start + int(j * 0.75 * RATE), 0.12 * bell)
    buf /= np.abs(buf).max()
    buf *= 0.5  # -6 dBFS peak: comfortable level after G.711
    return np.rint(buf * 32767).astype(np.int16)


def main() -> None:
    audio = render()
    sf.write(str(OUT), audio, RATE, format="FLAC", subtype="PCM_16")
    print(f"wrote {OUT} ({len(audio) / RATE:.1f} s, {OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
