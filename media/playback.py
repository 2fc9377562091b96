"""The media engine's clock: one 20 ms tick that drives everything the PBX plays or processes.

All streams and subscribers advance together on one timer paced against an absolute start
(tick n fires at ``start + n * 0.02``), so there is no drift and no sleep per packet or per
stream; a late tick is caught up at once rather than spread. When nothing plays and nobody is
subscribed the timer stops.

Each tick first calls the subscribers (``fn(now)``: a terminated leg pulls its jitter buffer and
runs its DTMF detectors, see :mod:`media.local`), then sends one packet of every stream. A digit
found by a subscriber can therefore stop a prompt before its next packet goes out (barge-in).
``now`` is the tick's ideal time on the event loop's clock (``start + n * 0.02``), not the
moment the callback happened to run.

A finite stream that ends is removed and its ``on_done`` callback runs; if that callback plays
the next prompt under the same key, the new stream sends in the same tick, so a prompt chain
has no gap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable

from .player import PTIME, RtpStream

__all__ = ["PTIME", "PlaybackEngine", "Sender", "Subscriber"]

logger = logging.getLogger(__name__)

#: Ticks missed by more than this are skipped, not replayed (the loop was blocked for a while).
_MAX_CATCH_UP = 10
# A stream whose on_done starts another that ends at once, and so on, may chain this often in
# one tick; beyond that the next stream waits for the next tick.
_MAX_CHAIN = 8

Sender = Callable[[bytes], bool]
"""Puts one packet on the wire; False if it could not be sent."""
Subscriber = Callable[[float], None]
"""Called once per tick with the tick's time."""


class _Playing:
    __slots__ = ("on_done", "send", "stream")

    def __init__(
        self, stream: RtpStream, send: Sender, on_done: Callable[[], None] | None
    ) -> None:
        self.stream = stream
        self.send = send
        self.on_done = on_done


class PlaybackEngine:
    """Streams and per-tick subscribers, each keyed by the caller's id (two namespaces)."""

    def __init__(self) -> None:
        self._streams: dict[Hashable, _Playing] = {}
        self._subscribers: dict[Hashable, Subscriber] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._start = 0.0
        self._tick = 0
        #: Packets handed to a sender that accepted them.
        self.sent = 0
        #: Ticks skipped because the event loop was blocked for more than 10 ticks.
        self.late_ticks = 0
        #: Streams, subscribers and callbacks removed because they raised.
        self.errors = 0

    def __len__(self) -> int:
        """Number of streams playing."""
        return len(self._streams)

    def __contains__(self, key: object) -> bool:
        """Whether a stream plays under ``key``."""
        return key in self._streams

    @property
    def subscribers(self) -> int:
        """Number of per-tick subscribers."""
        return len(self._subscribers)

    def now(self) -> float:
        """The engine clock (the running event loop's ``time()``), for adapters that stamp
        packets with the same clock the ticks use."""
        return asyncio.get_running_loop().time()

    def play(
        self,
        key: Hashable,
        stream: RtpStream,
        send: Sender,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        """Start (or replace) the stream under ``key``; ``send`` puts one packet on the wire.

        ``on_done()`` runs on the tick at which a finite stream has played to its end; it does
        not run when the stream is stopped or replaced.
        """
        self._streams[key] = _Playing(stream, send, on_done)
        self._ensure_timer()

    def stop(self, key: Hashable) -> bool:
        """Stop the stream under ``key`` at once (no further packet); False if none played."""
        return self._streams.pop(key, None) is not None

    def subscribe(self, key: Hashable, fn: Subscriber) -> None:
        """Call ``fn(now)`` on every tick (replacing any subscriber under ``key``)."""
        self._subscribers[key] = fn
        self._ensure_timer()

    def unsubscribe(self, key: Hashable) -> bool:
        """Stop calling the subscriber under ``key``; False if there was none."""
        return self._subscribers.pop(key, None) is not None

    def close(self) -> None:
        """Stop everything and the timer."""
        self._streams.clear()
        self._subscribers.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _ensure_timer(self) -> None:
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._start = loop.time()
            self._tick = 0
            self._timer = loop.call_at(self._start, self._on_tick)

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
            self._run_tick(self._start + self._tick * PTIME)
            self._tick += 1
        if not self._streams and not self._subscribers:
            self._timer = None
            return
        self._timer = loop.call_at(self._start + self._tick * PTIME, self._on_tick)

    def _run_tick(self, now: float) -> None:
        subscribers = self._subscribers
        if subscribers:
            # Snapshots: a callback may subscribe, unsubscribe, play or stop anything.
            for key, fn in list(subscribers.items()):
                if subscribers.get(key) is not fn:
                    continue  # removed by an earlier subscriber in this tick
                try:
                    fn(now)
                except Exception:
                    self._failed("subscriber", key)
                    if subscribers.get(key) is fn:
                        del subscribers[key]
        if self._streams:
            for key, playing in list(self._streams.items()):
                self._send(key, playing, now)

    def _send(self, key: Hashable, playing: _Playing, now: float) -> None:
        streams = self._streams
        for _ in range(_MAX_CHAIN):
            if streams.get(key) is not playing:
                return  # stopped or replaced earlier in this tick: stopping is immediate
            try:
                data = playing.stream.next_packet(now)
                if data is not None:
                    if playing.send(data):
                        self.sent += 1
                    return
            except Exception:
                self._failed("stream", key)
                streams.pop(key, None)
                return
            del streams[key]
            if playing.on_done is None:
                return
            try:
                playing.on_done()
            except Exception:
                self._failed("on_done callback", key)
                return
            nxt = streams.get(key)
            if nxt is None:
                return
            # The callback played the next prompt under the same key: it starts in this tick,
            # so the RTP timestamps run on without a gap.
            playing = nxt

    def _failed(self, what: str, key: Hashable) -> None:
        # Once per failing stream or subscriber (it is removed), never once per tick.
        self.errors += 1
        logger.exception("media engine: %s %r raised and was removed", what, key)
