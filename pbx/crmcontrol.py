"""What the HTTP API asks of the CRM store, on the event loop's side.

The store (``crmsync.queries.CrmQueries``, handed in by the composition root) blocks on the
database, so :class:`CrmControl` runs every call to it in a small pool of worker threads of its
own: a slow query never stalls SIP, and API load never queues behind the other blocking work
of the process. A CSV export is made in batches on a thread of its own and handed to the
client chunk by chunk, so memory holds one batch whatever the size of the export. Recording
files are served only from inside the recordings directory.

Errors carry their HTTP answer (:class:`CrmRequestError.status_code`): the store's
``ValueError`` (bad number, field or cursor) is 422, its ``LookupError`` (unknown id) 404, its
``PermissionError`` (a call the key's user may not annotate) 403, and an impossible range
asked for here 400.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import logging
import os
import re
import stat
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, ParamSpec, Protocol, TypeVar

__all__ = [
    "CSV_COLUMNS", "CallDetailView", "CallKind", "CallOrder", "CallPageView", "CallQuery",
    "CallStatus", "CallType", "CrmControl", "CrmRequestError", "CrmStore", "Forbidden",
    "InvalidInput", "NotFound", "RecordKind", "RecordingFile", "UnusableRange",
]

logger = logging.getLogger(__name__)

CallKind = Literal["inbound", "outbound", "internal", "missed"]
CallType = Literal["inbound", "outbound", "missed", "internal"]
CallStatus = Literal["in_progress", "completed"]
CallOrder = Literal["newest", "oldest"]
RecordKind = Literal["contact", "lead"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

CSV_COLUMNS: Final = (
    "id", "started_at", "answered_at", "ended_at", "direction", "missed", "from_number",
    "from_e164", "from_name", "to_number", "to_e164", "caller_user", "callee_user",
    "answered_by", "duration", "ring_seconds", "disposition", "hangup_cause", "hangup_by",
    "sip_code", "has_recording", "recording_seconds", "transferred_to", "transfers", "keys",
    "queue", "queue_result", "queue_wait", "queue_rule", "callback_number",
    "callback_attempts", "sip_call_id", "call_type", "status", "subject", "owner", "who_kind",
    "who_id", "who_name", "purpose", "result", "description", "cost", "revision",
)
"""The columns of the CSV export, in order (its header row)."""

_MEDIA_TYPES: Final = {".wav": "audio/wav", ".flac": "audio/flac"}
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")


class CrmRequestError(Exception):
    """A request the CRM store cannot answer; ``status_code`` is the HTTP answer."""

    status_code = 400


class UnusableRange(CrmRequestError):
    """A range that holds nothing (from after to, min above max)."""

    status_code = 400


class InvalidInput(CrmRequestError):
    """A bad number, field or cursor."""

    status_code = 422


class NotFound(CrmRequestError):
    """No such call, contact, lead or recording."""

    status_code = 404


class Forbidden(CrmRequestError):
    """The key's user may not change this (an agent, a call someone else owns)."""

    status_code = 403


@dataclass(frozen=True, slots=True)
class CallQuery:
    """The calls a request asks for; None means any. Times are naive UTC."""

    kind: CallKind | None = None
    agent: str | None = None
    number: str | None = None
    started_from: datetime | None = None
    started_to: datetime | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    queue: str | None = None
    call_type: CallType | None = None
    owner: str | None = None
    status: CallStatus | None = None

    def check(self) -> None:
        """Raise :class:`UnusableRange` for a date or duration range that holds nothing."""
        if (self.started_from is not None and self.started_to is not None
                and self.started_from >= self.started_to):
            raise UnusableRange(
                f"the date range is empty: from ({_iso(self.started_from)}) must be before "
                f"to ({_iso(self.started_to)})")
        if (self.min_duration is not None and self.max_duration is not None
                and self.min_duration > self.max_duration):
            raise UnusableRange(
                f"the duration range is empty: min_duration ({self.min_duration:g}) is above "
                f"max_duration ({self.max_duration:g})")


class CallPageView(Protocol):
    """A page of calls from the store (items map column names to values)."""

    @property
    def items(self) -> Sequence[Mapping[str, Any]]: ...
    @property
    def next_cursor(self) -> str | None: ...
    @property
    def total(self) -> int | None: ...


class CallDetailView(Protocol):
    """One call from the store: ``call`` as a page item, with ``legs`` and ``records``."""

    @property
    def call(self) -> Mapping[str, Any]: ...
    @property
    def legs(self) -> Sequence[object]: ...
    @property
    def records(self) -> Sequence[object]: ...
    @property
    def recording_path(self) -> str | None: ...
    @property
    def participants(self) -> frozenset[str]: ...


