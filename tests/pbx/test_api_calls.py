"""Call records over the HTTP API, on a real SQLite file and a real server on a loopback port:
every filter, numbers in several forms, pages, one call with its legs, the CSV export of a
filtered set larger than a page, recordings with byte ranges, paths leading out of the
recordings directory, and who may do what.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import threading
import uuid
import wave
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import Engine, create_engine, event, insert
from sqlalchemy.orm import Session

from crmsync.contacts import create_contact, create_lead
from crmsync.models import Base, Call
from crmsync.queries import CrmQueries
from pbx.api import PREFIX, create_app
from pbx.api_calls import include_crm
from pbx.config_http import ApiKey
from pbx.crmcontrol import CSV_COLUMNS, CallQuery, CrmControl
from pbx.db import open_engine
from pbx.httpserver import HttpServer
from pbx.queueviews import AgentView, QueueNotFound, QueueView, WaitingCall

ADMIN = "admin-key-0123456789abcdef"
SUPERVISOR = "supervisor-key-0123456789"
ALICE = "alice-agent-key-0123456789"
KEYS = [
    ApiKey(name="crm", key=ADMIN),
    ApiKey(name="wallboard", key=SUPERVISOR, role="supervisor"),
    ApiKey(name="alice-phone", key=ALICE, role="agent", user="alice"),
]
T0 = datetime(2026, 11, 2, 9, 0, 0)


class NoQueues:
    """A PBX without queues: the queue endpoints answer 404; these tests use the CRM's."""

    def _none(self, name: str) -> QueueNotFound:
        return QueueNotFound(f'no queue "{name}"')

    def queues(self) -> list[QueueView]:
        return []

    def queue(self, name: str) -> QueueView:
        raise self._none(name)

    def waiting(self, name: str) -> list[WaitingCall]:
        raise self._none(name)

    def pick(self, name: str, call_id: str, agent: str) -> None:
        raise self._none(name)

    def move(self, name: str, call_id: str, to_queue: str) -> None:
        raise self._none(name)

    def agents(self) -> list[AgentView]:
        return []

    def agent(self, user_id: str) -> AgentView:
        raise QueueNotFound(f'no agent "{user_id}"')

    login = logout = unpause = agent

    def pause(self, user_id: str, reason: str) -> AgentView:
        return self.agent(user_id)


def call_row(**fields: Any) -> dict[str, Any]:
    """A finished, unanswered inbound call at T0, with ``fields`` changed."""
    row: dict[str, Any] = {
        "id": str(uuid.uuid4()), "sip_call_id": str(uuid.uuid4()), "direction": "inbound",
        "from_number": "+81355550001", "from_name": "", "to_number": "+81355550000",
        "caller_user": None, "callee_user": None, "answered_by": None, "started_at": T0,
        "answered_at": None, "ended_at": T0 + timedelta(seconds=20), "duration": 0.0,
        "ring_seconds": 20.0, "disposition": "no_answer", "hangup_cause": "caller hung up",
        "hangup_by": "caller", "sip_code": None, "recording_path": None,
        "recording_seconds": None, "transferred_to": None, "transfers": 0, "keys": None,
        "queue": None, "queue_result": None, "queue_wait": None, "queue_rule": None,
        "callback_number": None, "callback_attempts": 0,
    }
    row.update(fields)
    return row


@dataclass
class Api:
    http: httpx.AsyncClient
    seeder: Engine
    """Writes test rows; a separate engine, so the API's own queries can be watched."""
    crm: CrmControl
    recordings: Path
    tmp: Path

    async def get(self, path: str, key: str | None = ADMIN, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return await self.http.get(path, headers=headers, **kwargs)

    def seed(self, rows: Iterable[dict[str, Any]]) -> list[str]:
        rows = list(rows)
        with Session(self.seeder) as s, s.begin():
            s.execute(insert(Call), rows)
        return [row["id"] for row in rows]

    async def ids(self, key: str = ADMIN, **params: Any) -> set[str]:
        response = await self.get("/calls", key, params={"limit": 500, **params})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["next_cursor"] is None
        return {item["id"] for item in body["items"]}


@pytest_asyncio.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    url = f"sqlite:///{tmp_path / 'pbx.db'}"
    engine = open_engine(url)  # WAL, as the PBX runs it
    Base.metadata.create_all(engine)
    query_threads: set[int] = set()

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(*_args: object) -> None:
        query_threads.add(threading.get_ident())

    recordings = tmp_path / "recordings"
    recordings.mkdir()
    crm = CrmControl(CrmQueries(engine, "JP"), recordings, csv_batch=500)
    app = create_app(NoQueues(), lambda: KEYS)
    include_crm(app, crm, PREFIX)
    server = HttpServer(app, "127.0.0.1", 0)
    seeder = create_engine(url)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}{PREFIX}",
                                     timeout=20.0) as http:
            yield Api(http, seeder, crm, recordings, tmp_path)
    finally:
        await server.stop()
        crm.close()
        seeder.dispose()
        engine.dispose()
    # The API never queried the database on the event loop.
    assert threading.get_ident() not in query_threads


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]
    return str(body["error"])


