"""Placing a call's two RTP streams on one timeline for a stereo recording (sans-I/O).

Packets arrive out of order, late or not at all, and each leg has its own RTP timestamp base.
Each packet is placed by its RTP timestamp relative to its stream's first packet, and that first
packet by its arrival time relative to the start of the recording, so loss and jitter neither
shift nor stretch the timeline and the two channels stay aligned. :meth:`RecordingMixer.take`
returns everything up to a moment a little in the past (the late-packet margin), as two
equally long int16 arrays: silence where nothing was received.

Theory of operation (cost): the mixer is the relay's :class:`media.relay.PacketSink`. Only the
first packet of a stream comes with its arrival time (:meth:`RecordingMixer.capture`); after it
the relay appends each packet of that leg to a plain list, with no call and no clock read per
packet. Once a second :meth:`RecordingMixer.take` parses, places and decodes each leg's batch
in a few numpy operations when the packets share one size and a bare 12-byte header (G.711 at
a fixed ptime: nearly always); other packets (CSRCs, header extension, padding, odd sizes) take
a per-packet path.

Streams change: when the relay gives a leg a new address (the far phone was replaced,
:meth:`RecordingMixer.restart`) the next packet starts a new stream placed by its own arrival
time. A new SSRC or an impossible timestamp jump within a batch (a phone restarting its
stream, say after hold) continues the new stream where the old one stopped, or at the previous
take if the leg was silent since. Either way the file keeps one timeline.

Pause (:meth:`RecordingMixer.pause` / :meth:`RecordingMixer.resume`): the timeline keeps
running; packets that arrive while paused are dropped unread, and whatever falls into a paused
stretch of the timeline is replaced by silence before it leaves the mixer, so none of that
audio reaches the file.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .g711 import alaw_decode, ulaw_decode

__all__ = ["RATE", "RecordingMixer"]

RATE = 8000
_AUDIO_PTS = (0, 8)  # PCMU, PCMA (RFC 3551 6)
#: A timestamp more than this many samples away from where real time allows is not a jump
#: in the audio but a new stream (a phone restarted it with a new base).
_MAX_SKEW = 2 * RATE
_LAG_SECONDS = 0.25
#: Audio placed further than this ahead of the last take is dropped, bounding memory.
_MAX_AHEAD = 10 * RATE
_ULAW = ulaw_decode(bytes(range(256)))
_ALAW = alaw_decode(bytes(range(256)))


class _Stream:
    """Packets of one leg under one timestamp base."""

    __slots__ = ("base_pos", "base_ts", "end", "packets", "ssrc")

    def __init__(self, base_pos: int, base_ts: int, ssrc: int) -> None:
        self.base_pos = base_pos
        self.base_ts = base_ts
        self.ssrc = ssrc
        self.end = base_pos  # timeline position just after the last audio placed
        self.packets: list[bytes] = []


class RecordingMixer:
    """Collects the G.711 packets of legs 0 (caller) and 1 (callee) from ``start`` on."""

    __slots__ = (
        "_floor",
        "_lag_limit",
        "_pauses",
        "_pending",
        "_restart",
        "_seen",
        "_streams",
        "_written",
        "margin",
        "start",
    )

    def __init__(self, start: float, margin: float = 0.2) -> None:
        self.start = start
        self.margin = margin
        self._streams: list[list[_Stream]] = [[], []]
        self._restart = [True, True]  # the next packet of the leg starts a stream
        # Decoded audio already placed beyond the last take, per leg, from _written on.
        self._pending: list[NDArray[np.int16]] = [_EMPTY, _EMPTY]
        self._pauses: list[list[int | None]] = []  # [from, to) in samples; to None: ongoing
        self._written = 0  # samples handed out so far
        self._seen = 0  # the latest timeline position known to have passed (for sanity checks)
        self._floor = 0  # where the last take was: later packets arrived after it
        # How far behind real time a stream's newest packet may be before the stream is moved
        # to now (jitter and the late-packet margin stay below it).
        self._lag_limit = round(max(margin, _LAG_SECONDS) * RATE)

    # -- the relay's side (media.relay.PacketSink) -------------------------------------------

    def capture(self, leg: int, packet: bytes, now: float) -> list[bytes] | None:
        """A packet of ``leg`` that arrived at ``now``. The first audio packet of a stream
        fixes where the stream sits on the timeline; the returned list takes the rest."""
        parsed = _parse(packet)
        if parsed is None or parsed[0] not in _AUDIO_PTS:
            return None  # not audio: wait for an audio packet to start the stream
        _pt, ts, ssrc, _payload = parsed
        pos = max(0, round((now - self.start) * RATE))
        self._seen = max(self._seen, pos)
        streams = self._streams[leg]
        if not self._restart[leg] and streams:
            streams[-1].packets.append(packet)
            return streams[-1].packets
        stream = _Stream(pos, ts, ssrc)
        streams.append(stream)
        self._restart[leg] = False
        stream.packets.append(packet)
        return stream.packets

    def restart(self, leg: int) -> None:
        """``leg``'s phone changed: its next packet starts a new stream, placed by its own
        arrival time and timestamp (new SSRC, new sequence and timestamp base)."""
        self._restart[leg] = True

    def feed(self, leg: int, packet: bytes, arrival: float) -> None:
        """One RTP packet from ``leg``'s phone, with its arrival time (the per-packet way in,
        for callers that are not the relay)."""
        streams = self._streams[leg]
        if self._restart[leg] or not streams:
            self.capture(leg, packet, arrival)
        else:
            self._seen = max(self._seen, round((arrival - self.start) * RATE))
            streams[-1].packets.append(packet)

    # -- pause ----------------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`."""
        return bool(self._pauses) and self._pauses[-1][1] is None

    def pause(self, now: float) -> bool:
        """From ``now`` on both channels carry silence; False if already paused.

        What arrived before is placed now; what arrives while paused is thrown away unread,
        and the paused stretch of the timeline is silenced as well (so a packet sent just
        before the pause but placed by its timestamp just after it is silenced too).
        """
        if self.paused:
            return False
        self._place_all()
        self._pauses.append([max(self._written, self._position(now)), None])
        return True

    def resume(self, now: float) -> bool:
        """Audio from ``now`` on is recorded again; False if not paused."""
        if not self.paused:
            return False
        self._discard_all()
        begin = self._pauses[-1][0]
        assert begin is not None
        self._pauses[-1][1] = max(begin, self._position(now))
        return True

    # -- the writer's side ---------------------------------------------------------------------

    def take(self, now: float) -> tuple[NDArray[np.int16], NDArray[np.int16]]:
        """Both channels from the last take up to ``now - margin``."""
        self._seen = max(self._seen, self._position(now))
        out = self._take(self._position(now - self.margin))
        self._floor = max(self._floor, self._position(now))
        return out

    def take_all(self) -> tuple[NDArray[np.int16], NDArray[np.int16]]:
        """Everything received, to close the recording."""
        self._place_all()
        end = self._written
        for pending in self._pending:
            end = max(end, self._written + len(pending))
        return self._take(end)

    @property
    def written(self) -> int:
        """Samples per channel handed out so far (the recording's length)."""
        return self._written

    def _position(self, t: float) -> int:
        return round((t - self.start) * RATE)

    def _take(self, end: int) -> tuple[NDArray[np.int16], NDArray[np.int16]]:
        self._place_all()
        n = max(0, end - self._written)
        out = []
        for leg in (0, 1):
            pending = self._pending[leg]
            if len(pending) >= n:
                channel = pending[:n].copy()
                self._pending[leg] = pending[n:]
            else:
                channel = np.zeros(n, dtype=np.int16)
                channel[: len(pending)] = pending
                self._pending[leg] = _EMPTY
            out.append(channel)
        self._silence_paused(out[0], out[1])
        self._written += n
        return out[0], out[1]

    def _silence_paused(self, left: NDArray[np.int16], right: NDArray[np.int16]) -> None:
        lo, hi = self._written, self._written + len(left)
        keep: list[list[int | None]] = []
        for span in self._pauses:
            begin, stop = span
            assert begin is not None
            if stop is None or stop > hi:
                keep.append(span)
            a, b = max(begin, lo), min(hi if stop is None else stop, hi)
            if a < b:
                left[a - lo : b - lo] = 0
                right[a - lo : b - lo] = 0
        self._pauses = keep

    def _discard_all(self) -> None:
        for streams in self._streams:
            for stream in streams:
                del stream.packets[:]  # in place: the relay appends to these lists
            if len(streams) > 1:
                del streams[:-1]

    def _place_all(self) -> None:
        if self.paused:
            self._discard_all()
            return
        for leg in (0, 1):
            streams = self._streams[leg]
            for stream in streams:
                if stream.packets:
                    batch = stream.packets[:]
                    # Cleared in place: the relay appends to this very list.
                    del stream.packets[:]
                    self._place(leg, stream, batch)
            # Older streams have no packets left to come; keep only the current one.
            if len(streams) > 1:
                del streams[:-1]

    def _place(self, leg: int, stream: _Stream, batch: list[bytes]) -> None:
        size = len(batch[0])
        blob = b"".join(batch)
        count = len(batch)
        if size > 12 and len(blob) == size * count:
            raw = np.frombuffer(blob, dtype=np.uint8).reshape(count, size)
            if not np.any(raw[:, 0] != 0x80):  # version 2, no padding, extension or CSRC
                self._place_fixed(leg, stream, raw)
                return
        self._place_each(leg, stream, batch)

    def _place_fixed(self, leg: int, stream: _Stream, raw: NDArray[np.uint8]) -> None:
        # Every packet has the bare 12-byte header and the same size.
        count, size = raw.shape
        length = size - 12
        kind = raw[:, 1] & 0x7F
        first, last = int(kind.min()), int(kind.max())
        if first != last or first not in _AUDIO_PTS:
            audio = (kind == 0) | (kind == 8)
            raw, kind = raw[audio], kind[audio]
            if not len(raw):
                return
        table = _ALAW if first == last == 8 else _ULAW
        head = raw[:, 4:12].copy().view(">u4")  # timestamp, SSRC
        ts = head[:, 0].astype(np.int64)
        ssrc = head[:, 1]
        if first == last:
            pcm = table.take(raw[:, 12:])
        else:
            pcm = np.where((kind == 8)[:, None], _ALAW.take(raw[:, 12:]), _ULAW.take(raw[:, 12:]))
        # The common case in a handful of operations: one SSRC, timestamps where real time
        # allows them, in order and without gaps.
        delta = ((ts - stream.base_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        pos = stream.base_pos + delta
        rel0 = int(pos[0]) - self._written
        if (
            len(ts) == count
            and rel0 >= 0
            and int(pos[-1]) <= self._seen + _MAX_SKEW
            and rel0 + length * count <= _MAX_AHEAD
            and not (ssrc != stream.ssrc).any()
            and (count == 1 or bool((np.diff(pos) == length).all()))
        ):
            top = rel0 + length * count
            pending = self._pending[leg]
            if top > len(pending):
                grown = np.zeros(top, dtype=np.int16)
                grown[: len(pending)] = pending
                pending = grown
                self._pending[leg] = pending
            pending[rel0:top] = pcm.reshape(-1)
            stream.end = max(stream.end, int(pos[-1]) + length)
            return
        self._place_run(leg, stream, ts, ssrc, pcm)

    def _place_each(self, leg: int, stream: _Stream, batch: list[bytes]) -> None:
        # The slow path: header fields read per packet (CSRCs, extension, padding, odd sizes).
        for packet in batch:
            parsed = _parse(packet)
            if parsed is None or parsed[0] not in _AUDIO_PTS or not parsed[3]:
                continue
            pt, ts, ssrc, payload = parsed
            table = _ALAW if pt == 8 else _ULAW
            pcm = table[np.frombuffer(payload, dtype=np.uint8)][None, :]
            self._place_run(leg, stream, np.array([ts], dtype=np.int64),
                            np.array([ssrc], dtype=np.uint32), pcm)

    def _place_run(self, leg: int, stream: _Stream, ts: NDArray[np.int64],
                   ssrc: NDArray[np.uint32], pcm: NDArray[np.int16]) -> None:
        # Packets [0, n) of one leg, in arrival order, each pcm.shape[1] samples long.
        length = pcm.shape[1]
        rebased = False
        for _ in range(len(ts) + 1):  # each round consumes at least one packet
            # Signed 32-bit distance from the stream's first timestamp (RFC 3550 5.1: wraps).
            delta = ((ts - stream.base_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            pos = stream.base_pos + delta
            bad = (ssrc != stream.ssrc) | (pos > self._seen + _MAX_SKEW) | (
                pos + length < self._written - _MAX_SKEW
            )
            if not rebased and int(pos[-1]) + length < self._seen - self._lag_limit:
                # Even the newest packet lands further back than the late-packet margin: the
                # stream lags real time (a slow clock, a pause without a timestamp jump). Move
                # it to now instead of writing it into the past, where it would be lost.
                bad[:] = True
            bad[0] &= not rebased  # a stream just rebased on this packet takes it
            cut = int(np.argmax(bad)) if bad.any() else len(ts)
            if cut:
                self._write(leg, pos[:cut], pcm[:cut])
                stream.end = max(stream.end, int(pos[:cut].max()) + length)
            if cut == len(ts):
                return
            # A new stream within the batch: it goes on where the old one stopped, or, if
            # the leg was silent meanwhile, at the last take (everything in this batch
            # arrived after it).
            stream.base_pos = max(stream.end, self._floor)
            stream.base_ts, stream.ssrc = int(ts[cut]), int(ssrc[cut])
            ts, ssrc, pcm = ts[cut:], ssrc[cut:], pcm[cut:]
            rebased = True

    def _write(self, leg: int, pos: NDArray[np.int64], pcm: NDArray[np.int16]) -> None:
        length = pcm.shape[1]
        rel = pos - self._written
        top = int(rel.max()) + length
        if top <= 0:
            return  # all later than the margin allowed: their moment is already written
        top = min(top, _MAX_AHEAD)
        pending = self._pending[leg]
        if top > len(pending):
            grown = np.zeros(top, dtype=np.int16)
            grown[: len(pending)] = pending
            pending = grown
        first = int(rel[0])
        if len(rel) > 1 and first >= 0 and first + length * len(rel) <= top and (
            np.all(np.diff(rel) == length)
        ):
            # In order and without gaps: one copy.
            pending[first : first + length * len(rel)] = pcm.reshape(-1)
        else:
            index = rel[:, None] + np.arange(length)
            ok = (index >= 0) & (index < top)
            pending[index[ok]] = pcm[ok]
        self._pending[leg] = pending


_EMPTY: NDArray[np.int16] = np.zeros(0, dtype=np.int16)


def _parse(packet: bytes) -> tuple[int, int, int, bytes] | None:
    """``(payload type, timestamp, SSRC, payload)`` of an RTP packet, or None if malformed."""
    if len(packet) < 12 or packet[0] >> 6 != 2:
        return None
    first = packet[0]
    header = 12 + 4 * (first & 0x0F)
    if first & 0x10:  # RFC 3550 5.3.1 header extension
        if len(packet) < header + 4:
            return None
        header += 4 + 4 * int.from_bytes(packet[header + 2 : header + 4], "big")
    end = len(packet)
    if first & 0x20 and end > header:  # RFC 3550 5.1 padding: its last octet counts it
        end -= packet[-1]
    if end < header:
        return None
    ts = int.from_bytes(packet[4:8], "big")
    ssrc = int.from_bytes(packet[8:12], "big")
    return packet[1] & 0x7F, ts, ssrc, packet[header:end]
