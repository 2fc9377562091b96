"""An RTP stream of the PBX's own (music, prompts, tones): frames in, G.711 RTP packets out.

Sans-I/O: :meth:`RtpStream.next_packet` is called once per 20 ms tick by whoever owns the clock
(:mod:`media.playback`) and returns the bytes to send.

One leg gets one RTP stream, whatever is played on it (RFC 3550 5.1, 8: one SSRC, one sequence
number and timestamp space). :meth:`RtpStream.set_source` swaps what is played without starting
a new stream, and :class:`SourceChain` plays prompts, silences and tones one after another. When
the stream resumes after ticks in which it sent nothing (between two prompts an IVR started
separately, say), the timestamp advances by the time that passed and the first packet carries
the marker bit, as after silence suppression (RFC 3551 4.1).

Sources are pull objects (:class:`FrameSource`): ``next_frame()`` returns the next 160 samples,
or None once a finite source has ended.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

import numpy as np
from numpy.typing import NDArray

from .g711 import Codec
from .rtp import RtpPacket

__all__ = [
    "FRAME_SAMPLES",
    "PTIME",
    "FrameQueue",
    "FrameSource",
    "RtpStream",
    "SamplesSource",
    "SourceChain",
    "silence_source",
]

FRAME_SAMPLES: Final = 160  # 20 ms at 8 kHz (RFC 3551 4.5.14: ptime 20 for G.711)
PTIME: Final = 0.020
"""Seconds per frame."""


class FrameSource(Protocol):
    def next_frame(self) -> NDArray[np.int16] | None:
        """The next 160 samples, or None when the source has ended."""


class RtpStream:
    """Numbers, times and encodes one outgoing stream (RFC 3550 5.1: random SSRC, random
    initial sequence number and timestamp)."""

    __slots__ = ("_codec", "_last_time", "_packet", "_source", "ended", "octets", "packets")

    def __init__(self, source: FrameSource, codec: Codec) -> None:
        self._source = source
        self._codec = codec
        self._packet = RtpPacket(
            payload_type=codec.payload_type,
            marker=True,  # RFC 3551 4.1: the first packet of a talkspurt
            sequence_number=secrets.randbelow(1 << 16),
            timestamp=secrets.randbelow(1 << 32),
            ssrc=secrets.randbelow(1 << 32),
        )
        self._last_time: float | None = None
        self.ended = False
        #: RTP packets and payload octets sent so far (RFC 3550 6.4.1 sender info).
        self.packets = 0
        self.octets = 0

    @property
    def source(self) -> FrameSource:
        """What is being played."""
        return self._source

    @property
    def codec(self) -> Codec:
        """The codec packets are encoded with."""
        return self._codec

    @property
    def ssrc(self) -> int:
        """The stream's SSRC; it never changes."""
        return self._packet.ssrc

    @property
    def sequence_number(self) -> int:
        """The sequence number the next packet will carry."""
        return self._packet.sequence_number

    @property
    def timestamp(self) -> int:
        """The RTP timestamp the next packet will carry (before any gap is added)."""
        return self._packet.timestamp

    def set_source(self, source: FrameSource) -> None:
        """Play ``source`` from the next packet on, continuing this stream's SSRC, sequence
        numbers and timestamps (clears :attr:`ended`)."""
        self._source = source
        self.ended = False

    def next_packet(self, now: float | None = None) -> bytes | None:
        """The packet for the next 20 ms, or None once the source has ended.

        ``now`` is the tick's time on the engine clock. When ticks went by without a packet,
        the timestamp is moved on by their length and the marker bit is set (RFC 3551 4.1);
        without ``now`` every packet follows the previous one.
        """
        frame = self._source.next_frame()
        if frame is None:
            self.ended = True
            return None
        pkt = self._packet
        if now is not None:
            last = self._last_time
            self._last_time = now
            if last is not None:
                skipped = round((now - last) / PTIME) - 1
                if skipped > 0:
                    pkt.timestamp = (pkt.timestamp + skipped * FRAME_SAMPLES) & 0xFFFFFFFF
                    pkt.marker = True
        pkt.payload = self._codec.encode(frame)
        data = bytes(pkt)
        self.packets += 1
        self.octets += len(pkt.payload)
        pkt.marker = False
        pkt.sequence_number = (pkt.sequence_number + 1) & 0xFFFF
        pkt.timestamp = (pkt.timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
        return data


class SamplesSource:
    """Plays an int16 array (a decoded prompt) once in 20 ms frames, then ends.

    The last frame is padded with silence. Frames are views of the array, not copies, so the
    array must not change while it plays (decoded prompts are shared read-only).
    """

    __slots__ = ("_position", "_samples")

    def __init__(self, samples: NDArray[np.int16]) -> None:
        data = np.asarray(samples)
        if data.ndim != 1 or data.dtype != np.int16:
            raise ValueError(
                f"samples must be 1-D int16 audio, got {data.dtype} of shape {data.shape}"
            )
        self._samples = data
        self._position = 0

    @property
    def remaining_frames(self) -> int:
        """Frames still to play."""
        left = len(self._samples) - self._position
        return max(0, -(-left // FRAME_SAMPLES))

    def next_frame(self) -> NDArray[np.int16] | None:
        """The next 160 samples, or None at the end."""
        pos = self._position
        if pos >= len(self._samples):
            return None
        self._position = pos + FRAME_SAMPLES
        frame = self._samples[pos : pos + FRAME_SAMPLES]
        if len(frame) < FRAME_SAMPLES:
            frame = np.concatenate([frame, np.zeros(FRAME_SAMPLES - len(frame), np.int16)])
        return frame


def silence_source(seconds: float) -> SamplesSource:
    """A finite source of ``seconds`` of silence (rounded to whole 20 ms frames), for the
    pause between two prompts."""
    if not 0 <= seconds <= 3600:
        raise ValueError(f"silence must last 0 to 3600 seconds, got {seconds}")
    frames = round(seconds / PTIME)
    return SamplesSource(np.zeros(frames * FRAME_SAMPLES, dtype=np.int16))


class FrameQueue:
    """A live source fed frame by frame (an echo test plays back what the caller said).

    :meth:`push` queues a 160-sample frame; :meth:`next_frame` returns the oldest one, or
    silence while the queue is empty, until :meth:`close`. At most ``depth`` frames wait: older
    ones are dropped, so a producer that runs ahead adds at most ``depth`` x 20 ms of delay.
    """

    __slots__ = ("_closed", "_frames", "_silence", "dropped")

    def __init__(self, depth: int = 10) -> None:
        if depth < 1:
            raise ValueError(f"queue depth must be at least 1 frame, got {depth}")
        self._frames: deque[NDArray[np.int16]] = deque(maxlen=depth)
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._closed = False
        #: Frames pushed out by newer ones before they were played.
        self.dropped = 0

    def __len__(self) -> int:
        """Frames waiting."""
        return len(self._frames)

    def push(self, frame: NDArray[np.int16]) -> None:
        """Queue one frame of 160 int16 samples."""
        if frame.shape != (FRAME_SAMPLES,) or frame.dtype != np.int16:
            raise ValueError(
                f"a frame is {FRAME_SAMPLES} int16 samples, got {frame.dtype} {frame.shape}"
            )
        if len(self._frames) == self._frames.maxlen:
            self.dropped += 1
        self._frames.append(frame)

    def close(self) -> None:
        """End the source once the queued frames have played."""
        self._closed = True

    def next_frame(self) -> NDArray[np.int16] | None:
        """The oldest queued frame; silence if none; None once closed and empty."""
        if self._frames:
            return self._frames.popleft()
        return None if self._closed else self._silence


class SourceChain:
    """Plays sources one after another (prompt, silence, next prompt, ...), then ends.

    Each item may carry an ``on_done`` callback, called (from inside :meth:`next_frame`, that
    is on the engine tick) when that item has played to its end; it may :meth:`append` more.
    An endless source (hold music) keeps the chain on it until :meth:`clear` or :meth:`skip`.
    """

    __slots__ = ("_items",)

    def __init__(self, *sources: FrameSource) -> None:
        self._items: deque[tuple[FrameSource, Callable[[], None] | None]] = deque(
            (source, None) for source in sources
        )

    def __len__(self) -> int:
        """Items not yet finished (the one playing included)."""
        return len(self._items)

    def append(self, source: FrameSource, on_done: Callable[[], None] | None = None) -> None:
        """Queue ``source`` after the others; ``on_done()`` runs when it has played out."""
        self._items.append((source, on_done))

    def skip(self) -> None:
        """Drop the item playing now (its ``on_done`` is not called) and go on to the next."""
        if self._items:
            self._items.popleft()

    def clear(self) -> None:
        """Drop every item; the chain ends at the next frame unless more are appended."""
        self._items.clear()

    def next_frame(self) -> NDArray[np.int16] | None:
        """The next frame of the first unfinished item, or None when all have played."""
        items = self._items
        while items:
            source, on_done = items[0]
            frame = source.next_frame()
            if frame is not None:
                return frame
            items.popleft()
            if on_done is not None:
                on_done()
        return None