@dataclass
class Calls:
    """Eight calls of different kinds, an hour apart."""

    answered_in: str
    missed_in: str
    outbound: str
    internal: str
    cancelled: str
    abandoned: str
    outbound_unanswered: str
    in_progress: str


def seed_calls(api: Api) -> Calls:
    at = [T0 + timedelta(hours=h) for h in range(8)]
    rows = [
        call_row(from_number="+81312345678", from_name="Hanako Yamada", callee_user="alice",
                 answered_by="alice", answered_at=at[0] + timedelta(seconds=5),
                 ended_at=at[0] + timedelta(seconds=35), duration=30.0,
                 disposition="answered", queue="support", queue_result="answered",
                 started_at=at[0]),
        # The trunk sent the same caller in national form.
        call_row(from_number="0312345678", callee_user="carol", started_at=at[1]),
        call_row(direction="outbound", from_number="102", to_number="81312345678",
                 caller_user="bob", answered_at=at[2] + timedelta(seconds=3), duration=120.0,
                 ended_at=at[2] + timedelta(seconds=123), disposition="answered",
                 started_at=at[2]),
        call_row(direction="internal", from_number="101", to_number="102",
                 caller_user="alice", callee_user="bob", answered_by="bob", duration=10.0,
                 disposition="answered", answered_at=at[3], started_at=at[3]),
        call_row(from_number="+12125550100", disposition="cancelled", started_at=at[4]),
        # The queue was full: the caller heard busy and never reached an agent.
        call_row(from_number="+12125550101", disposition="busy", queue="support",
                 queue_result="full", started_at=at[5]),
        call_row(direction="outbound", from_number="103", to_number="0012125550100",
                 caller_user="carol", started_at=at[6]),
        call_row(started_at=at[7], ended_at=None, duration=None, disposition="in_progress"),
    ]
    return Calls(*api.seed(rows))


# --- filters ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_each_filter_finds_exactly_its_calls(api: Api) -> None:
    c = seed_calls(api)
    assert await api.ids() == set(vars(c).values())
    assert await api.ids(type="inbound") == {c.answered_in, c.missed_in, c.cancelled,
                                             c.abandoned, c.in_progress}
    assert await api.ids(type="outbound") == {c.outbound, c.outbound_unanswered}
    assert await api.ids(type="internal") == {c.internal}
    # Missed as the call.missed webhook counts it: an unanswered outbound call is not.
    assert await api.ids(type="missed") == {c.missed_in, c.cancelled, c.abandoned}
    assert await api.ids(agent="alice") == {c.answered_in, c.internal}
    assert await api.ids(agent="bob") == {c.outbound, c.internal}
    assert await api.ids(agent="carol") == {c.missed_in, c.outbound_unanswered}
    assert await api.ids(queue="support") == {c.answered_in, c.abandoned}
    assert await api.ids(min_duration=20) == {c.answered_in, c.outbound}
    # A call in progress has no talk time yet: no duration range holds it.
    assert c.in_progress not in await api.ids(max_duration=10)
    assert await api.ids(min_duration=10, max_duration=30) == {c.answered_in, c.internal}
    assert await api.ids(**{"from": "2026-11-02T10:00:00", "to": "2026-11-02T12:00:00"}) == \
        {c.missed_in, c.outbound}
    # The same range in Tokyo time.
    assert await api.ids(**{"from": "2026-11-02T19:00:00+09:00",
                            "to": "2026-11-02T21:00:00+09:00"}) == {c.missed_in, c.outbound}
    assert await api.ids(**{"from": "2026-11-02T15:00:00Z"}) == {c.outbound_unanswered,
                                                                 c.in_progress}
    assert await api.ids(type="inbound", agent="alice", number="03-1234-5678",
                         queue="support", min_duration=1) == {c.answered_in}
    # The record's own type, status and owner (worked out from what the rows hold).
    assert await api.ids(call_type="inbound") == {c.answered_in, c.in_progress}
    assert await api.ids(call_type="missed") == {c.missed_in, c.cancelled, c.abandoned}
    assert await api.ids(call_type="outbound") == {c.outbound, c.outbound_unanswered}
    assert await api.ids(status="in_progress") == {c.in_progress}
    assert await api.ids(owner="alice") == {c.answered_in}
    assert await api.ids(owner="bob") == {c.outbound, c.internal}
    assert await api.ids(owner="carol", call_type="missed") == {c.missed_in}


