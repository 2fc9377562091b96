"""Framing SIP messages on stream transports (RFC 3261 18.3) and RFC 5626 keep-alives.

On a stream, Content-Length is mandatory and is the only way to find where a message ends. A
frame that cannot be delimited (a missing, negative or duplicated Content-Length, an oversized
header block) is unrecoverable: the connection must be closed (RFC 4475 3.1.2.7, 3.1.2.8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: RFC 5626 3.5.1: a double CRLF is a keep-alive "ping", answered with a single CRLF "pong".
PING: Final = b"\r\n\r\n"
PONG: Final = b"\r\n"


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete message's bytes."""

    data: bytes


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """The peer sent a CRLFCRLF ping; answer with :data:`PONG`."""


@dataclass(frozen=True, slots=True)
class FramingError:
    """The stream cannot be framed any more; close the connection."""

    reason: str


StreamEvent = Frame | KeepAlive | FramingError


class StreamFramer:
    """Cuts a byte stream into SIP messages. Feed bytes, then iterate :meth:`events`."""

    __slots__ = ("_buf", "_failed", "max_size")

    def __init__(self, max_size: int = 65535) -> None:
        self._buf = bytearray()
        self._failed = False
        self.max_size = max_size

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Add received bytes; return the events they complete (in order)."""
        if self._failed:
            return []
        self._buf += data
        out: list[StreamEvent] = []
        buf = self._buf
        while buf:
            # Leading CRLFs between messages are allowed (RFC 3261 7.5); a CRLFCRLF run among
            # them is a keep-alive ping (RFC 5626 3.5.1).
            if buf[0] in (13, 10):
                n = 0
                while n < len(buf) and buf[n] in (13, 10):
                    n += 1
                run = bytes(buf[:n])
                if n == len(buf) and run != PING and len(run) < 4:
                    break  # maybe the start of a ping; wait for more
                if PING in run:
                    out.append(KeepAlive())
                del buf[:n]
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_size:
                    return self._fail(out, "header block too large")
                break
            length = _content_length(bytes(buf[:end]))
            if isinstance(length, str):
                return self._fail(out, length)
            total = end + 4 + length
            if total > self.max_size:
                return self._fail(out, "message too large")
            if len(buf) < total:
                break
            out.append(Frame(bytes(buf[:total])))
            del buf[:total]
        return out

    @property
    def pending(self) -> int:
        """Bytes of a message received only in part."""
        return len(self._buf)

    def _fail(self, out: list[StreamEvent], reason: str) -> list[StreamEvent]:
        self._failed = True
        self._buf.clear()
        out.append(FramingError(reason))
        return out


def _content_length(head: bytes) -> int | str:
    """The Content-Length of a header block, or an error string."""
    found: int | None = None
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if not colon or line[:1] in (b" ", b"\t"):
            continue
        n = name.strip().lower()
        if n == b"content-length" or n == b"l":
            v = value.strip()
            if found is not None:
                return "multiple Content-Length headers"
            if not v.isdigit() or len(v) > 9:
                return "bad Content-Length"
            found = int(v)
    if found is None:
        return "missing Content-Length on a stream transport"
    return found
