"""Queue assignment rules that use the CRM: a caller whose number belongs to a contact goes to
the contact's owner, and a caller who called before goes to the agent who answered them last.

The callers are a SIPp "carrier" on 127.0.0.2 (an IP-authenticated trunk) calling the queue's
DID from outside numbers; the agents are SIPp phones. The CRM records are written into the
PBX's own database before the calls, in a form unlike the one the carrier sends.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from crmsync.contacts import create_contact
from tests.integration.db import wait_rows
from tests.integration.pbx_process import PbxProcess, run_pbx
from tests.integration.test_ring_groups import USERS, member
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.integration.test_sipp_edge import _scenario, _why, trace
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
  - number: "03-1234-5610"
    type: local
    route: {{queue: sales}}
queues:
  sales:
    members: [bob, carol]
    strategy: longest_idle
    ring_timeout: 5s
    rules:
      - name: owner
        when: {{crm: known}}
        target: crm_owner
        fallback_after: 20s
      - name: regular
        target: last_agent
        fallback_after: 20s
"""


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with run_pbx(tmp_path_factory.mktemp("rules"), SIPP_AUTH, users=USERS,
                 extra_top=ROUTING) as p:
        yield p


def _moved_caller(tmp_path: Path) -> str:
    """The carrier's scenario for a caller answered by the PBX and later moved to a phone."""
    # A queue may offer the caller at once, so the move can come before any pause ends:
    # this caller waits for it straight after its ACK.
    text = (Path(_scenario("uac_carrier_ivr.xml")).read_text()
            .replace('<pause milliseconds="500"/>', "")
            .replace("PCAP_PATH", "/usr/share/sip-tester/dtmf_2833_1.pcap")
            .replace("HOLD_MS", "500"))
    scenario = tmp_path / "uac_carrier_moved.xml"
    scenario.write_text(text)
    return str(scenario)


@pytest.mark.asyncio
async def test_a_known_contact_goes_to_its_owner(pbx: PbxProcess, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{pbx.database}")
    with Session(engine) as s, s.begin():
        create_contact(s, first_name="Ichiro", last_name="Tanaka", owner="carol",
                       phones=[("+81 90-1234-5678", "mobile")], region="JP")
    engine.dispose()
    # Bob would come first by the queue's own strategy (listed first, both idle): the rule
    # sends the caller to Carol, the contact's owner, and Bob's phone never rings.
    async with (member(pbx, "bob", "uas_answer.xml") as bob,
                member(pbx, "carol", "uas_answer.xml") as carol):
        run = carrier(pbx, "0312345610", caller="09012345678")
        run.scenario = _moved_caller(tmp_path)
        res = await run_sipp(run)
        got = await carol.wait(10)
        other = await bob.stop()
    assert res.ok, _why(res, got, pbx=pbx)
    assert got.ok, _why(got, pbx=pbx)
    assert not [m for m in trace(other.messages) if m.method == "INVITE" and not m.sent]
    # Carol's phone shows the caller as the CRM knows them, not as the carrier wrote it.
    offer = next(m for m in trace(got.messages) if m.method == "INVITE" and not m.sent)
    assert '"Ichiro Tanaka"' in (offer.header("From") or ""), offer.headers
    assert offer.header("X-Queue") == "sales"
    rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE queue = 'sales' AND "
                    "from_number = '+819012345678' AND ended_at IS NOT NULL", count=1)[-1]
    assert rec["answered_by"] == "carol" and rec["queue_rule"] == "owner"
    assert rec["queue_result"] == "answered"


@pytest.mark.asyncio
async def test_a_returning_caller_goes_to_the_agent_who_answered_last(
        pbx: PbxProcess, tmp_path: Path) -> None:
    con = sqlite3.connect(pbx.database)
    with con:
        con.execute(
            "INSERT INTO calls (id, sip_call_id, direction, from_number, from_name, to_number,"
            " answered_by, started_at, answered_at, ended_at, disposition, hangup_cause,"
            " transfers, callback_attempts) VALUES (?, ?, 'inbound', '+819011112222', '',"
            " '+81312345610', 'carol', '2026-11-20 10:00:00', '2026-11-20 10:00:05',"
            " '2026-11-20 10:03:00', 'answered', 'caller hung up', 0, 0)",
            (str(uuid.uuid4()), "old-call"))
    con.close()
    async with (member(pbx, "bob", "uas_answer.xml") as bob,
                member(pbx, "carol", "uas_answer.xml") as carol):
        run = carrier(pbx, "0312345610", caller="09011112222")
        run.scenario = _moved_caller(tmp_path)
        res = await run_sipp(run)
        got = await carol.wait(10)
        other = await bob.stop()
    assert res.ok, _why(res, got, pbx=pbx)
    assert not [m for m in trace(other.messages) if m.method == "INVITE" and not m.sent]
    rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE queue = 'sales' AND "
                    "from_number = '+819011112222' AND ended_at IS NOT NULL", count=1)[-1]
    assert rec["answered_by"] == "carol" and rec["queue_rule"] == "regular"