@pytest.mark.asyncio
@pytest.mark.parametrize("number", [
    "03-1234-5678", "+81312345678", "0081312345678", "81312345678", "+81 3 1234 5678",
    "(03) 1234-5678", "010-81-3-1234-5678",
])
async def test_a_number_in_any_form_finds_the_calls_from_and_to_it(api: Api,
                                                                   number: str) -> None:
    c = seed_calls(api)
    assert await api.ids(number=number) == {c.answered_in, c.missed_in, c.outbound}


@pytest.mark.asyncio
async def test_foreign_numbers_and_extensions_are_found_too(api: Api) -> None:
    c = seed_calls(api)
    assert await api.ids(number="+1 212-555-0100") == {c.cancelled, c.outbound_unanswered}
    assert await api.ids(number="101") == {c.internal}
    assert await api.ids(number="0399999999") == set()


@pytest.mark.asyncio
async def test_bad_filters_are_refused_with_the_reason(api: Api) -> None:
    seed_calls(api)
    assert "type" in error_of(await api.get("/calls", params={"type": "lost"}), 422)
    assert "from" in error_of(await api.get("/calls", params={"from": "yesterday"}), 422)
    assert "'call-me'" in error_of(await api.get("/calls", params={"number": "call-me"}), 422)
    reason = error_of(await api.get("/calls", params={"from": "2026-11-03T00:00:00Z",
                                                      "to": "2026-11-02T00:00:00Z"}), 400)
    assert reason == ("the date range is empty: from (2026-11-03T00:00:00Z) must be before "
                      "to (2026-11-02T00:00:00Z)")
    assert "min_duration" in error_of(
        await api.get("/calls", params={"min_duration": 60, "max_duration": 10}), 400)
    assert "max_duration" in error_of(await api.get("/calls", params={"max_duration": -1}),
                                      422)
    assert "limit" in error_of(await api.get("/calls", params={"limit": 501}), 422)
    assert "call_type" in error_of(await api.get("/calls", params={"call_type": "lost"}), 422)
    assert "status" in error_of(await api.get("/calls", params={"status": "done"}), 422)
    assert "cursor" in error_of(await api.get("/calls", params={"cursor": "not-a-cursor"}),
                                422)
    # The CSV export checks the same filters before it starts.
    assert "'call-me'" in error_of(
        await api.get("/calls.csv", params={"number": "call-me"}), 422)
    assert error_of(await api.get("/calls.csv", params={"from": "2026-11-03", "to": "2026-11-02"}),
                    400).startswith("the date range is empty")


