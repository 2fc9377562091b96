"""Call recording: one stereo file per call, caller on the left channel, callee on the right.

The recorder is fed one 20 ms tick at a time (engine audio: int16 mono, 8 kHz) and writes
incrementally with soundfile (libsndfile), so a recording grows while the call runs and is
playable even if the PBX is killed. Blocking file I/O: call it from a worker thread.

Crash safety (checked by ``tests/media/test_recorder.py``, which SIGKILLs a writer):

- **WAV** (default). libsndfile writes the RIFF/data chunk sizes only at close; a killed file
  has a data size of 0, which libsndfile reads to the end of the file but other tools (sox,
  many players) read as empty. So at each flush (once per second of audio) the recorder
  rewrites the two size fields through a separate handle to cover everything written so
  far. A killed WAV therefore reads, in any tool, up to the last flush.
- **FLAC**. The STREAMINFO sample count is written at close, and the encoder holds back a
  partial block; a killed FLAC lacks the last fraction of a second and has no length, so
  ``soundfile.read`` refuses it. :func:`read_recording` reads such a file block by block.

Data reaches the kernel with each write (libsndfile does not buffer PCM), which is what
survives a killed process; surviving a power cut would need fsync, which the recorder does not
do per second on purpose (it would stall a disk shared by many calls; libsndfile's own
``sf_write_sync`` is exactly such an fsync, so it is not called).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf  # type: ignore[import-untyped]
import soxr  # type: ignore[import-untyped]
from numpy.typing import NDArray

from media.tones import SAMPLE_RATE, Frame

RecordingFormat = Literal["wav", "flac"]

_FORMATS = {"wav": "WAV", "flac": "FLAC"}
_RIFF_MAX = 0xFFFFFFFF
_PLAUSIBLE_FRAMES = 10**10
"""More frames than any recording has (two weeks at 8 kHz): a length the header does not know."""


class RecordingError(RuntimeError):
    """The recording file cannot be created, written or read. Carries the path."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def _as_channel(samples: Frame | None, side: str) -> NDArray[np.int16]:
    if samples is None:
        return np.zeros(0, dtype=np.int16)
    data = np.asarray(samples)
    if data.ndim != 1 or data.dtype != np.int16:
        raise ValueError(
            f"{side} audio must be 1-D int16 engine audio, got {data.dtype} shape {data.shape}"
        )
    return data


def _find_wav_data(path: Path) -> int | None:
    """The offset of the ``data`` chunk header in a RIFF/WAVE file, or None."""
    with path.open("rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                return offset
            offset += 8 + chunk_size + (chunk_size & 1)  # chunks are word aligned
    return None


def _patch_wav_sizes(path: Path, data_offset: int, data_bytes: int) -> None:
    """Make the RIFF and data chunk sizes cover ``data_bytes`` of audio (RIFF/WAVE layout)."""
    data_size = min(data_bytes, _RIFF_MAX - data_offset)
    data_size -= data_size % 4  # whole stereo int16 frames only
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, struct.pack("<I", data_size), data_offset + 4)
        os.pwrite(fd, struct.pack("<I", data_offset + data_size), 4)
    finally:
        os.close(fd)