class CrmStore(Protocol):
    """The CRM store's synchronous interface (``crmsync.queries.CrmQueries``).

    Raises ``ValueError`` for bad input and ``LookupError`` for an unknown id, with messages
    fit for the person who asked. Records (contacts and leads) are objects with the fields of
    the API's models, read by attribute.
    """

    def list_calls(self, flt: CallQuery, *, limit: int, cursor: str | None,
                   order: CallOrder, count: bool) -> CallPageView: ...

    def get_call(self, call_id: str) -> CallDetailView: ...

    def annotate_call(self, call_id: str, changes: Mapping[str, object], *,
                      user: str | None, any_call: bool) -> CallDetailView:
        """Write ``changes`` (subject, purpose, result, description, cost, who as a
        ``(kind, id)`` pair) on the call; unless ``any_call``, only a call of ``user`` or of
        nobody (``PermissionError`` otherwise)."""

    def iter_calls(self, flt: CallQuery, *, order: CallOrder,
                   batch: int) -> Generator[Sequence[Mapping[str, Any]], None, None]:
        """Every matching call in batches; checks ``flt`` before returning."""

    def search_records(self, kind: RecordKind, *, number: str | None, q: str | None,
                       limit: int) -> Sequence[object]: ...

    def get_record(self, kind: RecordKind, record_id: str) -> object: ...

    def create_record(self, kind: RecordKind, values: Mapping[str, object]) -> object: ...

    def update_record(self, kind: RecordKind, record_id: str,
                      values: Mapping[str, object]) -> object: ...


@dataclass(frozen=True, slots=True)
class RecordingFile:
    """A call's recording, checked to lie inside the recordings directory."""

    path: Path
    media_type: str
    """audio/wav or audio/flac."""
    filename: str
    """``<call id>.wav`` (or ``.flac``), for the download."""
    stat: os.stat_result
    participants: frozenset[str]
    """The users of the call (placed, rung, answered, transferred to)."""


