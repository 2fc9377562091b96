"""Import of call records from a CSV file or an Excel workbook (xlsx).

The file has a header row naming its columns (any order, any case):

``subject``, ``type`` (inbound, outbound, missed or scheduled), ``number`` (the other party's,
any form a person writes), ``start`` (ISO 8601 or ``YYYY-MM-DD HH:MM``; a time without a zone
is in the import's time zone), ``duration`` (seconds), ``agent`` (user id), ``description``,
``status`` (completed, scheduled or cancelled; ``scheduled`` for type scheduled, otherwise
``completed``), ``purpose``, ``result`` and ``cost`` (a number). ``type``, ``number`` and
``start`` are required.

* A completed inbound, outbound or missed call must have started in the past; it becomes a row
  of ``calls`` whose ``sip_call_id`` is ``import:<file>:<line>`` (so imported records are told
  apart from the calls the PBX carried), with hang-up cause ``imported``, the CRM fields of a
  call the PBX carried (type, status, the agent as owner, the contact or else lead of its
  number), and the subject, purpose, result, description and cost of the file (without a
  subject, the PBX's own: "Inbound call from Ichiro Tanaka").
* A scheduled call (type scheduled, or inbound/outbound with status scheduled) must start in the
  future, and a scheduled or cancelled one needs an agent, its owner; it becomes a row of
  ``scheduled_calls`` (which has a result but no purpose or cost).

Every row is checked before anything is written. If any is bad, :class:`ImportRejected` lists
every problem with its line in the file (the header is line 1), column and reason, and nothing
is written; otherwise all rows are written in one transaction. A file that cannot be read at
all raises :class:`ImportFileError`.
"""

from __future__ import annotations

import csv
import io
import math
import re
import uuid
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from . import callfields
from .callstore import PURPOSE_LENGTH, find_links
from .contacts import RecordKind, normalise
from .models import Call, ScheduledCall, insert_for
from .scheduled import OWNER_LENGTH, SUBJECT_LENGTH, TEXT_LENGTH, ScheduledError, check_text, utc

__all__ = [
    "COLUMNS", "MAX_BYTES", "MAX_ROWS", "CallImports", "FileFormat", "ImportFileError",
    "ImportRejected", "ImportResult", "RowProblem", "import_calls", "read_rows",
]

FileFormat = Literal["csv", "xlsx"]

MAX_BYTES: Final = 10 * 1024 * 1024
"""The largest file accepted."""
MAX_ROWS: Final = 50_000
"""The most calls one file may hold."""
MAX_DURATION: Final = 7 * 24 * 3600
COLUMNS: Final = ("subject", "type", "number", "start", "duration", "agent", "description",
                  "status", "purpose", "result", "cost")
_REQUIRED: Final = ("type", "number", "start")
_TYPES: Final = ("inbound", "outbound", "missed", "scheduled")
_STATUSES: Final = ("completed", "scheduled", "cancelled")
_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


class ImportFileError(ValueError):
    """The file cannot be read as an import at all (too large, not CSV/xlsx, no rows...)."""


@dataclass(frozen=True, slots=True)
class RowProblem:
    """What is wrong with one cell (or the header) of the file."""

    line: int
    """The line (CSV) or row (xlsx) in the file; the header is 1."""
    column: str
    reason: str