class StereoRecorder:
    """Writes a two-channel recording incrementally: caller left, callee right.

    ``write(caller, callee)`` takes one tick of engine audio per party; a side that sent nothing
    may be ``None`` or shorter and is padded with silence. While paused, silence of the same
    length is written instead, so the recording keeps the call's timeline. ``sample_rate``
    other than 8,000 Hz resamples the audio (libsoxr, streaming) before it is written.
    """

    def __init__(
        self,
        path: Path | str,
        format: RecordingFormat = "wav",
        sample_rate: int = SAMPLE_RATE,
        flush_seconds: float = 1.0,
    ) -> None:
        if format not in _FORMATS:
            raise ValueError(f"recording format must be 'wav' or 'flac', got {format!r}")
        if not 8000 <= sample_rate <= 48000:
            raise ValueError(f"recording sample rate {sample_rate} Hz is outside 8000..48000")
        if flush_seconds <= 0:
            raise ValueError(f"flush interval must be positive, got {flush_seconds}")
        self._path = Path(path)
        self._format = format
        self._flush_every = max(1, round(flush_seconds * SAMPLE_RATE))
        self._resampler = (
            None
            if sample_rate == SAMPLE_RATE
            else soxr.ResampleStream(SAMPLE_RATE, sample_rate, 2, dtype="int16")
        )
        try:
            self._file = sf.SoundFile(
                str(self._path),
                "w",
                samplerate=sample_rate,
                channels=2,
                format=_FORMATS[format],
                subtype="PCM_16",
            )
        except (sf.SoundFileError, RuntimeError, OSError) as exc:
            raise RecordingError(self._path, f"cannot create recording: {exc}") from exc
        self._samples = 0  # input timeline, in 8 kHz samples
        self._frames_out = 0  # frames in the file (after resampling)
        self._data_offset: int | None = None  # of the WAV data chunk, found at the first flush
        self._since_flush = 0
        self._paused = False
        self._closed = False

    @property
    def path(self) -> Path:
        """Where the recording is written."""
        return self._path

    @property
    def duration(self) -> float:
        """Seconds of call timeline written so far (paused stretches included)."""
        return self._samples / SAMPLE_RATE

    @property
    def paused(self) -> bool:
        """True while audio is replaced by silence."""
        return self._paused

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    def pause(self) -> None:
        """Replace audio with silence from the next tick on (e.g. while a card number is read)."""
        self._paused = True

    def resume(self) -> None:
        """Record audio again from the next tick on."""
        self._paused = False

    def write(self, caller: Frame | None, callee: Frame | None) -> None:
        """Record one tick: ``caller`` on the left channel, ``callee`` on the right."""
        if self._closed:
            raise ValueError(f"{self._path}: recording is closed")
        left = _as_channel(caller, "caller")
        right = _as_channel(callee, "callee")
        n = max(len(left), len(right))
        if n == 0:
            return
        block = np.zeros((n, 2), dtype=np.int16)
        if not self._paused:
            block[: len(left), 0] = left
            block[: len(right), 1] = right
        self._write_block(block)
        self._samples += n
        self._since_flush += n
        if self._since_flush >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        """For WAV, make the header cover everything written so far.

        libsndfile hands PCM to the kernel with each write already; its own flush
        (``sf_write_sync``) is an fsync, which the recorder avoids on purpose (see the module
        notes), so it is not called.
        """
        if self._closed:
            return
        try:
            if self._format == "wav":
                if self._data_offset is None:
                    self._data_offset = _find_wav_data(self._path)
                if self._data_offset is not None:
                    _patch_wav_sizes(self._path, self._data_offset, self._frames_out * 4)
        except (sf.SoundFileError, RuntimeError, OSError) as exc:
            raise RecordingError(self._path, f"cannot write recording: {exc}") from exc
        self._since_flush = 0

    def close(self) -> None:
        """Finish the file (final header / STREAMINFO). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._resampler is not None:
                tail = self._resampler.resample_chunk(np.zeros((0, 2), dtype=np.int16), last=True)
                if len(tail):
                    self._file.write(tail)
        finally:
            self._file.close()

    def __enter__(self) -> StereoRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write_block(self, block: NDArray[np.int16]) -> None:
        if self._resampler is not None:
            block = self._resampler.resample_chunk(block)
            if not len(block):
                return
        try:
            self._file.write(block)
        except (sf.SoundFileError, RuntimeError, OSError) as exc:
            raise RecordingError(self._path, f"cannot write recording: {exc}") from exc
        self._frames_out += len(block)


def read_recording(path: Path | str) -> tuple[NDArray[np.int16], int]:
    """Read a recording as ``(frames, 2)`` int16 and its sample rate, even if it was cut short.

    A FLAC whose writer was killed has no length in its header; it is read block by block up
    to the last complete frame instead of failing.
    """
    blocks: list[NDArray[np.int16]] = []
    try:
        with sf.SoundFile(str(path)) as f:
            rate = int(f.samplerate)
            while True:
                try:
                    block = f.read(SAMPLE_RATE, dtype="int16", always_2d=True)
                except (sf.SoundFileError, RuntimeError):
                    break  # truncated stream: keep what decoded cleanly
                if not len(block):
                    break
                blocks.append(block)
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        raise RecordingError(path, f"cannot read recording: {exc}") from exc
    if not blocks:
        return np.zeros((0, 2), dtype=np.int16), rate
    return np.concatenate(blocks), rate


def repair_recording(path: Path | str) -> float:
    """Make a recording whose writer was killed whole again; returns its length in seconds.

    A WAV's header covers what was written up to the writer's last flush (once a second); the
    audio after it is on disk too, so the header is made to cover all of it. A FLAC needs no
    repair (it is read up to its last complete frame). Raises :class:`RecordingError` if the
    file cannot be read at all.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".wav":
            offset = _find_wav_data(path)
            if offset is None:
                raise RecordingError(path, "not a WAV file with a data chunk")
            _patch_wav_sizes(path, offset, path.stat().st_size - offset - 8)
            info = sf.info(str(path))
            return float(info.frames) / float(info.samplerate)
    except (sf.SoundFileError, RuntimeError, OSError, struct.error) as exc:
        raise RecordingError(path, f"cannot repair recording: {exc}") from exc
    try:
        info = sf.info(str(path))
        # Finished: STREAMINFO has the length, nothing to decode. A killed encoder left it
        # unknown, which libsndfile reports as an absurd count.
        if 0 < info.frames < _PLAUSIBLE_FRAMES:
            return float(info.frames) / float(info.samplerate)
    except (sf.SoundFileError, RuntimeError, OSError):
        pass
    frames, rate = read_recording(path)
    return len(frames) / rate
