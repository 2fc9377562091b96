"""Phones show an outside caller by the name the CRM knows them by, on calls straight to a user
and to a ring group (as they do on a queue's offers).

A SIPp "carrier" on 127.0.0.2 (an IP-authenticated trunk) calls the PBX's DIDs; the phones are
SIPp phones whose traces give the INVITE the PBX sent them. The contact is created through the
HTTP API, its number written with hyphens; the carrier sends it national or in E.164.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.pbx_process import API_KEY, PbxProcess, run_pbx
from tests.integration.test_ring_groups import USERS, member
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.integration.test_sipp_edge import _one, _why, trace
from tests.integration.test_trunk_inbound import CARRIER, carrier
from tests.peers.sipp import SippResult, run_sipp

pytestmark = pytest.mark.integration

ROUTING = f"""\
dialplan:
  region: JP
trunks:
  - name: carrier
    host: {CARRIER}
numbers:
  - number: "03-1234-5621"
    type: local
    route: {{user: bob}}
  - number: "03-1234-5622"
    type: local
    route: {{ring_group: pair}}
ring_groups:
  pair: {{members: [carol, dave], strategy: simultaneous, ring_seconds: 10}}
"""

TRUNK_NAME = "Tanaka Ichiro"
"""The display name the carrier sends with every call."""


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with run_pbx(tmp_path_factory.mktemp("crmnames"), SIPP_AUTH, users=USERS,
                 extra_top=ROUTING) as p:
        yield p


@pytest.fixture(scope="module")
def contact(pbx: PbxProcess) -> str:
    """A contact of the CRM whose mobile number is written with hyphens; its id."""
    with httpx.Client(base_url=pbx.api, headers={"X-API-Key": API_KEY}, timeout=5.0) as api:
        made = api.post("/contacts", json={
            "first_name": "Hanako", "last_name": "Yamada", "company": "Yamada Trading",
            "phones": [{"number": "090-1234-5678", "label": "mobile"}],
        })
    assert made.status_code == 201, made.text
    contact_id: str = made.json()["id"]
    return contact_id


def _shown(phone: SippResult) -> str:
    """The From header of the INVITE the PBX sent the phone."""
    invite = _one(trace(phone.messages), sent=False, method="INVITE")
    return invite.header("From") or ""


@pytest.mark.asyncio
async def test_a_direct_call_shows_the_contacts_name(pbx: PbxProcess, contact: str) -> None:
    async with member(pbx, "bob", "uas_answer.xml") as bob:
        res = await run_sipp(carrier(pbx, "0312345621", caller="09012345678",
                                     name=TRUNK_NAME))
        got = await bob.wait(10)
    assert res.ok, _why(res, got, pbx=pbx)
    assert got.ok, _why(got, pbx=pbx)
    shown = _shown(got)
    assert shown.startswith('"Hanako Yamada" <sip:+819012345678@'), shown


@pytest.mark.asyncio
async def test_every_member_of_a_ring_group_sees_the_contacts_name(
        pbx: PbxProcess, contact: str) -> None:
    async with (member(pbx, "carol", "uas_answer.xml") as carol,
                member(pbx, "dave", "uas_ring_noanswer.xml") as dave):
        res = await run_sipp(carrier(pbx, "0312345622", caller="+819012345678",
                                     name=TRUNK_NAME))
        won, lost = await carol.wait(10), await dave.wait(10)
    assert res.ok, _why(res, won, lost, pbx=pbx)
    for phone in (won, lost):
        assert phone.ok, _why(phone, pbx=pbx)
        assert _shown(phone).startswith('"Hanako Yamada" '), _shown(phone)


@pytest.mark.asyncio
async def test_an_unknown_caller_keeps_the_name_the_trunk_sent(pbx: PbxProcess,
                                                               contact: str) -> None:
    async with member(pbx, "bob", "uas_answer.xml") as bob:
        res = await run_sipp(carrier(pbx, "0312345621", caller="09099998888",
                                     name=TRUNK_NAME))
        got = await bob.wait(10)
    assert res.ok, _why(res, got, pbx=pbx)
    assert _shown(got).startswith(f'"{TRUNK_NAME}" <sip:+819099998888@'), _shown(got)