# --- pages -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_pages_cover_every_call_once_newest_or_oldest_first(api: Api) -> None:
    # Ten calls share each start time: the pages must still neither repeat nor skip one.
    seeded = api.seed(call_row(started_at=T0 + timedelta(minutes=i // 10)) for i in range(120))
    for order in ("newest", "oldest"):
        seen: list[str] = []
        starts: list[str] = []
        cursor: str | None = None
        for _page in range(10):
            params: dict[str, Any] = {"limit": 50, "order": order, "count": "true"}
            if cursor:
                params["cursor"] = cursor
            body = (await api.get("/calls", params=params)).json()
            assert body["total"] == 120
            seen += [item["id"] for item in body["items"]]
            starts += [item["started_at"] for item in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == 120 and set(seen) == set(seeded)
        assert starts == sorted(starts, reverse=order == "newest")
        assert starts[0].endswith("Z")
    first = (await api.get("/calls", params={"limit": 50})).json()
    assert first["total"] is None  # counting is asked for
    wrong = await api.get("/calls", params={"cursor": first["next_cursor"], "order": "oldest"})
    assert "order=newest" in error_of(wrong, 422)


# --- one call --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_one_call_with_its_legs_and_the_records_of_its_number(api: Api) -> None:
    c = seed_calls(api)
    with Session(api.seeder) as s, s.begin():
        contact = create_contact(s, first_name="Hanako", last_name="Yamada",
                                 phones=[("03-1234-5678", "work")], region="JP")
        lead = create_lead(s, first_name="H.", company="Yamada Trading",
                           phones=[("+81312345678", "")], region="JP")
        create_contact(s, first_name="Someone", phones=[("03-9999-0000", "")], region="JP")
    body = (await api.get(f"/calls/{c.answered_in}")).json()
    assert body["call"]["id"] == c.answered_in
    assert body["call"]["from_name"] == "Hanako Yamada"
    assert body["call"]["started_at"] == "2026-11-02T09:00:00Z"
    assert body["call"]["missed"] is False and body["call"]["has_recording"] is False
    assert "recording_path" not in body["call"]
    assert (body["call"]["call_type"], body["call"]["status"], body["call"]["owner"],
            body["call"]["subject"], body["call"]["who"], body["call"]["revision"]) == (
        "inbound", "completed", "alice", "Inbound call from Hanako Yamada", None, 1)
    assert [(leg["role"], leg["number"], leg["user"]) for leg in body["legs"]] == [
        ("caller", "+81312345678", None), ("callee", "+81355550000", "alice")]
    assert [(r["kind"], r["id"]) for r in body["records"]] == [("contact", contact),
                                                                ("lead", lead)]
    # Outbound: the other party is the called number (sent here without "+").
    outbound = (await api.get(f"/calls/{c.outbound}")).json()
    assert {r["id"] for r in outbound["records"]} == {contact, lead}
    # Numbers are shown as sent and in E.164; extensions have no E.164 form.
    assert (outbound["call"]["to_number"], outbound["call"]["to_e164"]) == \
        ("81312345678", "+81312345678")
    national = (await api.get(f"/calls/{c.missed_in}")).json()["call"]
    assert (national["from_number"], national["from_e164"]) == ("0312345678", "+81312345678")
    internal = (await api.get(f"/calls/{c.internal}")).json()
    assert internal["records"] == []
    assert (internal["call"]["from_e164"], internal["call"]["to_e164"]) == (None, None)
    assert [(leg["role"], leg["user"]) for leg in internal["legs"]] == [("caller", "alice"),
                                                                        ("callee", "bob")]
    transferred = api.seed([call_row(answered_by="alice", transferred_to="bob", transfers=1,
                                     disposition="answered")])[0]
    legs = (await api.get(f"/calls/{transferred}")).json()["legs"]
    assert [(leg["role"], leg["user"]) for leg in legs] == [
        ("caller", None), ("callee", "alice"), ("transfer", "bob")]
    assert error_of(await api.get("/calls/no-such-call"), 404) == "no call with id 'no-such-call'"


# --- CSV export ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_csv_export_holds_every_filtered_call_not_a_page(api: Api) -> None:
    inbound = [call_row(started_at=T0 + timedelta(seconds=i), from_number="+81312345678",
                        answered_by="alice", duration=12.5, disposition="answered",
                        answered_at=T0 + timedelta(seconds=i))
               for i in range(1200)]
    inbound[0]["from_name"] = '=HYPERLINK("http://evil.example","x")'
    wanted = api.seed(inbound)
    # Calls the filter leaves out: other numbers, and outbound calls.
    api.seed(call_row(started_at=T0 + timedelta(seconds=i)) for i in range(150))
    api.seed(call_row(direction="outbound", to_number="0312345678",
                      started_at=T0 + timedelta(seconds=i)) for i in range(150))
    response = await api.get("/calls.csv", params={"type": "inbound", "number": "03-1234-5678"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="calls-') and disposition.endswith(
        '.csv"')
    assert response.content.count(b"\r\n") == 1201  # RFC 4180 line ends
    rows = list(csv.reader(io.StringIO(response.text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 1 + 1200
    records = [dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]]
    assert [r["id"] for r in records] == wanted[::-1]  # newest first
    last = records[-1]
    assert last["started_at"] == "2026-11-02T09:00:00Z"
    assert last["from_number"] == last["from_e164"] == "+81312345678"
    assert last["to_e164"] == "+81355550000"
    assert last["from_name"] == "'=HYPERLINK(\"http://evil.example\",\"x\")"
    assert (last["duration"], last["missed"], last["has_recording"], last["queue"]) == \
        ("12.5", "false", "false", "")
    assert (last["call_type"], last["status"], last["owner"], last["who_name"],
            last["revision"]) == ("inbound", "completed", "alice", "", "1")
    oldest_first = await api.get("/calls.csv", params={"type": "inbound", "order": "oldest",
                                                       "number": "+81312345678"})
    assert [row[0] for row in csv.reader(io.StringIO(oldest_first.text))][1:] == wanted
    empty = await api.get("/calls.csv", params={"queue": "nobody-waits-here"})
    assert empty.text == ",".join(CSV_COLUMNS) + "\r\n"


@pytest.mark.asyncio
async def test_csv_export_comes_in_batches_and_frees_its_slot_when_abandoned(api: Api) -> None:
    api.seed(call_row(started_at=T0 + timedelta(seconds=i)) for i in range(1100))
    chunks = [chunk async for chunk in await api.crm.calls_csv(CallQuery())]
    # The header, then one chunk per 500-row batch: never the whole export at once.
    assert [chunk.count(b"\r\n") for chunk in chunks] == [1, 500, 500, 100]
    # Two exports may read at once, a third waits its turn; a stream dropped half-way (a
    # client gone) gives its place back.
    first, second, third = [await api.crm.calls_csv(CallQuery()) for _ in range(3)]
    for stream in (first, second):
        assert (await asyncio.wait_for(anext(stream), 5)).startswith(b"id,")
    waiting = asyncio.ensure_future(anext(third))
    done, _pending = await asyncio.wait({waiting}, timeout=0.3)
    assert not done
    await first.aclose()
    assert (await asyncio.wait_for(waiting, 5)).startswith(b"id,")
    for stream in (second, third):
        await stream.aclose()
    for _round in range(3):
        stream = await api.crm.calls_csv(CallQuery(kind="inbound"))
        await asyncio.wait_for(anext(stream), 5)
        await stream.aclose()
    rest = [chunk async for chunk in await api.crm.calls_csv(CallQuery(kind="internal"))]
    assert rest == [",".join(CSV_COLUMNS).encode() + b"\r\n"]


# --- recordings ------------------------------------------------------------------------------


def write_wav(path: Path, seconds: float = 0.5) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(bytes(range(256)) * int(seconds * 8000 * 4 / 256))
    return path.read_bytes()


@pytest.mark.asyncio
async def test_a_recording_downloads_whole_or_by_range(api: Api) -> None:
    path = api.recordings / "2026/11/02" / "call.wav"
    data = write_wav(path)
    flac = api.recordings / "2026/11/02" / "other.flac"
    flac.write_bytes(b"fLaC" + bytes(100))
    call, flac_call = api.seed([
        call_row(answered_by="alice", recording_path=str(path), recording_seconds=0.5),
        call_row(recording_path=str(flac)),
    ])
    assert (await api.get(f"/calls/{call}")).json()["call"]["has_recording"] is True
    whole = await api.get(f"/calls/{call}/recording")
    assert whole.status_code == 200
    assert whole.content == data
    assert whole.headers["content-type"] == "audio/wav"
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-disposition"] == f'inline; filename="{call}.wav"'
    part = await api.get(f"/calls/{call}/recording", headers={"Range": "bytes=44-143"})
    assert part.status_code == 206
    assert part.content == data[44:144]
    assert part.headers["content-range"] == f"bytes 44-143/{len(data)}"
    tail = await api.get(f"/calls/{call}/recording", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    beyond = await api.get(f"/calls/{call}/recording",
                           headers={"Range": f"bytes={len(data) + 10}-"})
    assert beyond.status_code == 416
    saved = await api.get(f"/calls/{call}/recording", params={"download": "true"})
    assert saved.headers["content-disposition"] == f'attachment; filename="{call}.wav"'
    other = await api.get(f"/calls/{flac_call}/recording")
    assert other.headers["content-type"] == "audio/flac" and other.content.startswith(b"fLaC")


@pytest.mark.asyncio
async def test_recordings_outside_the_directory_are_never_served(api: Api) -> None:
    secret = api.tmp / "secret.wav"
    write_wav(secret)
    (api.recordings / "notes.txt").write_text("not a recording")
    (api.recordings / "link.wav").symlink_to(secret)
    gone = api.recordings / "gone.wav"
    paths = [
        str(api.recordings / ".." / "secret.wav"),  # climbs out
        str(secret),  # absolute, elsewhere
        str(api.recordings / "link.wav"),  # a link leading out
        os.path.relpath(secret),  # relative to where the PBX runs
        "/etc/passwd",
        str(api.recordings / "notes.txt"),  # inside, but not a recording
        str(gone),  # deleted by retention
        str(api.recordings),  # the directory itself
    ]
    ids = api.seed(call_row(recording_path=path) for path in paths)
    for call_id in ids:
        response = await api.get(f"/calls/{call_id}/recording")
        assert error_of(response, 404) == \
            f"the recording of call {call_id} is no longer available"
    assert error_of(await api.get("/calls/%2E%2E%2F%2E%2E%2Fsecret.wav/recording"), 404)
    assert error_of(await api.get("/calls/..%2Fsecret.wav/recording"), 404)
    none = api.seed([call_row()])[0]
    assert error_of(await api.get(f"/calls/{none}/recording"), 404) == \
        f"call {none} has no recording"


# --- who may do what -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_keys_and_roles(api: Api) -> None:
    c = seed_calls(api)
    path = api.recordings / "r.wav"
    write_wav(path)
    alices, bobs = api.seed([call_row(answered_by="alice", recording_path=str(path)),
                             call_row(callee_user="bob", recording_path=str(path))])
    for target in ("/calls", f"/calls/{c.internal}", "/calls.csv", f"/calls/{alices}/recording"):
        assert "API key is required" in error_of(await api.get(target, key=None), 401)
        assert error_of(await api.get(target, key="unknown-key-0123456789"), 401) == \
            "unknown API key"
    # Agents read calls and their own recordings; exports and others' recordings are not theirs.
    assert c.internal in await api.ids(key=ALICE)
    assert (await api.get(f"/calls/{c.internal}", key=ALICE)).status_code == 200
    assert (await api.get(f"/calls/{alices}/recording", key=ALICE)).status_code == 200
    assert "own user's calls" in error_of(await api.get(f"/calls/{bobs}/recording", key=ALICE),
                                          403)
    assert "may not export calls" in error_of(await api.get("/calls.csv", key=ALICE), 403)
    for key in (SUPERVISOR, ADMIN):
        assert (await api.get(f"/calls/{bobs}/recording", key=key)).status_code == 200
        assert (await api.get("/calls.csv", key=key)).status_code == 200


@pytest.mark.asyncio
async def test_the_openapi_document_names_every_operation(api: Api) -> None:
    doc = (await api.get("/openapi.json", key=None)).json()
    operations = {op["operationId"]: (method, path) for path, item in doc["paths"].items()
                  for method, op in item.items()}
    assert operations["list_calls"] == ("get", "/api/v1/calls")
    assert operations["get_call"] == ("get", "/api/v1/calls/{call_id}")
    assert operations["export_calls_csv"] == ("get", "/api/v1/calls.csv")
    assert operations["get_recording"] == ("get", "/api/v1/calls/{call_id}/recording")
    assert operations["update_call"] == ("patch", "/api/v1/calls/{call_id}")
    for kind in ("contact", "lead"):
        assert operations[f"create_{kind}"] == ("post", f"/api/v1/{kind}s")
        assert operations[f"search_{kind}s"] == ("get", f"/api/v1/{kind}s")
        assert operations[f"get_{kind}"] == ("get", f"/api/v1/{kind}s/{{{kind}_id}}")
        assert operations[f"update_{kind}"] == ("patch", f"/api/v1/{kind}s/{{{kind}_id}}")
    params = {p["name"] for p in doc["paths"]["/api/v1/calls"]["get"]["parameters"]}
    assert {"type", "agent", "number", "from", "to", "min_duration", "max_duration", "queue",
            "call_type", "owner", "status", "limit", "cursor", "order", "count"} <= params
    assert "text/csv" in doc["paths"]["/api/v1/calls.csv"]["get"]["responses"]["200"]["content"]
