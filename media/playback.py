"""The media engine's clock: one 20 ms tick that drives every stream the PBX plays itself.

All streams advance together on a timer paced against an absolute start (tick n fires at
``start + n * 0.02``), so there is no drift and no sleep per packet or per stream; a late tick
is caught up at once rather than spread. When nothing plays the timer stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable

from .player import RtpStream

logger = logging.getLogger(__name__)

PTIME = 0.020
#: Ticks missed by more than this are skipped, not replayed (the loop was blocked for a while).
_MAX_CATCH_UP = 10

Sender = Callable[[bytes], bool]


class PlaybackEngine:
    """Streams keyed by the caller's id; each tick sends every stream's next packet."""

    def __init__(self) -> None:
        self._streams: dict[Hashable, tuple[RtpStream, Sender]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._start = 0.0
        self._tick = 0
        self.sent = 0
        self.late_ticks = 0

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, key: object) -> bool:
        return key in self._streams

    def play(self, key: Hashable, stream: RtpStream, send: Sender) -> None:
        """Start (or replace) the stream under ``key``; ``send`` puts one packet on the wire."""
        self._streams[key] = (stream, send)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._start = loop.time()
            self._tick = 0
            self._timer = loop.call_at(self._start, self._on_tick)

    def stop(self, key: Hashable) -> None:
        self._streams.pop(key, None)

    def close(self) -> None:
        self._streams.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = int((now - self._start) / PTIME) + 1 - self._tick
        if due > _MAX_CATCH_UP:
            # Blocked for a long while: resume from now instead of bursting old packets.
            self.late_ticks += due - 1
            self._tick += due - 1
            due = 1
        for _ in range(max(1, due)):
            self._send_all()
            self._tick += 1
        if not self._streams:
            self._timer = None
            return
        self._timer = loop.call_at(self._start + self._tick * PTIME, self._on_tick)

    def _send_all(self) -> None:
        ended = []
        for key, (stream, send) in self._streams.items():
            data = stream.next_packet()
            if data is None:
                ended.append(key)
            elif send(data):
                self.sent += 1
        for key in ended:
            del self._streams[key]
