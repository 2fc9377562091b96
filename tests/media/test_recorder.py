"""Stereo call recording: channels, pause, resampling, and files left by a killed writer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf  # type: ignore[import-untyped]
from numpy.typing import NDArray

from media.recorder import RecordingError, StereoRecorder, read_recording, repair_recording
from media.tones import FRAME_SAMPLES, SAMPLE_RATE, ToneSource, ToneSpec

ROOT = Path(__file__).resolve().parents[2]


def dominant_hz(samples: NDArray[np.int16], rate: int) -> float:
    x = samples.astype(np.float64) * np.hanning(len(samples))
    n = max(len(x), rate)
    spectrum = np.abs(np.fft.rfft(x, n))
    return float(np.fft.rfftfreq(n, 1 / rate)[int(np.argmax(spectrum))])


def frame_rms(channel: NDArray[np.int16]) -> NDArray[np.float64]:
    usable = len(channel) // FRAME_SAMPLES * FRAME_SAMPLES
    frames = channel[:usable].astype(np.float64).reshape(-1, FRAME_SAMPLES)
    out: NDArray[np.float64] = np.sqrt(np.mean(frames**2, axis=1))
    return out


def record_tones(recorder: StereoRecorder, ticks: int) -> None:
    caller = ToneSource(ToneSpec((440.0,)))
    callee = ToneSource(ToneSpec((880.0,)))
    for _ in range(ticks):
        recorder.write(caller.next_frame(), callee.next_frame())


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_three_seconds_each_party_on_its_channel(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"call.{fmt}"
    with StereoRecorder(path, fmt) as recorder:  # type: ignore[arg-type]
        record_tones(recorder, 150)
        assert recorder.duration == pytest.approx(3.0)
    assert recorder.closed
    data, rate = sf.read(str(path), dtype="int16", always_2d=True)
    assert rate == SAMPLE_RATE and data.shape == (3 * SAMPLE_RATE, 2)
    assert abs(dominant_hz(data[:, 0], rate) - 440) <= 5
    assert abs(dominant_hz(data[:, 1], rate) - 880) <= 5


def test_16khz_recording_is_resampled(tmp_path: Path) -> None:
    path = tmp_path / "wide.flac"
    with StereoRecorder(path, "flac", sample_rate=16000) as recorder:
        record_tones(recorder, 150)
    data, rate = sf.read(str(path), dtype="int16", always_2d=True)
    assert rate == 16000
    assert abs(len(data) - 48000) <= 2
    assert abs(dominant_hz(data[:, 0], rate) - 440) <= 5
    assert abs(dominant_hz(data[:, 1], rate) - 880) <= 5


def test_pause_writes_silence_of_the_right_length(tmp_path: Path) -> None:
    path = tmp_path / "paused.wav"
    recorder = StereoRecorder(path)
    record_tones(recorder, 50)  # 1 s
    recorder.pause()
    assert recorder.paused
    record_tones(recorder, 25)  # 0.5 s, must come out silent
    recorder.resume()
    record_tones(recorder, 50)  # 1 s
    assert recorder.duration == pytest.approx(2.5)
    recorder.close()
    data, _ = sf.read(str(path), dtype="int16", always_2d=True)
    assert len(data) == int(2.5 * SAMPLE_RATE)
    for channel in (0, 1):
        loud = frame_rms(data[:, channel]) > 100
        assert loud[:50].all() and not loud[50:75].any() and loud[75:].all()


def test_missing_side_is_silence(tmp_path: Path) -> None:
    path = tmp_path / "oneway.wav"
    tone = ToneSource(ToneSpec((440.0,)))
    with StereoRecorder(path) as recorder:
        for _ in range(50):
            recorder.write(tone.next_frame(), None)
        recorder.write(None, tone.next_frame()[:80])  # short tick: padded, not dropped
        recorder.write(None, None)  # nothing from either side: nothing written
    data, _ = sf.read(str(path), dtype="int16", always_2d=True)
    assert len(data) == 50 * FRAME_SAMPLES + 80
    assert data[: 50 * FRAME_SAMPLES, 0].any() and not data[: 50 * FRAME_SAMPLES, 1].any()
    assert data[-80:, 1].any() and not data[-80:, 0].any()


def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'wav' or 'flac'"):
        StereoRecorder(tmp_path / "x.mp3", "mp3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sample rate"):
        StereoRecorder(tmp_path / "x.wav", sample_rate=100)
    with pytest.raises(RecordingError, match="cannot create recording") as info:
        StereoRecorder(tmp_path / "no" / "such" / "dir.wav")
    assert info.value.path == tmp_path / "no" / "such" / "dir.wav"
    recorder = StereoRecorder(tmp_path / "y.wav")
    with pytest.raises(ValueError, match="int16"):
        recorder.write(np.zeros(160, dtype=np.float32), None)
    recorder.close()
    recorder.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        recorder.write(None, np.zeros(160, dtype=np.int16))
    with pytest.raises(RecordingError, match="cannot read"):
        read_recording(tmp_path / "absent.wav")


_WRITER = """
import sys, time
from media.recorder import StereoRecorder
from media.tones import ToneSource, ToneSpec
rec = StereoRecorder(sys.argv[1], sys.argv[2])
caller, callee = ToneSource(ToneSpec((440.0,))), ToneSource(ToneSpec((880.0,)))
for _ in range(170):  # 3.4 s: flushed at 1, 2 and 3 s, the last 0.4 s not yet
    rec.write(caller.next_frame(), callee.next_frame())
