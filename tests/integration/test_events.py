"""The live event stream (screen pops): a CRM page subscribed over a WebSocket hears an outside
call ring with the contact its number matched, then answered and ended; an unknown caller
becomes a new lead when the PBX is told to create leads."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from crmsync.contacts import create_contact
from crmsync.models import Lead
from tests.integration.pbx_process import API_KEY, PbxProcess, run_pbx
from tests.integration.test_ring_groups import USERS, member
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.integration.test_trunk_inbound import CARRIER, carrier
from tests.peers.sipp import run_sipp

pytestmark = pytest.mark.integration

ROUTING = f"""\
dialplan:
  region: JP
trunks:
  - name: carrier
    host: {CARRIER}
numbers:
  - number: "03-1234-5620"
    type: local
    route: {{user: bob}}
crm:
  create_leads: true
"""


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with run_pbx(tmp_path_factory.mktemp("events"), SIPP_AUTH, users=USERS,
                 extra_top=ROUTING) as p:
        yield p


async def _collect(ws: Any, call_from: str, until: str, timeout: float = 15.0
                   ) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            event = json.loads(await ws.recv())
            if event.get("from_number") == call_from:
                got.append(event)
                if event["event"] == until:
                    return got


@pytest.mark.asyncio
async def test_a_known_caller_pops_the_contact_and_an_unknown_one_becomes_a_lead(
        pbx: PbxProcess) -> None:
    engine = create_engine(f"sqlite:///{pbx.database}")
    with Session(engine) as s, s.begin():
        create_contact(s, first_name="Hanako", last_name="Yamada", owner="bob",
                       phones=[("090-5555-0001", "mobile")], region="JP")
    url = f"ws://127.0.0.1:{pbx.http_port}/api/v1/events?key={API_KEY}"
    with pytest.raises(InvalidStatus):
        async with connect(url.replace(API_KEY, "wrong-key-0123456789")) as ws:
            await ws.recv()
    async with connect(url) as ws:
        assert json.loads(await ws.recv())["event"] == "events.ready"
        async with member(pbx, "bob", "uas_answer.xml"):
            res = await run_sipp(carrier(pbx, "0312345620", caller="09055550001",
                                         name="H YAMADA"))
            assert res.ok, res.describe()
            known = await _collect(ws, "+819055550001", "call.ended")
        async with member(pbx, "bob", "uas_answer.xml"):
            res = await run_sipp(carrier(pbx, "0312345620", caller="09055550002",
                                         name="Suzuki Jiro"))
            assert res.ok, res.describe()
            unknown = await _collect(ws, "+819055550002", "call.ended")
    assert [e["event"] for e in known] == [
        "call.ringing", "call.offered", "call.answered", "call.ended"]
    ringing = known[0]
    assert ringing["crm"]["kind"] == "contact" and ringing["crm"]["name"] == "Hanako Yamada"
    assert ringing["crm"]["owner"] == "bob" and ringing["to_number"] == "+81312345620"
    # bob's phone rang: his CRM page pops the contact on this one.
    assert known[1]["offered_to"] == "bob" and known[1]["crm"] == ringing["crm"]
    assert known[2]["answered_by"] == "bob" and known[3]["disposition"] == "answered"
    assert unknown[0]["event"] == "call.ringing" and unknown[0]["crm"]["kind"] == "lead"
    assert unknown[0]["crm"]["name"] == "Suzuki Jiro"
    with Session(engine) as s:
        leads = s.scalars(select(Lead)).all()
    assert [lead.first_name for lead in leads] == ["Suzuki Jiro"]
    engine.dispose()


@pytest.mark.asyncio
async def test_a_scheduled_calls_reminder_arrives_as_an_event_at_its_time(
        pbx: PbxProcess) -> None:
    now = datetime.now(UTC)
    url = f"ws://127.0.0.1:{pbx.http_port}/api/v1/events?key={API_KEY}"
    async with connect(url) as ws, httpx.AsyncClient(
            base_url=pbx.api, headers={"X-API-Key": API_KEY}, timeout=5.0) as api:
        assert json.loads(await ws.recv())["event"] == "events.ready"
        created = await api.post("/scheduled-calls", json={
            "subject": "Follow up the quote", "number": "090-5555-0009", "owner": "bob",
            "start_at": (now + timedelta(minutes=30)).isoformat(),
            "reminder_at": (now + timedelta(seconds=2)).isoformat()})
        assert created.status_code == 201, created.text
        past = await api.post("/scheduled-calls", json={
            "number": "090-5555-0009", "owner": "bob",
            "start_at": (now - timedelta(minutes=5)).isoformat()})
        assert past.status_code == 422
        # A call import with one bad row is refused whole, naming the row.
        csv = ("subject,type,number,start,duration,agent\n"
               "Call back,inbound,03-1234-9999,2026-11-01 10:00,60,bob\n"
               "Bad,outbound,not-a-number,2026-11-01 11:00,30,bob\n")
        refused = await api.post("/imports/calls", content=csv.encode(),
                                 headers={"Content-Type": "text/csv"})
        assert refused.status_code == 422
        assert [p["line"] for p in refused.json()["problems"]] == [3]
        async with asyncio.timeout(15):
            while True:
                event = json.loads(await ws.recv())
                if event["event"] == "call.reminder":
                    break
    assert event["scheduled_call_id"] == created.json()["id"]
    assert event["number"] == "+819055550009" and event["owner"] == "bob"
    assert event["subject"] == "Follow up the quote"
