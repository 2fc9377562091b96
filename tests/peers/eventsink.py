"""The event stream of a peer process: JSON lines on a private copy of stdout."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from typing import IO, Any


class EventSink:
    """Writes ``{"event": NAME, "t": SECONDS, ...}`` lines; safe to call from any thread."""

    def __init__(self, stream: IO[str]) -> None:
        """Wrap ``stream``, which must receive nothing but events."""
        self._stream = stream
        self._lock = threading.Lock()
        self._t0 = time.monotonic()

    def emit(self, event: str, **fields: Any) -> None:
        """Write one event line and flush it."""
        record = {"event": event, "t": round(time.monotonic() - self._t0, 3), **fields}
        line = json.dumps(record) + "\n"
        # A vanished driver is not an error here: the lifetime bound ends us.
        with self._lock, contextlib.suppress(BrokenPipeError, ValueError):
            self._stream.write(line)
            self._stream.flush()


def isolate_stdout() -> EventSink:
    """Move events to a duplicate of fd 1 and point fd 1 (and ``sys.stdout``) at stderr.

    Whatever a library or native code prints then lands on stderr and can
    never corrupt the event stream the driver parses.
    """
    events_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return EventSink(os.fdopen(events_fd, "w", buffering=1, encoding="utf-8"))
