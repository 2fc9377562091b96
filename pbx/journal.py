"""An append-only journal of call-record events, so that a killed PBX loses none of them.

Call-record events are folded in memory and written to the database every 200 ms
(:mod:`crmsync.writer`); a ``kill -9`` would lose what was folded since the last commit and leave
the calls in progress unfinished. So every event is also appended to the journal (one
``os.write`` each: once it returns the bytes are the kernel's, and a killed process cannot take
them back; a power cut can, as it can take the database's last commits under
``synchronous=NORMAL``).

The journal is a directory of segments, ``<seq>.journal``. The segment being written is
rotated each time the records are flushed; the flushed segment is deleted once the database
job holding its events has committed. Each segment begins with the ids of the calls open when
it was started, so the segments still on disk after a crash name every call the process had
open, and hold every event not yet committed: :func:`read_journal` gives both back at the next
start (nothing here knows the database; :mod:`pbx.server` puts the two together).

Frames are ``<length u32><crc32 u32><pickle>``; a frame cut short or damaged by the kill ends
its segment. Events are stored as ``(class name, field values)`` so a later version with added
fields still reads them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import io
import logging
import os
import pickle
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .records import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallLeg,
    CallQueued,
    CallStarted,
    CallTransferred,
    RecordingSkipped,
)

logger = logging.getLogger(__name__)

_FRAME: Final = struct.Struct("<II")
_SUFFIX: Final = ".journal"
_EVENTS: Final[dict[str, type[Any]]] = {
    cls.__name__: cls
    for cls in (CallStarted, CallAnswered, CallEnded, CallTransferred, CallQueued,
                RecordingSkipped, CallLeg)
}
_FIELDS: Final[dict[type[Any], tuple[str, ...]]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _EVENTS.values()
}
_OPEN: Final = "open"
"""The tag of a segment's first frame: the ids of the calls open when it began."""


@dataclass(frozen=True, slots=True)
class Replay:
    """What the journal on disk holds: replay ``events`` over the calls in ``open_calls``."""

    open_calls: frozenset[str]
    """Calls open at the start of any segment (those still open are to be ended)."""
    events: tuple[CallEvent, ...]
    """Every event of every segment, oldest first."""
    last_written: float | None
    """When the journal was last written or touched (about when the process stopped), as a
    Unix time; None if there was no journal."""
    segments: tuple[int, ...]
    """The segments read: delete them (:meth:`RecordJournal.discard`) once the replayed
    records are committed."""
    damaged: int
    """Frames that could not be read (a cut write at the end of a segment, a bad frame)."""
    last_seen: dict[str, float] = dataclasses.field(default_factory=dict)
    """For each call, when the newest segment naming it was last written: about when the
    process that had it open stopped (a segment kept from an earlier run has its own time)."""


