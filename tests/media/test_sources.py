"""Audio files to engine audio (8 kHz mono int16), looping with a clean seam, playlists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf  # type: ignore[import-untyped]
from numpy.typing import NDArray

from media.sources import (
    HOLD_MUSIC_PATH,
    AudioError,
    LoopingSource,
    PlaylistSource,
    default_hold_music,
    load_audio,
    to_engine_audio,
)
from media.tones import FRAME_SAMPLES, SAMPLE_RATE


def sine(freq: float, seconds: float, rate: int, amp: float = 0.5) -> NDArray[np.float64]:
    t = np.arange(int(seconds * rate)) / rate
    out: NDArray[np.float64] = amp * np.sin(2 * np.pi * freq * t)
    return out


def dominant_hz(samples: NDArray[np.int16]) -> float:
    x = samples.astype(np.float64) * np.hanning(len(samples))
    n = max(len(x), SAMPLE_RATE)
    spectrum = np.abs(np.fft.rfft(x, n))
    return float(np.fft.rfftfreq(n, 1 / SAMPLE_RATE)[int(np.argmax(spectrum))])


def test_wav_44k1_stereo_is_downmixed_and_resampled(tmp_path: Path) -> None:
    left = sine(1000, 2.0, 44100)
    right = sine(1000, 2.0, 44100, amp=0.3)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([left, right], axis=1), 44100, subtype="PCM_16")
    audio = load_audio(path)
    assert audio.dtype == np.int16 and audio.ndim == 1
    assert abs(len(audio) - 2 * SAMPLE_RATE) <= 2
    assert abs(dominant_hz(audio) - 1000) <= 5
    # Mono mix of 0.5 and 0.3 peaks is 0.4 of full scale.
    assert abs(np.abs(audio[1000:-1000]).max() / 32767 - 0.4) < 0.02


def test_flac_16k(tmp_path: Path) -> None:
    path = tmp_path / "prompt.flac"
    sf.write(str(path), sine(1000, 1.5, 16000), 16000, format="FLAC", subtype="PCM_16")
    audio = load_audio(path)
    assert abs(len(audio) - 12000) <= 2
    assert abs(dominant_hz(audio) - 1000) <= 5


def test_ogg_vorbis(tmp_path: Path) -> None:
    path = tmp_path / "music.ogg"
    sf.write(str(path), sine(1000, 1.0, 48000), 48000, format="OGG", subtype="VORBIS")
    audio = load_audio(path)
    assert abs(len(audio) - SAMPLE_RATE) <= 2
    assert abs(dominant_hz(audio) - 1000) <= 5


def test_8k_int16_passes_through_unchanged(tmp_path: Path) -> None:
    original = (sine(440, 0.5, 8000) * 32767).astype(np.int16)
    path = tmp_path / "same.wav"
    sf.write(str(path), original, 8000, subtype="PCM_16")
    assert np.array_equal(load_audio(path), original)


def test_hot_float_audio_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "hot.wav"
    sf.write(str(path), sine(500, 0.5, 8000, amp=1.8), 8000, subtype="FLOAT")
    audio = load_audio(path)
    assert np.abs(audio.astype(np.int32)).max() == 32767
    # Not clipped: still a clean sine, so the crest factor stays sqrt(2).
    rms = np.sqrt(np.mean(audio.astype(np.float64) ** 2))
    assert abs(32767 / rms - np.sqrt(2)) < 0.01


def test_missing_corrupt_and_empty_files_raise_audio_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match=r"nope\.wav") as info:
        load_audio(missing)
    assert info.value.path == missing
    assert isinstance(info.value, ValueError)

    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" + bytes(50))
    with pytest.raises(AudioError, match=r"corrupt\.wav: cannot read audio"):
        load_audio(corrupt)

    text = tmp_path / "notes.ogg"
    text.write_text("this is not audio")
    with pytest.raises(AudioError, match=r"notes\.ogg"):
        load_audio(text)

    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.int16), 8000)
    with pytest.raises(AudioError, match=r"empty\.wav: file holds no audio"):
        load_audio(empty)

    zero_bytes = tmp_path / "zero.flac"
    zero_bytes.write_bytes(b"")
    with pytest.raises(AudioError, match=r"zero\.flac"):
        load_audio(zero_bytes)


def test_too_long_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    sf.write(str(path), np.zeros(8000 * 3, dtype=np.int16), 8000)
    with pytest.raises(AudioError, match="more than 2 s"):
        load_audio(path, max_seconds=2)


def test_to_engine_audio_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        to_engine_audio(np.zeros((2, 2, 2)), 8000)
    with pytest.raises(ValueError, match="sample rate"):
        to_engine_audio(np.zeros(10), 0)


def test_looping_seam_has_no_click() -> None:
    # 100 Hz over 8,020 samples: a quarter period short of whole, so a plain loop would jump.
    clip = (sine(100, 8020 / SAMPLE_RATE, SAMPLE_RATE) * 32767).astype(np.int16)
    natural_step = int(np.abs(np.diff(clip.astype(np.int32))).max())
    naive_jump = abs(int(clip[0]) - int(clip[-1]))
    assert naive_jump > 3 * natural_step  # the test clip really would click

    source = LoopingSource(clip)
    frames_per_pass = -(-source.loop_samples // FRAME_SAMPLES)
    audio = np.concatenate([source.next_frame() for _ in range(3 * frames_per_pass)])
    steps = np.abs(np.diff(audio.astype(np.int32)))
    for seam in (source.loop_samples, 2 * source.loop_samples):
        assert steps[seam - 3 : seam + 3].max() <= natural_step * 1.1 + 2
    assert steps.max() <= natural_step * 1.1 + 2


def test_looping_source_frames_and_errors() -> None:
    source = LoopingSource(np.arange(1000, dtype=np.int16), crossfade=0)
    first = [source.next_frame() for _ in range(7)]
    assert all(f.shape == (FRAME_SAMPLES,) and f.dtype == np.int16 for f in first)
    joined = np.concatenate(first)
    assert np.array_equal(joined[:1000], np.arange(1000))
    assert np.array_equal(joined[1000:1120], np.arange(120))
    with pytest.raises(ValueError, match="int16"):
        LoopingSource(np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError, match="mono"):
        LoopingSource(np.zeros((100, 2), dtype=np.int16))


def test_playlist_plays_clips_back_to_back_then_ends(tmp_path: Path) -> None:
    path = tmp_path / "b.wav"
    sf.write(str(path), np.full(200, 2000, dtype=np.int16), 8000, subtype="PCM_16")
    playlist = PlaylistSource([np.full(100, 1000, dtype=np.int16), path])
    assert playlist.total_samples == 300
    frames = []
    for _ in range(10):
        frame = playlist.next_frame()
        if frame is None:
            break
        frames.append(frame)
    assert len(frames) == 2
    audio = np.concatenate(frames)
    assert list(audio[:100]) == [1000] * 100
    assert abs(int(audio[100:300].mean()) - 2000) <= 1
    assert not audio[300:].any()  # padded with silence
    assert playlist.done and playlist.next_frame() is None


def test_playlist_loop_and_bad_file(tmp_path: Path) -> None:
    looping = PlaylistSource([np.arange(100, dtype=np.int16)], loop=True)
    audio = np.concatenate([looping.next_frame() for _ in range(5)])
    assert np.array_equal(audio, np.tile(np.arange(100), 8))
    assert PlaylistSource([]).next_frame() is None
    with pytest.raises(AudioError, match=r"gone\.wav"):
        PlaylistSource([tmp_path / "gone.wav"])


def test_shipped_hold_music_loads_and_loops() -> None:
    assert HOLD_MUSIC_PATH.stat().st_size < 500_000
    audio = load_audio(HOLD_MUSIC_PATH)
    assert 20 <= len(audio) / SAMPLE_RATE <= 30
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    assert rms > 1000  # audible
    assert np.abs(audio.astype(np.int32)).max() < 32767  # headroom, no clipping
    source = default_hold_music()
    frames_per_pass = -(-source.loop_samples // FRAME_SAMPLES)
    looped = np.concatenate([source.next_frame() for _ in range(frames_per_pass + 50)])
    steps = np.abs(np.diff(looped.astype(np.int32)))
    seam = source.loop_samples
    assert steps[seam - 2 : seam + 2].max() <= np.abs(np.diff(audio.astype(np.int32))).max()
    # Two sources are independent: each starts at the beginning.
    assert np.array_equal(default_hold_music().next_frame(), looped[:FRAME_SAMPLES])
