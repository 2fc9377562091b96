"""Call-progress tones: frequencies by FFT peak, cadences by frame counts, no clicks."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from media.tones import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    ToneSource,
    ToneSpec,
    beep,
    busy,
    dial_tone,
    ringback,
    silence,
)


def peaks(samples: NDArray[np.int16], count: int, guard: int = 20) -> list[float]:
    """The ``count`` strongest frequencies (Hz), strongest first, 1 Hz resolution or better."""
    x = samples.astype(np.float64) * np.hanning(len(samples))
    n = max(len(x), SAMPLE_RATE)  # zero-pad to at least 1 s for 1 Hz bins
    spectrum = np.abs(np.fft.rfft(x, n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    found: list[float] = []
    for _ in range(count):
        i = int(np.argmax(spectrum))
        found.append(float(freqs[i]))
        # Blank the main lobe before looking for the next peak.
        spectrum[max(0, i - guard) : i + guard + 1] = 0
    return found


def pull(source: ToneSource, frames: int) -> NDArray[np.int16]:
    return np.concatenate([source.next_frame() for _ in range(frames)])


def on_frames(source: ToneSource, frames: int) -> list[bool]:
    """Per frame: is the tone audible (RMS above a small threshold)?"""
    out = []
    for _ in range(frames):
        frame = source.next_frame().astype(np.float64)
        assert frame.shape == (FRAME_SAMPLES,)
        out.append(float(np.sqrt(np.mean(frame**2))) > 500)
    return out


def runs(flags: list[bool]) -> list[tuple[bool, int]]:
    """Run-length encoding of a list of booleans."""
    result: list[tuple[bool, int]] = []
    for flag in flags:
        if result and result[-1][0] == flag:
            result[-1] = (flag, result[-1][1] + 1)
        else:
            result.append((flag, 1))
    return result


@pytest.mark.parametrize(
    ("region", "expected"),
    [("us", [440, 480]), ("eu", [425]), ("uk", [400, 450]), ("jp", [400])],
)
def test_ringback_frequencies(region: str, expected: list[int]) -> None:
    audio = pull(ringback(region), 50)[400:7600]  # inside the first burst, past the ramp
    found = sorted(peaks(audio, len(expected)))
    for want, got in zip(expected, found, strict=True):
        assert abs(got - want) <= 5


@pytest.mark.parametrize(
    ("region", "expected"),
    [("us", [480, 620]), ("eu", [425]), ("uk", [400]), ("jp", [400])],
)
def test_busy_frequencies(region: str, expected: list[int]) -> None:
    audio = pull(busy(region), 10)[80:1520]
    found = sorted(peaks(audio, len(expected)))
    for want, got in zip(expected, found, strict=True):
        assert abs(got - want) <= 5


def test_us_ringback_cadence_2s_on_4s_off() -> None:
    flags = on_frames(ringback("us"), 2 * 300)  # two 6 s cycles
    assert runs(flags) == [(True, 100), (False, 200), (True, 100), (False, 200)]


def test_us_busy_cadence_half_second() -> None:
    assert runs(on_frames(busy("us"), 100)) == [(True, 25), (False, 25)] * 2


def test_jp_ringback_1s_on_2s_off_and_16hz_modulation() -> None:
    source = ringback("jp")
    assert runs(on_frames(source, 150)) == [(True, 50), (False, 100)]
    source.reset()
    burst = pull(source, 50)
    # The 16 Hz envelope shows as sidebands at 400 +/- 16 Hz next to the 400 Hz carrier.
    found = sorted(peaks(burst, 3, guard=6))
    assert [abs(f - w) <= 5 for f, w in zip(found, [384, 400, 416], strict=True)] == [True] * 3


def test_jp_busy_cadence() -> None:
    assert runs(on_frames(busy("jp"), 100)) == [(True, 25), (False, 25)] * 2


def test_uk_ringback_double_ring() -> None:
    # 0.4 on, 0.2 off, 0.4 on, 2.0 off = 20, 10, 20, 100 frames
    expected = [(True, 20), (False, 10), (True, 20), (False, 100)]
    assert runs(on_frames(ringback("uk"), 150)) == expected


def test_eu_ringback_cadence() -> None:
    assert runs(on_frames(ringback("eu"), 250)) == [(True, 50), (False, 200)]


def test_dial_tone_is_continuous() -> None:
    flags = on_frames(dial_tone("us"), 100)
    assert all(flags)
    found = sorted(peaks(pull(dial_tone("us"), 50), 2))
    assert abs(found[0] - 350) <= 5 and abs(found[1] - 440) <= 5


def test_phase_continuous_across_frames() -> None:
    """Sample steps at frame boundaries are no larger than steps inside the frames."""
    audio = pull(dial_tone("eu"), 200).astype(np.int32)
    steps = np.abs(np.diff(audio))
    boundary = steps[FRAME_SAMPLES - 1 :: FRAME_SAMPLES]
    assert boundary.max() <= steps.max()
    # A 425 Hz sine of peak A changes by at most 2*pi*425/8000*A per sample.
    peak = np.abs(audio).max()
    assert steps.max() <= 2 * np.pi * 425 / SAMPLE_RATE * peak + 2


def test_bursts_ramp_in_and_out_without_clicks() -> None:
    audio = pull(busy("us"), 50).astype(np.int32)
    steps = np.abs(np.diff(audio))
    # 620 Hz is the highest component; the ramped edges must not step harder than the tone.
    peak = np.abs(audio).max()
    assert steps.max() <= 2 * np.pi * 620 / SAMPLE_RATE * peak + 2
    assert audio[0] == 0 and abs(int(audio[3999])) < 200


def test_beep_is_1khz_200ms_then_done() -> None:
    frames = beep()
    assert len(frames) == 10
    audio = np.concatenate(frames)
    assert abs(peaks(audio, 1)[0] - 1000) <= 5
    assert np.abs(audio).max() > 5000
    source = ToneSource(ToneSpec((1000.0,), ((0.2, 0.0),), repeat=False))
    for _ in range(10):
        source.next_frame()
    assert source.done
    assert not source.next_frame().any()


def test_silence() -> None:
    frames = silence(3)
    assert len(frames) == 3
    assert all(f.dtype == np.int16 and f.shape == (160,) and not f.any() for f in frames)
    with pytest.raises(ValueError):
        silence(-1)


def test_unknown_region_and_bad_specs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="region 'xx'"):
        ringback("xx")
    with pytest.raises(ValueError, match="outside"):
        ToneSpec((5000.0,))
    with pytest.raises(ValueError, match="cadence"):
        ToneSpec((400.0,), ((-1.0, 1.0),))


def test_frames_never_clip() -> None:
    for source in (ringback("us"), busy("us"), ringback("jp"), dial_tone("uk")):
        audio = pull(source, 100)
        assert audio.dtype == np.int16
        assert np.abs(audio.astype(np.int32)).max() < 32767