class RecordJournal:
    """The journal of one PBX process: append events, rotate at each flush, drop committed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        # One process per journal: a second one would replay (and end) the first one's live
        # calls and delete its segments. The lock goes with the process, however it ends.
        self._lock = os.open(directory / "lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise JournalLocked(
                f"the call-record journal {directory} is in use by another PBX process; each "
                "process needs its own storage.journal") from None
        existing = _segments(directory)
        self._seq = (existing[-1] + 1) if existing else 1
        self._fd: int | None = None
        self._written = False
        self._failed = False
        """The segment being written could not be opened or was cut by a failed write."""
        self.write_errors = 0

    def open(self, open_calls: Iterable[str]) -> None:
        """Start a new segment (after the replay of the old ones, if any)."""
        self._start(list(open_calls))

    def append(self, event: CallEvent) -> None:
        """Journal ``event``; never raises (a full disk must not stop calls, only this)."""
        self._written = True
        if self._fd is None:
            self._error(None)
            return
        cls = type(event)
        try:
            self._write((cls.__name__, tuple([getattr(event, f) for f in _FIELDS[cls]])))
        except OSError as exc:
            # Nothing written after a cut frame could be read back: the next flush starts a
            # new segment.
            self._error(exc)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def rotate(self, open_calls: Iterable[str]) -> int | None:
        """Close the segment being written, if anything was written to it, and start the next
        one headed by ``open_calls``; returns the closed segment's number, to pass to
        :meth:`committed` once everything it holds is in the database."""
        if not self._written and not self._failed:
            return None
        closed = self._seq
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        self._seq += 1
        self._start(list(open_calls))
        return closed

    def _error(self, exc: OSError | None) -> None:
        self._failed = True
        self.write_errors += 1
        if self.write_errors == 1 or self.write_errors % 10_000 == 0:
            logger.error("cannot write the call-record journal in %s (%d events not "
                         "journaled): %s", self.directory, self.write_errors,
                         exc or "no segment open")

    def committed(self, seq: int) -> None:
        """Everything in segment ``seq`` is in the database: delete it (any thread)."""
        self._unlink(seq)

    def discard(self, segments: Iterable[int]) -> None:
        """Delete replayed segments once what they held is committed."""
        for seq in segments:
            self._unlink(seq)

    def set_aside(self, segments: Iterable[int]) -> Path:
        """Move segments whose replay failed to ``failed/`` (for a person to look at), so
        that the next start does not fail on them again; returns that directory."""
        aside = self.directory / "failed"
        aside.mkdir(exist_ok=True)
        for seq in segments:
            with contextlib.suppress(FileNotFoundError):
                self._path(seq).rename(aside / self._path(seq).name)
        return aside

    def touch(self) -> None:
        """Mark the segment being written as alive now (its time is the crash time a later
        replay assumes for calls cut off)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.utime(self._fd)

    def close(self) -> None:
        """Stop writing; an empty last segment is removed (nothing to replay)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if not self._written:
                self._unlink(self._seq)
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def _start(self, open_calls: list[str]) -> None:
        self._written = False
        self._failed = False
        path = self._path(self._seq)
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                               0o600)
            self._write((_OPEN, tuple(open_calls)))
        except OSError as exc:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._error(exc)  # tried again at the next flush

    def _write(self, record: tuple[str, tuple[Any, ...]]) -> None:
        assert self._fd is not None
        data = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
        frame = _FRAME.pack(len(data), zlib.crc32(data)) + data
        # One write per frame: a kill leaves a frame whole or cut at the end, never interleaved.
        if os.write(self._fd, frame) != len(frame):
            raise OSError(errno.ENOSPC, "short write (disk full?)")

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:012d}{_SUFFIX}"

    def _unlink(self, seq: int) -> None:
        try:
            self._path(seq).unlink()
        except FileNotFoundError:
            pass
        except OSError:
            logger.exception("cannot delete journal segment %d", seq)


def read_journal(directory: Path) -> Replay:
    """Read every segment left in ``directory`` (by a process that did not stop cleanly)."""
    if not directory.is_dir():
        return Replay(frozenset(), (), None, (), 0)
    segments = _segments(directory)
    events: list[CallEvent] = []
    open_calls: set[str] = set()
    damaged = 0
    last: float | None = None
    seen: dict[str, float] = {}
    for seq in segments:
        path = directory / f"{seq:012d}{_SUFFIX}"
        try:
            data = path.read_bytes()
            mtime = path.stat().st_mtime
            last = max(last or 0.0, mtime)
        except OSError:
            logger.exception("cannot read journal segment %s", path)
            continue
        for record in _frames(data):
            if record is None:
                damaged += 1
                continue
            tag, values = record
            if tag == _OPEN:
                # Every segment's: one whose batch failed for good may be followed by a gap
                # (later segments committed and deleted) and calls opened in it.
                open_calls.update(values)
                for call_id in values:
                    seen[call_id] = mtime
                continue
            cls = _EVENTS.get(tag)
            try:
                if cls is None:
                    raise TypeError(f"unknown event {tag!r}")
                events.append(cls(*values))
                seen[events[-1].call_id] = mtime
            except TypeError:
                damaged += 1
                logger.warning("journal segment %s: cannot read an event %r", path, tag)
    return Replay(frozenset(open_calls), tuple(events), last, tuple(segments), damaged, seen)


def _frames(data: bytes) -> Iterable[tuple[str, tuple[Any, ...]] | None]:
    """The frames of a segment; None for one that is damaged. A cut frame ends the segment."""
    offset = 0
    end = len(data)
    while offset + _FRAME.size <= end:
        length, crc = _FRAME.unpack_from(data, offset)
        start = offset + _FRAME.size
        body = data[start:start + length]
        if len(body) < length or zlib.crc32(body) != crc:
            yield None  # cut off by the kill (or damaged): nothing after it can be trusted
            return
        offset = start + length
        try:
            record = _Unpickler(io.BytesIO(body)).load()
        except Exception:
            yield None
            continue
        if (isinstance(record, tuple) and len(record) == 2 and isinstance(record[0], str)
                and isinstance(record[1], tuple)):
            yield record
        else:
            yield None
    if offset < end:
        yield None  # a frame header cut in half


class JournalLocked(OSError):
    """Another process holds the journal."""


class _Unpickler(pickle.Unpickler):
    """Reads the journal's own frames only: plain values and times. A file planted in the
    directory cannot make the PBX run anything."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (("datetime", "datetime"), ("datetime", "timezone"),
                              ("datetime", "timedelta")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in the journal")


def _segments(directory: Path) -> list[int]:
    out = []
    for path in directory.glob(f"*{_SUFFIX}"):
        try:
            out.append(int(path.name.removesuffix(_SUFFIX)))
        except ValueError:
            continue
    return sorted(out)