class ImportRejected(ValueError):
    """Some rows are bad: nothing was written. ``problems`` lists every one."""

    def __init__(self, problems: list[RowProblem]) -> None:
        lines = len({p.line for p in problems})
        super().__init__(f"{len(problems)} problem(s) on {lines} line(s); nothing was imported")
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import wrote."""

    rows: int
    calls: int
    """Rows written to ``calls`` (completed calls)."""
    scheduled: int
    """Rows written to ``scheduled_calls``."""
    duplicates: int = 0
    """Rows already imported (by this file before, by another file, or earlier in this one):
    skipped, so that importing a file twice adds nothing."""


Row = tuple[int, dict[str, Any]]
"""A line number and the row's cells by column name (str for CSV; str, number or datetime for
xlsx; None for an empty cell)."""


def read_rows(data: bytes, fmt: FileFormat) -> list[Row]:
    """The rows of the file with their line numbers; blank rows are skipped.

    Raises :class:`ImportFileError` for a file too large or unreadable, or with too many rows,
    and :class:`ImportRejected` for a bad header.
    """
    if len(data) > MAX_BYTES:
        raise ImportFileError(f"the file is {len(data)} bytes; the most accepted is {MAX_BYTES} "
                              f"({MAX_BYTES // (1024 * 1024)} MB)")
    lines = _csv_lines(data) if fmt == "csv" else _xlsx_lines(data)
    header = next(lines, None)
    if header is None:
        raise ImportFileError("the file is empty: it needs a header row and calls")
    names = _header(header[1])
    rows: list[Row] = []
    for line, cells in lines:
        if all(cell is None or (isinstance(cell, str) and not cell.strip()) for cell in cells):
            continue
        if len(rows) == MAX_ROWS:
            raise ImportFileError(f"the file has more than {MAX_ROWS} calls; split it")
        extra = cells[len(names):]
        if any(cell is not None and str(cell).strip() for cell in extra):
            rows.append((line, {"": f"the row has {len(cells)} cells but the header names "
                                    f"{len(names)} columns"}))
            continue
        rows.append((line, {name: (cells[i] if i < len(cells) else None)
                            for i, name in enumerate(names)}))
    if not rows:
        raise ImportFileError("the file has a header row but no calls")
    return rows


def _csv_lines(data: bytes) -> Iterator[tuple[int, list[Any]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ImportFileError(f"the file is not UTF-8 text (line {line}, byte {exc.start})") \
            from None
    if "\x00" in text:
        raise ImportFileError("the file holds NUL bytes: it is not CSV text "
                              "(an xlsx workbook is sent as such)")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    line = 1
    try:
        for cells in reader:
            yield line, cells
            line = reader.line_num + 1  # a quoted cell may span lines
    except csv.Error as exc:
        raise ImportFileError(f"line {reader.line_num}: not valid CSV ({exc})") from None


def _xlsx_lines(data: bytes) -> Iterator[tuple[int, list[Any]]]:
    import openpyxl  # type: ignore[import-untyped]  # only imports need it
    from openpyxl.utils.exceptions import InvalidFileException  # type: ignore[import-untyped]

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError, ValueError):
        raise ImportFileError("the file is not an xlsx workbook") from None
    try:
        if not book.worksheets:
            raise ImportFileError("the workbook has no sheet")
        sheet = book.worksheets[0]
        # Read only as many columns as the import knows (and a few more to report extras).
        width = len(COLUMNS) + 4
        for number, cells in enumerate(sheet.iter_rows(max_col=width, values_only=True),
                                       start=1):
            yield number, list(cells)
    finally:
        book.close()


def _header(cells: list[Any]) -> list[str]:
    names = [("" if cell is None else str(cell)).strip().lower() for cell in cells]
    while names and not names[-1]:
        names.pop()
    problems: list[RowProblem] = []
    seen: set[str] = set()
    for name in names:
        if name not in COLUMNS:
            shown = name or "(empty)"
            problems.append(RowProblem(1, shown, f"unknown column {shown!r}: the columns are "
                                                 f"{', '.join(COLUMNS)}"))
        elif name in seen:
            problems.append(RowProblem(1, name, f"column {name!r} appears twice"))
        seen.add(name)
    for name in _REQUIRED:
        if name not in names:
            problems.append(RowProblem(1, name, f"the required column {name!r} is missing"))
    if problems:
        raise ImportRejected(problems)
    return names


def _text(cell: Any) -> str:
    if cell is None:
        return ""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))  # a spreadsheet keeps 0312345678 as the number 312345678.0
    return str(cell).strip()


def _start(cell: Any, zone: ZoneInfo) -> datetime:
    if isinstance(cell, datetime):
        value = cell
    else:
        text = _text(cell)
        if not text:
            raise ScheduledError("the start time is missing")
        bad = ScheduledError(f"{text!r} is not a date and time: write ISO 8601 "
                             "(2026-11-02T09:30:00Z) or YYYY-MM-DD HH:MM")
        if len(text) <= 10:  # a date alone: the time of day is not a guess to make
            raise bad
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise bad from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return utc(value)


def _long_text(value: str, what: str) -> str:
    return check_text(value, what, TEXT_LENGTH, lines=True)


def _cost(cell: Any) -> float | None:
    if cell is None or (isinstance(cell, str) and not cell.strip()):
        return None
    try:
        cost = float(cell)
    except (TypeError, ValueError):
        raise ScheduledError(f"{_text(cell)!r} is not a number") from None
    if not math.isfinite(cost) or cost < 0:
        raise ScheduledError("the cost must be a number of at least 0")
    return cost


def _duration(cell: Any) -> float:
    if cell is None or (isinstance(cell, str) and not cell.strip()):
        return 0.0
    try:
        seconds = float(cell)
    except (TypeError, ValueError):
        raise ScheduledError(f"{_text(cell)!r} is not a number of seconds") from None
    if not 0 <= seconds <= MAX_DURATION:  # also refuses NaN
        raise ScheduledError(f"the duration must be between 0 and {MAX_DURATION} seconds")
    return seconds


class _Checker:
    """Checks rows one by one, gathering problems and the rows to write."""

    def __init__(self, source: str, region: str, zone: ZoneInfo, now: datetime) -> None:
        self.source, self.region, self.zone, self.now = source, region, zone, now
        self.problems: list[RowProblem] = []
        self.calls: list[dict[str, Any]] = []
        self.scheduled: list[dict[str, Any]] = []
        self._seen: Counter[str] = Counter()
        """How often each row's content came so far in this file (two identical rows are
        two calls, each with its own id)."""

    def _id(self, table: str, kind: str, v: Mapping[str, Any]) -> str:
        what = _content(table, kind, v)
        self._seen[what] += 1
        return str(uuid.uuid5(_IMPORTED, f"{what}|{self._seen[what]}"))

    def cell(self, line: int, column: str, check: Any, *args: Any) -> Any:
        try:
            return check(*args)
        except ScheduledError as exc:
            self.problems.append(RowProblem(line, column, exc.reason))
            return None

    def row(self, line: int, cells: Mapping[str, Any]) -> None:
        if "" in cells:  # more cells than columns
            self.problems.append(RowProblem(line, "", str(cells[""])))
            return
        before = len(self.problems)
        kind = _text(cells.get("type")).lower()
        if kind not in _TYPES:
            self.problems.append(RowProblem(line, "type", f"unknown type {kind!r}: use "
                                                          f"{', '.join(_TYPES)}"))
        status = _text(cells.get("status")).lower() or (
            "scheduled" if kind == "scheduled" else "completed")
        status_ok = False
        if status not in _STATUSES:
            self.problems.append(RowProblem(line, "status", f"unknown status {status!r}: use "
                                                            f"{', '.join(_STATUSES)}"))
        elif kind == "missed" and status != "completed":
            self.problems.append(RowProblem(line, "status", "a missed call is completed; it "
                                                            f"cannot be {status}"))
        elif kind == "scheduled" and status == "completed":
            self.problems.append(RowProblem(line, "status", "a completed call is imported "
                                                            "with its type: inbound or outbound"))
        else:
            status_ok = kind in _TYPES
        number = _text(cells.get("number"))
        e164 = normalise(number, self.region) if number else None
        if e164 is None:
            self.problems.append(RowProblem(
                line, "number", f"{number!r} is not a valid phone number in region "
                                f"{self.region}" if number else "the number is missing"))
        start = self.cell(line, "start", _start, cells.get("start"), self.zone)
        duration = self.cell(line, "duration", _duration, cells.get("duration"))
        subject = self.cell(line, "subject", check_text, _text(cells.get("subject")),
                            "subject", SUBJECT_LENGTH)
        agent = self.cell(line, "agent", check_text, _text(cells.get("agent")), "agent",
                          OWNER_LENGTH)
        description = self.cell(line, "description", _long_text,
                                _text(cells.get("description")), "description")
        purpose = self.cell(line, "purpose", check_text, _text(cells.get("purpose")), "purpose",
                            PURPOSE_LENGTH)
        result = self.cell(line, "result", _long_text, _text(cells.get("result")), "result")
        cost = self.cell(line, "cost", _cost, cells.get("cost"))
        if status_ok and status != "completed":
            for name, value in (("purpose", purpose), ("cost", cost)):
                if value:
                    self.problems.append(RowProblem(line, name, f"a {status} call has no "
                                                                f"{name}; leave it empty"))
        if isinstance(start, datetime) and status_ok:
            shown = start.isoformat(timespec="minutes") + "Z"
            if status == "scheduled" and start <= self.now:
                self.problems.append(RowProblem(line, "start", "a scheduled call must start "
                                                               f"in the future ({shown} is past)"))
            elif status == "completed" and start > self.now:
                self.problems.append(RowProblem(line, "start", "a completed call must have "
                                                               f"started in the past ({shown} "
                                                               "is in the future)"))
        if status_ok and status in ("scheduled", "cancelled") and agent == "":
            self.problems.append(RowProblem(line, "agent", f"a {status} call needs an agent "
                                                           "(its owner)"))
        if len(self.problems) > before:
            return
        values = {"subject": subject, "agent": agent or None, "description": description,
                  "number": e164, "start": start, "duration": duration, "purpose": purpose,
                  "result": result, "cost": cost}
        if status == "completed":
            self.calls.append(self._call(line, kind, values))
        else:
            self.scheduled.append(self._scheduled(kind, status, values))

    def _call(self, line: int, kind: str, v: dict[str, Any]) -> dict[str, Any]:
        inbound = kind != "outbound"
        answered = kind != "missed"
        start: datetime = v["start"]
        agent: str | None = v["agent"]
        return {
            "id": self._id("call", kind, v), "sip_call_id": f"import:{self.source}:{line}",
            "direction": "inbound" if inbound else "outbound",
            "from_number": v["number"] if inbound else (agent or ""), "from_name": "",
            "to_number": (agent or "") if inbound else v["number"],
            "caller_user": None if inbound else agent,
            "callee_user": agent if inbound else None,
            "answered_by": agent if answered else None,
            "started_at": start, "answered_at": start if answered else None,
            "ended_at": start + timedelta(seconds=v["duration"] if answered else 0),
            "duration": v["duration"] if answered else 0.0, "ring_seconds": None,
            "disposition": "answered" if answered else "no_answer",
            "hangup_cause": "imported", "hangup_by": None, "sip_code": None,
            "recording_path": None, "recording_seconds": None, "transferred_to": None,
            "transfers": 0, "keys": None, "queue": None, "queue_result": None,
            "queue_wait": None, "queue_rule": None, "callback_number": None,
            "callback_attempts": 0, "call_type": kind, "status": "completed",
            "owner": agent, "subject": v["subject"] or None, "who_kind": None, "who_id": None,
            "purpose": v["purpose"] or None, "result": v["result"] or None,
            "description": v["description"] or None, "cost": v["cost"], "revision": 1,
        }

    def _scheduled(self, kind: str, status: str, v: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self._id("scheduled", f"{kind}/{status}", v), "subject": v["subject"],
            "direction": "inbound" if kind == "inbound" else "outbound", "number": v["number"],
            "record_kind": None, "record_id": None, "owner": v["agent"],
            "start_at": v["start"], "reminder_at": None, "status": status,
            "description": v["description"], "result": v["result"], "created_at": self.now,
            "updated_at": self.now, "reminded_at": None,
        }


_IMPORTED: Final = uuid.UUID("6f1d3c1e-8a4b-5d2e-9c7f-0b1a2c3d4e5f")


def _content(table: str, kind: str, v: Mapping[str, Any]) -> str:
    """What an imported row says, as the key of its id: the same row imported again (from
    this file or another) has the same id, and is skipped."""
    start: datetime = v["start"]
    return "|".join(str(x) for x in (
        table, kind, v["number"], start.isoformat(), v.get("duration"), v["agent"],
        v["subject"], v["description"], v.get("purpose"), v.get("result"), v.get("cost")))


def _new(session: Session, model: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows whose id is neither in the table nor earlier in ``rows``."""
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(row["id"], row)
    ids = list(unique)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for found in session.scalars(select(model.id).where(model.id.in_(chunk))):
            unique.pop(found, None)
    return list(unique.values())


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ImportFileError(f"unknown time zone {name!r}: use a name such as UTC or "
                              "Asia/Tokyo") from None


