"""Scheduled calls and call imports over the HTTP API, on a real SQLite file and a real server
on a loopback port: the life of a scheduled call, who may see and change which calls, the
refusals with their reasons, and imports as raw CSV, raw xlsx and multipart uploads (bad rows
listed with their lines, nothing written)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openpyxl  # type: ignore[import-untyped]
import pytest
import pytest_asyncio
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from crmsync.imports import CallImports
from crmsync.models import Base, Call, ScheduledCall
from crmsync.scheduled import ScheduledCalls
from pbx.api import PREFIX, create_app
from pbx.api_scheduled import XLSX_TYPE, SchedulingControl, include_scheduled
from pbx.db import open_engine
from pbx.httpserver import HttpServer
from tests.pbx.test_api_calls import ADMIN, ALICE, KEYS, SUPERVISOR, NoQueues, error_of

SOON = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
PAST = (datetime.now(UTC) - timedelta(days=2)).replace(second=0, microsecond=0)


def z(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


@dataclass
class Api:
    http: httpx.AsyncClient
    engine: Engine

    async def call(self, method: str, path: str, key: str | None = ADMIN,
                   **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return await self.http.request(method, path, headers=headers, **kwargs)

    def counts(self) -> tuple[int, int]:
        with Session(self.engine) as s:
            return (s.execute(select(func.count()).select_from(Call)).scalar_one(),
                    s.execute(select(func.count()).select_from(ScheduledCall)).scalar_one())


@pytest_asyncio.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    engine = open_engine(f"sqlite:///{tmp_path / 'pbx.db'}")
    Base.metadata.create_all(engine)
    control = SchedulingControl(ScheduledCalls(engine, "JP"), CallImports(engine, "JP"))
    app = create_app(NoQueues(), lambda: KEYS)
    include_scheduled(app, control, PREFIX)
    server = HttpServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}{PREFIX}",
                                     timeout=20.0) as http:
            yield Api(http, engine)
    finally:
        await server.stop()
        control.close()
        engine.dispose()


@pytest.mark.asyncio
async def test_schedule_list_reschedule_complete(api: Api) -> None:
    created = await api.call("POST", "/scheduled-calls", ALICE, json={
        "subject": "Renewal", "number": "03-1234-5678", "start_at": z(SOON),
        "reminder_at": z(SOON - timedelta(minutes=15)), "description": "bring the offer"})
    assert created.status_code == 201, created.text
    call = created.json()
    assert created.headers["location"].endswith(f"/scheduled-calls/{call['id']}")
    assert (call["owner"], call["number"], call["status"], call["start_at"],
            call["reminder_at"], call["direction"]) == (
        "alice", "+81312345678", "scheduled", z(SOON), z(SOON - timedelta(minutes=15)),
        "outbound")
    bobs = (await api.call("POST", "/scheduled-calls", SUPERVISOR, json={
        "number": "+81 90 1234 5678", "owner": "bob",
        "start_at": (SOON + timedelta(days=1)).isoformat()})).json()

    # An agent lists and reads its own user's calls only.
    mine = (await api.call("GET", "/scheduled-calls", ALICE)).json()
    assert [c["id"] for c in mine] == [call["id"]]
    everyone = (await api.call("GET", "/scheduled-calls")).json()
    assert [c["id"] for c in everyone] == [call["id"], bobs["id"]]
    assert [c["id"] for c in (await api.call("GET", "/scheduled-calls",
                                             params={"owner": "bob"})).json()] == [bobs["id"]]
    later = (await api.call("GET", "/scheduled-calls", params={
        "from": z(SOON + timedelta(hours=1))})).json()
    assert [c["id"] for c in later] == [bobs["id"]]
    assert "may not list scheduled calls" in error_of(
        await api.call("GET", "/scheduled-calls", ALICE, params={"owner": "bob"}), 403)
    assert "may not read a call of \"bob\"" in error_of(
        await api.call("GET", f"/scheduled-calls/{bobs['id']}", ALICE), 403)
    assert "may not change" in error_of(await api.call(
        "PATCH", f"/scheduled-calls/{bobs['id']}", ALICE, json={"action": "cancel"}), 403)
    assert "may not schedule calls for \"bob\"" in error_of(await api.call(
        "POST", "/scheduled-calls", ALICE,
        json={"number": "0312345678", "owner": "bob", "start_at": z(SOON)}), 403)

    moved = await api.call("PATCH", f"/scheduled-calls/{call['id']}", ALICE, json={
        "action": "reschedule", "start_at": z(SOON + timedelta(days=2))})
    assert moved.status_code == 200, moved.text
    assert (moved.json()["start_at"], moved.json()["reminder_at"]) == \
        (z(SOON + timedelta(days=2)), None)
    done = await api.call("PATCH", f"/scheduled-calls/{call['id']}", ALICE,
                          json={"action": "complete", "result": "signed"})
    assert (done.json()["status"], done.json()["result"]) == ("completed", "signed")
    assert (await api.call("GET", f"/scheduled-calls/{call['id']}", ALICE)).json() == \
        done.json()
    assert error_of(await api.call("PATCH", f"/scheduled-calls/{call['id']}", json={
        "action": "cancel"}), 409) == "the call is completed: it cannot be cancelled"
    cancelled = await api.call("PATCH", f"/scheduled-calls/{bobs['id']}",
                               json={"action": "cancel", "reason": "no longer needed"})
    assert (cancelled.json()["status"], cancelled.json()["result"]) == \
        ("cancelled", "no longer needed")
    assert [c["id"] for c in (await api.call("GET", "/scheduled-calls", params={
        "status": "cancelled"})).json()] == [bobs["id"]]


@pytest.mark.asyncio
async def test_refusals(api: Api) -> None:
    def body(**change: Any) -> dict[str, Any]:
        return {"number": "0312345678", "start_at": z(SOON), **change}

    post = "POST", "/scheduled-calls"
    assert error_of(await api.call(*post, ALICE, json=body(start_at=z(PAST))), 422).startswith(
        "start_at must be in the future")
    assert "must not be after start_at" in error_of(await api.call(
        *post, ALICE, json=body(reminder_at=z(SOON + timedelta(minutes=1)))), 422)
    assert error_of(await api.call(*post, ALICE, json=body(number="12-34")), 422) == \
        "'12-34' is not a valid phone number in region JP"
    assert "the key acts for no user" in error_of(await api.call(*post, json=body()), 422)
    assert "direction" in error_of(await api.call(*post, ALICE,
                                                  json=body(direction="up")), 422)
    assert "colour" in error_of(await api.call(*post, ALICE, json=body(colour="red")), 422)
    assert "no contact with id 'x'" in error_of(await api.call(
        *post, ALICE, json=body(record_kind="contact", record_id="x")), 422)
    assert "API key" in error_of(await api.call(*post, None, json=body()), 401)
    assert error_of(await api.call("GET", "/scheduled-calls/nope"), 404) == \
        "no scheduled call with id 'nope'"
    assert error_of(await api.call("PATCH", "/scheduled-calls/nope",
                                   json={"action": "cancel"}), 404) == \
        "no scheduled call with id 'nope'"
    call = (await api.call(*post, ALICE, json=body())).json()
    assert "action" in error_of(await api.call("PATCH", f"/scheduled-calls/{call['id']}",
                                               json={"action": "snooze"}), 422)
    assert "start_at must be in the future" in error_of(await api.call(
        "PATCH", f"/scheduled-calls/{call['id']}",
        json={"action": "reschedule", "start_at": z(PAST)}), 422)
    assert "from must be before to" in error_of(await api.call(
        "GET", "/scheduled-calls", params={"from": z(SOON), "to": z(PAST)}), 400)
    assert api.counts() == (0, 1)


HEADER = "subject,type,number,start,duration,agent,description,status"
GOOD_CSV = "\r\n".join([
    HEADER,
    f"Support,inbound,03-1234-5678,{PAST:%Y-%m-%d %H:%M},65,alice,,",
    f",missed,0312345679,{PAST:%Y-%m-%d %H:%M},,,,",
    f"Follow-up,scheduled,0312345670,{z(SOON + timedelta(days=1))},,carol,,",
]) + "\r\n"
BAD_CSV = "\r\n".join([
    HEADER,
    f"Late,scheduled,0312345670,{PAST:%Y-%m-%d %H:%M},,carol,,",
    f"Fine,inbound,03-1234-5678,{PAST:%Y-%m-%d %H:%M},65,alice,,",
    f"Number,outbound,12-34,{PAST:%Y-%m-%d %H:%M},10,bob,,",
    "Date,outbound,0312345678,soon,10,bob,,",
    f"Kind,fax,0312345678,{PAST:%Y-%m-%d %H:%M},10,bob,,",
    f"Early,inbound,0312345678,{z(SOON)},10,alice,,",
]) + "\r\n"


def xlsx(text: str) -> bytes:
    book = openpyxl.Workbook()
    for line in text.strip().split("\r\n"):
        book.active.append([cell or None for cell in line.split(",")])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@pytest.mark.asyncio
async def test_imports(api: Api) -> None:
    raw = await api.call("POST", "/imports/calls", content=GOOD_CSV.encode(),
                         headers={"Content-Type": "text/csv"})
    assert raw.status_code == 200, raw.text
    assert raw.json() == {"rows": 3, "calls": 2, "scheduled": 1, "duplicates": 0}
    assert api.counts() == (2, 1)
    with Session(api.engine) as s:
        assert sorted(s.scalars(select(Call.sip_call_id))) == [
            "import:upload.csv:2", "import:upload.csv:3"]

    # The same rows again, as a multipart xlsx upload and as a raw one: already there.
    upload = await api.call("POST", "/imports/calls", files={
        "file": ("June.xlsx", xlsx(GOOD_CSV), "application/octet-stream")})
    assert upload.json() == {"rows": 3, "calls": 0, "scheduled": 0, "duplicates": 3}, \
        upload.text
    raw_xlsx = await api.call("POST", "/imports/calls", content=xlsx(GOOD_CSV),
                              params={"filename": "july.xlsx"},
                              headers={"Content-Type": XLSX_TYPE})
    assert raw_xlsx.json()["duplicates"] == 3, raw_xlsx.text
    assert api.counts() == (2, 1)

    for sent in ({"content": BAD_CSV.encode(), "headers": {"Content-Type": "text/csv"}},
                 {"files": {"file": ("bad.csv", BAD_CSV.encode(), "text/csv")}},
                 {"content": xlsx(BAD_CSV), "headers": {"Content-Type": XLSX_TYPE}}):
        rejected = await api.call("POST", "/imports/calls", **sent)
        assert rejected.status_code == 422, rejected.text
        body = rejected.json()
        assert body["error"] == "5 problem(s) on 5 line(s); nothing was imported"
        assert [(p["line"], p["column"]) for p in body["problems"]] == [
            (2, "start"), (4, "number"), (5, "start"), (6, "type"), (7, "start")]
        assert body["problems"][1]["reason"] == \
            "'12-34' is not a valid phone number in region JP"
    assert api.counts() == (2, 1)


@pytest.mark.asyncio
async def test_import_refusals(api: Api) -> None:
    assert "needs a supervisor or admin key" in error_of(await api.call(
        "POST", "/imports/calls", ALICE, content=GOOD_CSV.encode(),
        headers={"Content-Type": "text/csv"}), 403)
    assert "send the file as text/csv" in error_of(await api.call(
        "POST", "/imports/calls", content=b"{}",
        headers={"Content-Type": "application/json"}), 415)
    no_file = await api.call("POST", "/imports/calls",
                             files={"upload": ("x.csv", b"a", "text/csv")})
    assert error_of(no_file, 422) == 'the form has no field "file"'
    big = b"x" * (10 * 1024 * 1024 + 65 * 1024)
    assert "the most accepted is" in error_of(await api.call(
        "POST", "/imports/calls", content=big, headers={"Content-Type": "text/csv"}), 413)
    assert "the file is 10485761 bytes" in error_of(await api.call(
        "POST", "/imports/calls", content=b"x" * (10 * 1024 * 1024 + 1),
        headers={"Content-Type": "text/csv"}), 422)
    assert error_of(await api.call(
        "POST", "/imports/calls", content=b"not a workbook",
        headers={"Content-Type": XLSX_TYPE}), 422) == "the file is not an xlsx workbook"
    assert "unknown time zone 'Moon'" in error_of(await api.call(
        "POST", "/imports/calls", content=GOOD_CSV.encode(), params={"timezone": "Moon"},
        headers={"Content-Type": "text/csv"}), 422)
    assert api.counts() == (0, 0)
