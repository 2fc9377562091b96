"""A small jitter buffer for audio the PBX processes itself (IVR, DTMF, recording).

Theory of operation: the caller :meth:`~JitterBuffer.add`\\ s every RTP packet as it arrives
and calls :meth:`~JitterBuffer.pop` once per frame interval (ptime), so time is the number of
``pop`` calls; nothing here reads a clock.

- Playout starts once the buffered packets span ``prefetch`` sequence numbers, which gives
  reordered packets that many frame times to arrive.
- ``pop`` returns the next frame in sequence order. If that packet is missing but a later one
  is buffered, its playout time has come and gone: ``pop`` returns a frame with
  ``missing=True`` (so the caller conceals it) and moves on. If nothing is buffered at all
  (an underrun), ``pop`` returns ``None`` and the caller conceals that tick itself; those
  ticks are remembered, and when packets return, that many frames of the gap are skipped
  silently rather than reported missing a second time.
- Packets older than the playout point are late and dropped; a packet already buffered is a
  duplicate and dropped.
- The window holds ``capacity`` sequence numbers. A packet a little beyond it pushes the
  oldest buffered packets out (counted in ``overflowed``); a jump of more than
  :data:`media.rtp.MAX_MISORDER` packets, in either direction, is a new stream once the next
  packet confirms it (RFC 3550 A.1 uses the same two-packet rule): the buffer restarts there.

Sequence numbers wrap at 65535 (RFC 3550 5.1); all comparisons use :func:`media.rtp.seq_diff`.
"""

from __future__ import annotations

from dataclasses import dataclass

from media.rtp import MAX_MISORDER, seq_diff

__all__ = ["JitterBuffer", "JitterFrame"]


@dataclass(frozen=True, slots=True)
class JitterFrame:
    """One frame in playout order."""

    sequence_number: int
    #: RTP timestamp; for a missing frame, interpolated from its neighbours.
    timestamp: int
    #: Payload bytes; empty when ``missing``.
    payload: bytes
    #: The packet never arrived in time: the caller should conceal this frame.
    missing: bool = False