def import_calls(session: Session, data: bytes, fmt: FileFormat, *, filename: str,
                 region: str, timezone: str = "UTC", now: datetime | None = None,
                 order: Sequence[RecordKind] = ("contact", "lead")) -> ImportResult:
    """Check every row of the file and add them all to ``session``, or none.

    ``filename`` names the file in the imported calls' ``sip_call_id``; ``timezone`` is the
    zone of start times written without one; ``now`` (UTC, the current time by default)
    decides what is past and future; ``order`` which kinds of record a call is linked to,
    first found first. Raises :class:`ImportRejected` (every bad row) or
    :class:`ImportFileError` before anything is added.
    """
    zone = _zone(timezone)
    stamp = utc(now) if now is not None else datetime.now(UTC).replace(tzinfo=None)
    source = _FILENAME.sub("_", filename.rsplit("/", 1)[-1].rsplit("\\", 1)[-1])[:120]
    checker = _Checker(source or "upload", region, zone, stamp)
    for line, cells in read_rows(data, fmt):
        checker.row(line, cells)
    if checker.problems:
        raise ImportRejected(checker.problems)
    calls = _new(session, Call, checker.calls)
    scheduled = _new(session, ScheduledCall, checker.scheduled)
    # Another import of the same rows at the same moment may get in first: theirs stay.
    if calls:
        _link(session, calls, order)
        session.execute(insert_for(session, Call).on_conflict_do_nothing(
            index_elements=["id"]), calls)
    if scheduled:
        session.execute(insert_for(session, ScheduledCall).on_conflict_do_nothing(
            index_elements=["id"]), scheduled)
    total = len(checker.calls) + len(checker.scheduled)
    return ImportResult(total, len(calls), len(scheduled),
                        total - len(calls) - len(scheduled))