print("written", flush=True)
time.sleep(60)
"""


def kill_writer_after_recording(path: Path, fmt: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), fmt],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "written"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def check_channels(data: NDArray[np.int16], rate: int, min_seconds: float) -> None:
    assert data.shape[1] == 2
    assert len(data) >= min_seconds * rate
    assert abs(dominant_hz(data[:, 0], rate) - 440) <= 5
    assert abs(dominant_hz(data[:, 1], rate) - 880) <= 5
    assert (frame_rms(data[:, 0]) > 1000).all() and (frame_rms(data[:, 1]) > 1000).all()


def test_killed_wav_writer_leaves_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "killed.wav"
    kill_writer_after_recording(path, "wav")
    # soundfile reads it whole ...
    data, rate = sf.read(str(path), dtype="int16", always_2d=True)
    check_channels(data, rate, 3.0)
    # ... and so does a reader that trusts the header sizes (stdlib wave), up to the last flush.
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 2 and w.getframerate() == SAMPLE_RATE
        frames = w.getnframes()
        raw = w.readframes(frames)
    assert frames >= 3 * SAMPLE_RATE
    check_channels(np.frombuffer(raw, dtype="<i2").reshape(-1, 2), SAMPLE_RATE, 3.0)
    # The start after the kill makes the header cover every frame on disk (the audio written
    # after the last flush too).
    seconds = repair_recording(path)
    with wave.open(str(path), "rb") as w:
        assert w.getnframes() >= len(data) and seconds == w.getnframes() / SAMPLE_RATE
        check_channels(np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2),
                       SAMPLE_RATE, 3.0)


def test_killed_flac_writer_leaves_a_recoverable_file(tmp_path: Path) -> None:
    path = tmp_path / "killed.flac"
    kill_writer_after_recording(path, "flac")
    data, rate = read_recording(path)
    # The encoder holds back a partial block: most of the audio, not necessarily the last second.
    check_channels(data, rate, 2.0)
    assert repair_recording(path) == len(data) / rate  # no length in its header: decoded


def test_read_recording_of_a_closed_file(tmp_path: Path) -> None:
    path = tmp_path / "whole.flac"
    with StereoRecorder(path, "flac") as recorder:
        record_tones(recorder, 100)
    data, rate = read_recording(path)
    assert rate == SAMPLE_RATE and data.shape == (2 * SAMPLE_RATE, 2)
    assert repair_recording(path) == 2.0  # finished: its length from the header