class JitterBuffer:
    """Reorders RTP packets by sequence number and reports losses (pure, deterministic)."""

    def __init__(self, capacity: int = 16, prefetch: int = 2) -> None:
        if capacity < 1:
            raise ValueError("jitter buffer capacity must be at least 1")
        if not 0 <= prefetch <= capacity:
            raise ValueError("jitter buffer prefetch must be between 0 and the capacity")
        self.capacity = capacity
        self.prefetch = prefetch
        self._packets: dict[int, tuple[int, bytes]] = {}
        self._next: int | None = None  # sequence number of the next frame to play
        self._playing = False
        self._owed = 0  # underrun ticks the caller already concealed
        self._last: tuple[int, int] | None = None  # (seq, ts) of the last frame returned
        self._pending: tuple[int, int, bytes] | None = None  # unconfirmed jump
        #: Packets dropped because they arrived after their playout time.
        self.late = 0
        #: Packets dropped because they were already buffered.
        self.duplicates = 0
        #: Buffered packets pushed out of the window before they were played.
        self.overflowed = 0
        #: Frames reported missing.
        self.missing = 0
        #: Times the buffer restarted on a new stream.
        self.resyncs = 0

    def __len__(self) -> int:
        """Number of packets buffered."""
        return len(self._packets)

    def reset(self) -> None:
        """Drop every buffered packet and wait for a new stream (its sender restarted with a
        new SSRC: RFC 3550 8.2 gives it a new, unrelated sequence number space)."""
        self._packets = {}
        self._next = None
        self._playing = False
        self._owed = 0
        self._last = None
        self._pending = None

    def add(self, packet_seq: int, timestamp: int, payload: bytes) -> bool:
        """Buffer one packet; return ``False`` if it was dropped (late, duplicate, unconfirmed)."""
        seq = packet_seq & 0xFFFF
        if self._next is None:
            self._restart(seq, timestamp, payload)
            return True
        delta = seq_diff(seq, self._next)
        ahead = delta - self.capacity + 1  # how far past the window's end
        if delta < -MAX_MISORDER or ahead > MAX_MISORDER:
            return self._jump(seq, timestamp, payload)
        self._pending = None
        if delta < 0:
            if self._playing or (self._packets and -delta + self._span() > self.capacity):
                self.late += 1
                return False
            # Before playout starts an earlier packet just moves the start back.
            self._next = seq
        elif seq in self._packets:
            self.duplicates += 1
            return False
        elif ahead > 0:
            self._slide(ahead)
        self._packets[seq] = (timestamp & 0xFFFFFFFF, payload)
        return True

    def pop(self) -> JitterFrame | None:
        """The next frame to play, a ``missing`` frame for a lost packet, or ``None``."""
        nxt = self._next
        if nxt is None:
            return None
        if not self._playing:
            # Prefetch counts sequence numbers, not packets, so a lost packet cannot stall it.
            if not self._packets or self._span() < self.prefetch:
                return None
            self._playing = True
        packet = self._packets.pop(nxt, None)
        if packet is None:
            if not self._packets:
                self._owed += 1
                return None
            first = self._first_buffered()
            # Ticks of the gap the caller already concealed during the underrun.
            skip = min(self._owed, seq_diff(first, nxt))
            self._owed = 0
            nxt = (nxt + skip) & 0xFFFF
            packet = self._packets.pop(nxt, None)
            if packet is None:
                self._next = (nxt + 1) & 0xFFFF
                self.missing += 1
                return JitterFrame(nxt, self._interpolate(nxt, first), b"", missing=True)
        self._owed = 0
        self._next = (nxt + 1) & 0xFFFF
        self._last = (nxt, packet[0])
        return JitterFrame(nxt, packet[0], packet[1])

    def _restart(self, seq: int, timestamp: int, payload: bytes) -> None:
        self._packets = {seq: (timestamp & 0xFFFFFFFF, payload)}
        self._next = seq
        self._playing = False
        self._owed = 0
        self._last = None
        self._pending = None

    def _jump(self, seq: int, timestamp: int, payload: bytes) -> bool:
        # RFC 3550 A.1: believe a large jump only when the following packet confirms it.
        pending = self._pending
        if pending is not None and seq_diff(seq, pending[0]) == 1:
            self.overflowed += len(self._packets)
            self.resyncs += 1
            if self.capacity < 2:
                # Only the newer packet fits: the confirming one starts the new stream.
                self.overflowed += 1
                self._restart(seq, timestamp, payload)
                return True
            self._restart(pending[0], pending[1], pending[2])
            self._packets[seq] = (timestamp & 0xFFFFFFFF, payload)
            return True
        self._pending = (seq, timestamp, payload)
        return False

    def _slide(self, ahead: int) -> None:
        # The newest packet is beyond the window: the oldest sequence numbers give way.
        assert self._next is not None
        new_next = (self._next + ahead) & 0xFFFF
        for old in [s for s in self._packets if seq_diff(s, new_next) < 0]:
            del self._packets[old]
            self.overflowed += 1
        self._next = new_next

    def _span(self) -> int:
        assert self._next is not None
        nxt = self._next
        return max(seq_diff(s, nxt) for s in self._packets) + 1

    def _first_buffered(self) -> int:
        assert self._next is not None
        nxt = self._next
        return min(self._packets, key=lambda s: seq_diff(s, nxt))

    def _interpolate(self, seq: int, first: int) -> int:
        ts_first = self._packets[first][0]
        if self._last is None:
            return ts_first
        last_seq, last_ts = self._last
        steps = seq_diff(first, last_seq)
        step = ((ts_first - last_ts) & 0xFFFFFFFF) // steps if steps > 0 else 0
        return (last_ts + step * seq_diff(seq, last_seq)) & 0xFFFFFFFF