def _link(session: Session, calls: list[dict[str, Any]], order: Sequence[RecordKind]) -> None:
    """Link each call to the contact (else lead, or as ``order`` says) of its number, and give
    those without a subject the PBX's own (naming the record)."""
    links = find_links(session, {callfields.outside_number(c) or "" for c in calls} - {""},
                       order)
    for call in calls:
        link = links.get(callfields.outside_number(call) or "")
        if link is not None:
            call["who_kind"], call["who_id"] = link.kind, link.id
        if call["subject"] is None:
            call["subject"] = callfields.subject(call, link.name if link else None)


class CallImports:
    """Imports into the database behind ``engine``, each file in one transaction.

    ``region`` (ISO country code) is where written numbers are dialled from. Blocks; the HTTP
    API calls it in a worker thread.
    """

    def __init__(self, engine: Engine, region: str) -> None:
        self._engine = engine
        self._region = region
        self.order: tuple[RecordKind, ...] = ("contact", "lead")
        """``crm.lookup_order`` (replaced whole on a reload)."""

    def import_calls(self, data: bytes, fmt: FileFormat, *, filename: str,
                     timezone: str = "UTC") -> ImportResult:
        """As :func:`import_calls`."""
        with Session(self._engine) as session, session.begin():
            return import_calls(session, data, fmt, filename=filename, region=self._region,
                                timezone=timezone, order=self.order)
