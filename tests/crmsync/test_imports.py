"""Call imports from CSV and xlsx files on a real SQLite file and a throw-away PostgreSQL
server: a good file writes every row, a file with bad rows reports each with its line and
writes nothing, and files that cannot be imported at all say why."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openpyxl  # type: ignore[import-untyped]
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from crmsync.imports import (
    MAX_ROWS,
    CallImports,
    FileFormat,
    ImportFileError,
    ImportRejected,
    RowProblem,
)
from crmsync.models import Base, Call, ScheduledCall
from pbx.db import open_engine

NOW = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
PAST = (NOW - timedelta(days=3)).replace(second=0)
FUTURE = (NOW + timedelta(days=3)).replace(second=0)


def when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M")


HEADER = ["subject", "type", "number", "start", "duration", "agent", "description", "status"]
GOOD = [
    ["Support", "inbound", "03-1234-5678", when(PAST), "65", "alice", "printer", ""],
    ["Offer", "outbound", "+81 90 1234 5678", PAST.isoformat() + "Z", "30", "bob", "", ""],
    ["", "missed", "0312345679", when(PAST), "", "", "", "completed"],
    ["Follow-up", "scheduled", "0312345670", when(FUTURE), "", "carol", "call back", ""],
    ["Callback", "outbound", "0312345671", when(FUTURE), "", "alice", "", "scheduled"],
]
BAD = [
    ["Late", "scheduled", "0312345670", when(PAST), "", "carol", "", ""],  # line 2
    ["Early", "inbound", "0312345678", when(FUTURE), "10", "alice", "", ""],  # line 3
    ["Ok", "inbound", "03-1234-5678", when(PAST), "10", "alice", "", ""],  # line 4: good
    ["Number", "outbound", "12-34", when(PAST), "10", "bob", "", ""],  # line 5
    ["Date", "outbound", "0312345678", "next tuesday", "10", "bob", "", ""],  # line 6
    ["Kind", "fax", "0312345678", when(PAST), "10", "bob", "", ""],  # line 7
]
BAD_PROBLEMS = [
    (2, "start", "a scheduled call must start in the future"),
    (3, "start", "a completed call must have started in the past"),
    (5, "number", "'12-34' is not a valid phone number in region JP"),
    (6, "start", "'next tuesday' is not a date and time"),
    (7, "type", "unknown type 'fax'"),
]





def csv_file(rows: Sequence[Sequence[object]], header: Sequence[str] = HEADER) -> bytes:
    lines = [",".join(str(cell) for cell in row) for row in [header, *rows]]
    return ("\r\n".join(lines) + "\r\n").encode()


def xlsx_file(rows: Sequence[Sequence[object]], header: Sequence[str] = HEADER) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    for row in [header, *rows]:
        sheet.append([None if cell == "" else cell for cell in row])
    book.create_sheet("ignored").append(["not", "read"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def make(fmt: FileFormat, rows: Sequence[Sequence[object]],
         header: Sequence[str] = HEADER) -> bytes:
    return csv_file(rows, header) if fmt == "csv" else xlsx_file(rows, header)


def counts(engine: Engine) -> tuple[int, int]:
    with Session(engine) as s:
        return (s.execute(select(func.count()).select_from(Call)).scalar_one(),
                s.execute(select(func.count()).select_from(ScheduledCall)).scalar_one())


def matches(problems: list[RowProblem],
            expected: Sequence[tuple[int, str, str]]) -> None:
    assert [(p.line, p.column) for p in problems] == [(line, col) for line, col, _ in expected]
    for problem, (_, _, reason) in zip(problems, expected, strict=True):
        assert problem.reason.startswith(reason), problem


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_a_good_file_writes_every_row(engine: Engine, fmt: FileFormat) -> None:
    result = CallImports(engine, "JP").import_calls(make(fmt, GOOD), fmt,
                                                    filename=f"../May calls.{fmt}")
    assert (result.rows, result.calls, result.scheduled) == (5, 3, 2)
    with Session(engine) as s:
        calls = {c.sip_call_id: c for c in s.scalars(select(Call))}
        planned = {c.subject: c for c in s.scalars(select(ScheduledCall))}
    assert sorted(calls) == [f"import:May_calls.{fmt}:{line}" for line in (2, 3, 4)]
    support = calls[f"import:May_calls.{fmt}:2"]
    assert (support.direction, support.from_number, support.to_number, support.answered_by,
            support.callee_user, support.disposition, support.duration, support.started_at,
            support.ended_at, support.hangup_cause) == (
        "inbound", "+81312345678", "alice", "alice", "alice", "answered", 65.0, PAST,
        PAST + timedelta(seconds=65), "imported")
    offer = calls[f"import:May_calls.{fmt}:3"]
    assert (offer.direction, offer.from_number, offer.to_number, offer.caller_user,
            offer.started_at) == ("outbound", "bob", "+819012345678", "bob",
                                  PAST.replace(second=0))
    missed = calls[f"import:May_calls.{fmt}:4"]
    assert (missed.direction, missed.disposition, missed.answered_by, missed.duration) == \
        ("inbound", "no_answer", None, 0.0)
    follow = planned["Follow-up"]
    assert (follow.direction, follow.number, follow.owner, follow.start_at, follow.status,
            follow.description) == ("outbound", "+81312345670", "carol", FUTURE, "scheduled",
                                    "call back")
    assert planned["Callback"].owner == "alice"


def test_importing_a_file_again_adds_nothing(engine: Engine) -> None:
    imports = CallImports(engine, "JP")
    first = imports.import_calls(make("csv", GOOD), "csv", filename="may.csv")
    assert (first.calls, first.scheduled, first.duplicates) == (3, 2, 0)
    # The same rows again (even as xlsx under another name): all known.
    again = imports.import_calls(make("xlsx", GOOD), "xlsx", filename="may-copy.xlsx")
    assert (again.rows, again.calls, again.scheduled, again.duplicates) == (5, 0, 0, 5)
    assert counts(engine) == (3, 2)
    # Two identical rows in one file are two calls (two missed calls in the same minute),
    # and that file imported again adds nothing either.
    twice = imports.import_calls(make("csv", [GOOD[2], GOOD[2]]), "csv", filename="b.csv")
    assert (twice.calls, twice.duplicates) == (1, 1)  # the first was in may.csv already
    assert counts(engine) == (4, 2)
    assert imports.import_calls(make("csv", [GOOD[2], GOOD[2]]), "csv",
                                filename="b.csv").duplicates == 2
    assert counts(engine) == (4, 2)
    # A row that differs in what it says is a new call.
    changed = [list(GOOD[0])]
    changed[0][HEADER.index("duration")] = 66
    more = imports.import_calls(make("csv", changed), "csv", filename="may.csv")
    assert (more.calls, more.duplicates) == (1, 0)
    assert counts(engine) == (5, 2)


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_every_bad_row_is_reported_and_nothing_is_written(engine: Engine,
                                                          fmt: FileFormat) -> None:
    with pytest.raises(ImportRejected) as raised:
        CallImports(engine, "JP").import_calls(make(fmt, BAD), fmt, filename="bad")
    matches(raised.value.problems, BAD_PROBLEMS)
    assert str(raised.value) == "5 problem(s) on 5 line(s); nothing was imported"
    assert counts(engine) == (0, 0)


def test_more_rules(engine: Engine) -> None:
    rows = [
        ["", "missed", "0312345678", when(PAST), "", "", "", "scheduled"],
        ["", "scheduled", "0312345678", when(FUTURE), "", "", "", ""],
        ["", "inbound", "", when(PAST), "-5", "a\tb", "", "maybe"],
        ["", "scheduled", "0312345678", when(PAST), "", "bob", "", "completed"],
        ["", "outbound", "0312345678", "2026-11-02", "", "bob", "", ""],
        ["", "outbound", "0312345678", when(PAST), "", "bob", "", "", "surplus"],
    ]
    with pytest.raises(ImportRejected) as raised:
        CallImports(engine, "JP").import_calls(csv_file(rows), "csv", filename="x.csv")
    matches(raised.value.problems, [
        (2, "status", "a missed call is completed; it cannot be scheduled"),
        (3, "agent", "a scheduled call needs an agent"),
        (4, "status", "unknown status 'maybe'"),
        (4, "number", "the number is missing"),
        (4, "duration", "the duration must be between 0 and"),
        (4, "agent", "agent must not contain control characters"),
        (5, "status", "a completed call is imported with its type"),
        (6, "start", "'2026-11-02' is not a date and time"),
        (7, "", "the row has 9 cells but the header names 8 columns"),
    ])
    assert counts(engine) == (0, 0)


def test_csv_lines_count_quoted_line_breaks_and_blank_lines(engine: Engine) -> None:
    data = (
        "type,number,start,description\r\n"
        f'inbound,0312345678,{when(PAST)},"two\r\nlines"\r\n'
        "\r\n"
        f"inbound,999,{when(PAST)},\r\n"
    ).encode()
    with pytest.raises(ImportRejected) as raised:
        CallImports(engine, "JP").import_calls(data, "csv", filename="x.csv")
    matches(raised.value.problems, [(5, "number", "'999' is not a valid phone number")])


def test_header_problems(engine: Engine) -> None:
    with pytest.raises(ImportRejected) as raised:
        CallImports(engine, "JP").import_calls(
            csv_file([], header=["Type", "numbr", "type"]) + b"x,y,z\r\n", "csv",
            filename="x.csv")
    matches(raised.value.problems, [
        (1, "numbr", "unknown column 'numbr'"),
        (1, "type", "column 'type' appears twice"),
        (1, "number", "the required column 'number' is missing"),
        (1, "start", "the required column 'start' is missing"),
    ])


@pytest.mark.parametrize(("data", "fmt", "reason"), [
    (b"", "csv", "the file is empty"),
    (b"type,number,start\r\n", "csv", "the file has a header row but no calls"),
    (b"type,number,start\r\n\xff\xfe\r\n", "csv", "the file is not UTF-8 text (line 2"),
    (b"PK\x03\x04 not really", "xlsx", "the file is not an xlsx workbook"),
    (b"x" * (10 * 1024 * 1024 + 1), "csv", "the file is 10485761 bytes; the most accepted is "
                                            "10485760 (10 MB)"),
], ids=["empty", "header only", "not utf-8", "not xlsx", "too large"])
def test_unreadable_files(tmp_path: Path, data: bytes, fmt: FileFormat, reason: str) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'pbx.db'}")
    Base.metadata.create_all(engine)
    with pytest.raises(ImportFileError, match=re.escape(reason)):
        CallImports(engine, "JP").import_calls(data, fmt, filename="x")
    with pytest.raises(ImportFileError, match="unknown time zone 'Mars/Base'"):
        CallImports(engine, "JP").import_calls(csv_file(GOOD), "csv", filename="x",
                                               timezone="Mars/Base")
    engine.dispose()


def test_too_many_rows_and_local_times(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'pbx.db'}")
    Base.metadata.create_all(engine)
    store = CallImports(engine, "JP")
    row = f"inbound,0312345678,{when(PAST)}\r\n".encode()
    with pytest.raises(ImportFileError, match=f"more than {MAX_ROWS} calls; split it"):
        store.import_calls(b"type,number,start\r\n" + row * (MAX_ROWS + 1), "csv",
                           filename="x")
    assert counts(engine) == (0, 0)
    # Times without a zone are in the import's zone; stored in UTC.
    result = store.import_calls(b"type,number,start\r\n" + row, "csv", filename="x",
                                timezone="Asia/Tokyo")
    assert result.calls == 1
    with Session(engine) as s:
        assert s.scalars(select(Call.started_at)).one() == PAST - timedelta(hours=9)
    engine.dispose()