class CrmControl:
    """The CRM store for the HTTP API, called from the event loop.

    ``recordings`` is ``storage.recordings``: recording files outside it are never served.
    ``workers`` threads answer queries; at most ``max_exports`` CSV exports read the database
    at once (more wait their turn), each on its own thread, ``csv_batch`` rows at a time.
    Call :meth:`close` when the PBX stops.
    """

    def __init__(self, store: CrmStore, recordings: Path | str, *, workers: int = 4,
                 max_exports: int = 2, csv_batch: int = 1000,
                 finished: Callable[[str], Awaitable[None]] | None = None) -> None:
        if workers < 1 or max_exports < 1 or csv_batch < 1:
            raise ValueError("workers, max_exports and csv_batch must be at least 1")
        self._store = store
        self._recordings = Path(recordings)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="crm-api")
        self._exports = asyncio.Semaphore(max_exports)
        self._csv_batch = csv_batch
        self._finished = finished
        """Waits until a recording just ended is written whole (pbx.recording)."""

    def close(self) -> None:
        """Stop the worker threads (queries already running finish on their own)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except (KeyError, IndexError):
            raise  # a fault, not an unknown id: the API answers 500
        except LookupError as exc:
            raise NotFound(str(exc)) from exc
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        except PermissionError as exc:
            raise Forbidden(str(exc)) from exc

    async def list_calls(self, query: CallQuery, *, limit: int, cursor: str | None = None,
                         order: CallOrder = "newest", count: bool = False) -> CallPageView:
        """A page of the calls matching ``query``; ``count`` adds the total."""
        query.check()
        return await self._run(self._store.list_calls, query, limit=limit, cursor=cursor,
                               order=order, count=count)

    async def get_call(self, call_id: str) -> CallDetailView:
        """One call with its legs and the CRM records of the other party's number."""
        return await self._run(self._store.get_call, call_id)

    async def annotate_call(self, call_id: str, changes: Mapping[str, object], *,
                            user: str | None, any_call: bool) -> CallDetailView:
        """Annotate the call (one transaction with its ``call.updated`` webhook event); the
        call as :meth:`get_call` gives it. An agent's key passes its user and ``any_call``
        false: it may annotate its own user's calls and calls nobody owns."""
        return await self._run(self._store.annotate_call, call_id, changes, user=user,
                               any_call=any_call)

    async def calls_csv(self, query: CallQuery, *,
                        order: CallOrder = "newest") -> AsyncGenerator[bytes, None]:
        """The calls matching ``query`` as CSV chunks: the header row (:data:`CSV_COLUMNS`),
        then one chunk per batch. ``query`` is checked now (an error is raised here, before
        the first chunk); the database is read as the chunks are taken.

        UTF-8, RFC 4180 (CRLF line ends); times are UTC in ISO 8601 with ``Z``; an empty cell
        is a missing value. A text cell a spreadsheet would run as a formula (a caller's
        display name ``=HYPERLINK(...)``) starts with ``'``.
        """
        query.check()
        batches = await self._run(self._store.iter_calls, query, order=order,
                                  batch=self._csv_batch)
        return self._stream(_csv_chunks(batches))

    async def _stream(self, chunks: Generator[bytes, None, None]) -> AsyncGenerator[bytes, None]:
        async with self._exports:
            # One thread per export: the generator is only ever resumed, and closed, there.
            worker = ThreadPoolExecutor(1, thread_name_prefix="crm-export")
            loop = asyncio.get_running_loop()
            try:
                while True:  # ends with the batches (or the client going away)
                    chunk = await loop.run_in_executor(worker, next, chunks, None)
                    if chunk is None:
                        return
                    yield chunk
            finally:
                # A cancelled stream (client gone) cannot await: the export's thread closes
                # the generator after any batch still being read, and then ends.
                worker.submit(chunks.close)
                worker.shutdown(wait=False)

    async def recording(self, call_id: str) -> RecordingFile:
        """The call's recording file; :class:`NotFound` when the call has none, the file is
        gone, or its path leads outside the recordings directory."""
        detail = await self.get_call(call_id)
        if detail.recording_path is None:
            raise NotFound(f"call {call_id} has no recording")
        if self._finished is not None:
            await self._finished(detail.recording_path)
        found = await self._run(self._locate, detail.recording_path)
        if found is None:
            raise NotFound(f"the recording of call {call_id} is no longer available")
        path, info = found
        return RecordingFile(path, _MEDIA_TYPES[path.suffix.lower()],
                             f"{call_id}{path.suffix.lower()}", info, detail.participants)

    def _locate(self, stored: str) -> tuple[Path, os.stat_result] | None:
        """``stored`` resolved (links followed) if it is a recording file inside the recordings
        directory; None otherwise."""
        try:
            root = self._recordings.resolve(strict=True)
            path = Path(stored).resolve(strict=True)
            info = path.stat()
        except (OSError, RuntimeError):  # missing, unreadable, or a link loop
            return None
        if not path.is_relative_to(root) or path.suffix.lower() not in _MEDIA_TYPES:
            logger.warning("recording %r is not a recording file under %s: not served",
                           stored, root)
            return None
        return (path, info) if stat.S_ISREG(info.st_mode) else None

    async def search_records(self, kind: RecordKind, *, number: str | None = None,
                             q: str | None = None, limit: int = 50) -> Sequence[object]:
        """Contacts or leads by number (any form) and/or name, most recently updated first."""
        return await self._run(self._store.search_records, kind, number=number, q=q,
                               limit=limit)

    async def get_record(self, kind: RecordKind, record_id: str) -> object:
        """One contact or lead with its numbers."""
        return await self._run(self._store.get_record, kind, record_id)

    async def create_record(self, kind: RecordKind, values: Mapping[str, object]) -> object:
        """A new contact or lead; ``phones`` are ``(number, label)`` pairs."""
        return await self._run(self._store.create_record, kind, values)

    async def update_record(self, kind: RecordKind, record_id: str,
                            values: Mapping[str, object]) -> object:
        """Change the fields in ``values``; ``phones`` replaces every number."""
        return await self._run(self._store.update_record, kind, record_id, values)


def _csv_chunks(
    batches: Generator[Sequence[Mapping[str, Any]], None, None],
) -> Generator[bytes, None, None]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue().encode()
    try:
        for rows in batches:
            buffer.seek(0)
            buffer.truncate()
            writer.writerows([_csv_cell(row[name]) for name in CSV_COLUMNS] for row in rows)
            yield buffer.getvalue().encode()
    finally:
        batches.close()


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    text = str(value)
    # OWASP "CSV injection": a cell starting with one of these runs as a formula; plain
    # numbers ("+81312345678") are left alone.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def _iso(value: datetime) -> str:
    """ISO 8601 in UTC with ``Z`` (naive times are UTC already)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"
