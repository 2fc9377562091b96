"""The Calls-module fields of call records over the HTTP API, on a real SQLite file and a real
server on a loopback port: the fields and legs a call shows, the new filters and CSV columns,
and annotations (PATCH /calls/{id}) with who may make them, what is refused and why, the
revision they raise and the call.updated event they leave for the webhooks."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import Engine, create_engine, insert, select
from sqlalchemy.orm import Session

from crmsync.contacts import create_contact, create_lead
from crmsync.models import Base, Call, CallLegRecord, OutboxEvent, WebhookDelivery
from crmsync.queries import CrmQueries
from pbx.api import PREFIX, create_app
from pbx.api_calls import include_crm
from pbx.config_crm import Webhook
from pbx.crmcontrol import CSV_COLUMNS, CrmControl
from pbx.db import open_engine
from pbx.httpserver import HttpServer
from tests.pbx.test_api_calls import ADMIN, ALICE, KEYS, SUPERVISOR, T0, NoQueues, call_row

HOOKS = [Webhook(name="crm", url="https://crm.example/hook", secret="0123456789abcdef0123",
                 events=("call.ended", "call.updated")),
         Webhook(name="bi", url="https://bi.example/hook", secret="0123456789abcdef0123",
                 events=("call.ended",))]


@dataclass
class Api:
    http: httpx.AsyncClient
    seeder: Engine
    woken: list[int] = field(default_factory=list)

    async def call(self, method: str, path: str, key: str | None = ADMIN,
                   **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def patch(self, call_id: str, body: object, key: str = ADMIN) -> httpx.Response:
        return await self.call("PATCH", f"/calls/{call_id}", key, json=body)

    def seed(self, **fields: Any) -> str:
        row = call_row(**fields)
        with Session(self.seeder) as s, s.begin():
            s.execute(insert(Call), [row])
        return str(row["id"])

    def row(self, call_id: str) -> dict[str, Any]:
        with Session(self.seeder) as s:
            return dict(s.execute(select(Call.__table__).where(Call.id == call_id))
                        .mappings().one())

    def outbox(self) -> dict[str, tuple[dict[str, Any], set[str]]]:
        with Session(self.seeder) as s:
            hooks: dict[int, set[str]] = {}
            for outbox_id, hook in s.execute(select(WebhookDelivery.outbox_id,
                                                    WebhookDelivery.webhook)):
                hooks.setdefault(outbox_id, set()).add(hook)
            return {e.idempotency_key: (json.loads(e.payload), hooks.get(e.id, set()))
                    for e in s.scalars(select(OutboxEvent))}


@pytest_asyncio.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    url = f"sqlite:///{tmp_path / 'pbx.db'}"
    engine = open_engine(url)
    Base.metadata.create_all(engine)
    seeder = create_engine(url)
    woken: list[int] = []
    store = CrmQueries(engine, "JP", webhooks=lambda: HOOKS,
                       on_outbox_commit=lambda: woken.append(threading.get_ident()))
    crm = CrmControl(store, tmp_path)
    app = create_app(NoQueues(), lambda: KEYS)
    include_crm(app, crm, PREFIX)
    server = HttpServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}{PREFIX}",
                                     timeout=20.0) as http:
            yield Api(http, seeder, woken)
    finally:
        await server.stop()
        crm.close()
        seeder.dispose()
        engine.dispose()


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return str(response.json()["error"])


def people(api: Api) -> dict[str, str]:
    with Session(api.seeder) as s, s.begin():
        return {
            "tanaka": create_contact(s, first_name="Ichiro", last_name="Tanaka",
                                     phones=[("+81355550001", "")], region="JP"),
            "acme": create_lead(s, first_name="", company="ACME KK", region="JP"),
        }


@pytest.mark.asyncio
async def test_a_call_shows_its_fields_legs_and_link(api: Api) -> None:
    who = people(api)
    linked = api.seed(callee_user="alice", who_kind="contact", who_id=who["tanaka"])
    with Session(api.seeder) as s, s.begin():
        s.execute(insert(CallLegRecord), [
            {"id": f"{linked}:2", "call_id": linked, "kind": "queue", "user_id": "bob",
             "number": None, "started_at": T0 + timedelta(seconds=9), "answered_at": None,
             "ended_at": T0 + timedelta(seconds=20), "result": "cancelled", "sip_code": 487,
             "queue": "support"},
            {"id": f"{linked}:1", "call_id": linked, "kind": "ring", "user_id": "alice",
             "number": None, "started_at": T0, "answered_at": None,
             "ended_at": T0 + timedelta(seconds=9), "result": "no_answer", "sip_code": None,
             "queue": None},
        ])
    body = (await api.call("GET", f"/calls/{linked}")).json()
    call = body["call"]
    # A record written without the new fields got them from what it holds.
    assert (call["call_type"], call["status"], call["owner"], call["subject"],
            call["revision"]) == ("missed", "completed", "alice",
                                  "Missed call from +81355550001", 1)
    assert call["who"] == {"kind": "contact", "id": who["tanaka"], "name": "Ichiro Tanaka"}
    assert (call["purpose"], call["result"], call["description"], call["cost"]) == (
        None, None, None, None)
    assert [(leg["id"], leg["kind"], leg["role"], leg["user"], leg["result"], leg["sip_code"],
             leg["queue"], leg["started_at"]) for leg in body["legs"]] == [
        (f"{linked}:1", "ring", "callee", "alice", "no_answer", None, None,
         "2026-11-02T09:00:00Z"),
        (f"{linked}:2", "queue", "callee", "bob", "cancelled", 487, "support",
         "2026-11-02T09:00:09Z")]
    # A record without stored legs shows the summary of old.
    plain = api.seed(answered_by="bob", disposition="answered")
    legs = (await api.call("GET", f"/calls/{plain}")).json()["legs"]
    assert [(leg["role"], leg["id"], leg["kind"]) for leg in legs] == [
        ("caller", None, None), ("callee", None, None)]
    listed = (await api.call("GET", "/calls")).json()["items"]
    assert {item["id"]: item["who"] for item in listed}[linked]["name"] == "Ichiro Tanaka"


@pytest.mark.asyncio
async def test_filters_and_csv_columns(api: Api) -> None:
    missed = api.seed(callee_user="alice")
    answered = api.seed(answered_by="bob", disposition="answered", duration=5.0)
    outbound = api.seed(direction="outbound", caller_user="alice", from_number="101",
                        to_number="0312345678", disposition="answered",
                        started_at=T0 + timedelta(hours=1))
    live = api.seed(callee_user="carol", ended_at=None, duration=None,
                    disposition="in_progress")

    async def ids(**params: Any) -> set[str]:
        response = await api.call("GET", "/calls", params=params)
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    # type=inbound is by direction; call_type=inbound leaves the missed call out.
    assert await ids(type="inbound") == {missed, answered, live}
    assert await ids(call_type="inbound") == {answered, live}
    assert await ids(call_type="missed") == {missed}
    assert await ids(call_type="outbound") == {outbound}
    assert await ids(status="in_progress") == {live}
    assert await ids(status="completed") == {missed, answered, outbound}
    assert await ids(owner="alice") == {missed, outbound}
    assert await ids(owner="bob", call_type="inbound") == {answered}
    assert await ids(agent="alice") == {missed, outbound}  # the agent filter is unchanged
    assert "call_type" in error_of(await api.call("GET", "/calls",
                                                  params={"call_type": "lost"}), 422)
    assert "status" in error_of(await api.call("GET", "/calls",
                                               params={"status": "scheduled"}), 422)
    await api.patch(missed, {"purpose": "sales", "description": "=cmd|' /C calc'!A0\nnext"})
    response = await api.call("GET", "/calls.csv", params={"owner": "alice", "order": "oldest"})
    rows = [dict(zip(CSV_COLUMNS, row, strict=True))
            for row in list(csv.reader(io.StringIO(response.text)))[1:]]
    assert [(r["id"], r["call_type"], r["status"], r["owner"], r["purpose"], r["revision"])
            for r in rows] == [(missed, "missed", "completed", "alice", "sales", "2"),
                               (outbound, "outbound", "completed", "alice", "", "1")]
    # A formula stays text in a spreadsheet; the line break stays inside its cell.
    assert rows[0]["description"] == "'=cmd|' /C calc'!A0\nnext"
    assert rows[1]["subject"] == "Outbound call to 0312345678"


@pytest.mark.asyncio
async def test_annotating_a_call(api: Api) -> None:
    who = people(api)
    call_id = api.seed(answered_by="alice", disposition="answered", duration=30.0)
    response = await api.patch(call_id, {
        "purpose": "support", "result": "sent the manual", "description": "line 1\nline 2",
        "cost": 12.5, "who": {"kind": "lead", "id": who["acme"]}})
    assert response.status_code == 200, response.text
    call = response.json()["call"]
    assert (call["purpose"], call["result"], call["description"], call["cost"],
            call["revision"]) == ("support", "sent the manual", "line 1\nline 2", 12.5, 2)
    assert call["who"] == {"kind": "lead", "id": who["acme"], "name": "ACME KK"}
    # The subject was the PBX's own: it now names the record the call is linked to.
    assert call["subject"] == "Inbound call from ACME KK"
    stored = api.row(call_id)
    assert (stored["revision"], stored["who_kind"], stored["purpose"]) == (2, "lead", "support")
    # In the same transaction: the call.updated event, for the webhook that wants it.
    payload, hooks = api.outbox()[f"{call_id}:call.updated:2"]
    assert hooks == {"crm"}
    assert payload["event"] == "call.updated" and payload["id"] == f"{call_id}:call.updated:2"
    assert payload["call"]["revision"] == 2 and payload["call"]["cost"] == 12.5
    assert payload["call"]["who_id"] == who["acme"] and payload["legs"] == []
    assert len(api.woken) == 1 and api.woken[0] != threading.get_ident()
    # Sending what the call has already changes nothing: no revision, no event.
    again = await api.patch(call_id, {"purpose": "support", "cost": 12.5})
    assert again.json()["call"]["revision"] == 2
    assert len(api.outbox()) == 1 and len(api.woken) == 1
    # A subject of one's own stays when the link changes; null gives back the PBX's.
    await api.patch(call_id, {"subject": "Manual request"})
    call = (await api.patch(call_id, {"who": {"kind": "contact", "id": who["tanaka"]}})
            ).json()["call"]
    assert (call["subject"], call["revision"]) == ("Manual request", 4)
    call = (await api.patch(call_id, {"subject": None, "who": None, "cost": None})).json()[
        "call"]
    assert (call["subject"], call["who"], call["cost"], call["revision"]) == (
        "Inbound call from +81355550001", None, None, 5)
    assert sorted(api.outbox()) == [f"{call_id}:call.updated:{n}" for n in (2, 3, 4, 5)]


@pytest.mark.asyncio
async def test_who_may_annotate_and_what_is_refused(api: Api) -> None:
    who = people(api)
    alices = api.seed(answered_by="alice", disposition="answered")
    nobodys = api.seed()  # a queue's call nobody took: no owner
    bobs = api.seed(callee_user="bob")
    assert (await api.patch(alices, {"result": "ok"}, key=ALICE)).status_code == 200
    assert (await api.patch(nobodys, {"result": "ok"}, key=ALICE)).status_code == 200
    reason = error_of(await api.patch(bobs, {"result": "mine"}, key=ALICE), 403)
    assert reason == ("the call belongs to 'bob': an agent's key may annotate the calls of "
                      "its own user and calls nobody owns")
    assert api.row(bobs)["result"] is None and api.row(bobs)["revision"] == 1
    assert (await api.patch(bobs, {"result": "done"}, key=SUPERVISOR)).status_code == 200
    assert error_of(await api.patch("no-such-call", {"result": "x"}), 404) == \
        "no call with id 'no-such-call'"
    assert error_of(await api.patch(alices, {"who": {"kind": "contact", "id": who["acme"]}}),
                    422) == f"no contact with id {who['acme']!r}"
    for body, words in [
        ({}, "nothing to change"),
        ({"who": {"kind": "account", "id": "x"}}, "who.kind"),
        ({"who": {"kind": "lead"}}, "who.id"),
        ({"owner": "bob"}, "owner"),
        ({"cost": -1}, "cost"),
        ({"subject": ""}, "subject"),
        ({"subject": "x" * 256}, "subject"),
        ({"purpose": "a\tb"}, "purpose must not contain control characters"),
        ([1, 2], "body"),
    ]:
        assert words in error_of(await api.patch(alices, body), 422), body
    assert "API key is required" in error_of(
        await api.call("PATCH", f"/calls/{alices}", key=None, json={"result": "x"}), 401)
    # Nothing refused left a trace: alice's call has the one revision of its one change.
    assert api.row(alices)["revision"] == 2
    doc = (await api.call("GET", "/openapi.json", key=None)).json()
    assert doc["paths"]["/api/v1/calls/{call_id}"]["patch"]["operationId"] == "update_call"
    params = {p["name"] for p in doc["paths"]["/api/v1/calls"]["get"]["parameters"]}
    assert {"call_type", "owner", "status"} <= params
