"""Calls from an IP-authenticated trunk: a SIPp "carrier" on another loopback address (127.0.0.2)
delivers calls to the PBX's DIDs, written the ways carriers write them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.pbx_process import PbxProcess, run_pbx
from tests.integration.test_ring_groups import USERS, member
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.integration.test_sipp_edge import _finals, _one, _record, _scenario, _why, trace
from tests.peers.sipp import SippRun, run_sipp

pytestmark = pytest.mark.integration

CARRIER = "127.0.0.2"

ROUTING = f"""\
dialplan:
  region: JP
trunks:
  - name: carrier
    host: {CARRIER}
numbers:
  - number: "03-1234-5678"
    type: local
    route: {{user: bob}}
  - number: "0120-123-456"
    type: tollfree
    route: {{ring_group: sales}}
  - number: "03-1234-5699"
    type: local
    route: {{ivr: front}}
ring_groups:
  sales: {{members: [dave], strategy: simultaneous}}
ivr:
  front:
    welcome: {{text: "Welcome."}}
    options:
      "1": {{label: Sales, route: {{user: bob}}}}
"""


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with run_pbx(tmp_path_factory.mktemp("trunk"), SIPP_AUTH, users=USERS,
                 extra_top=ROUTING) as p:
        yield p


def carrier(pbx: PbxProcess, ruri: str, *, to: str | None = None, caller: str = "09012345678",
            name: str = "Tanaka Ichiro", source: str = CARRIER) -> SippRun:
    return SippRun(_scenario("uac_carrier.xml"), pbx.address, local_ip=source, service=ruri,
                   keys={"domain": pbx.address, "to": to or ruri, "from": caller,
                         "name": name},
                   duration_ms=300, timeout=20, auto_answer=False)


@pytest.mark.asyncio
@pytest.mark.parametrize(("ruri", "to"), [
    ("+81312345678", None),          # E.164 in the Request-URI
    ("81312345678", None),           # international without the plus
    ("pbx-account", "0312345678"),   # the trunk's account in the R-URI, the DID in To (national)
])
async def test_carrier_reaches_the_did_however_it_is_written(
        pbx: PbxProcess, ruri: str, to: str | None) -> None:
    async with member(pbx, "bob", "uas_answer.xml") as bob:
        res = await run_sipp(carrier(pbx, ruri, to=to))
        got = await bob.wait(10)
    assert res.ok, _why(res, got, pbx=pbx)
    assert got.ok, _why(got, pbx=pbx)
    # Bob's phone shows the outside caller, in E.164, with the name the carrier sent.
    invite = _one(trace(got.messages), sent=False, method="INVITE")
    assert "+819012345678" in (invite.header("From") or "")
    assert "Tanaka Ichiro" in (invite.header("From") or "")
    rec = _record(pbx, res)
    assert rec["direction"] == "inbound" and rec["caller_user"] is None
    assert rec["from_number"] == "+819012345678" and rec["from_name"] == "Tanaka Ichiro"
    assert rec["to_number"] == "+81312345678" and rec["answered_by"] == "bob"


@pytest.mark.asyncio
async def test_carrier_reaches_a_ring_group_on_a_tollfree_number(pbx: PbxProcess) -> None:
    async with member(pbx, "dave", "uas_answer.xml") as dave:
        res = await run_sipp(carrier(pbx, "0120123456"))
        got = await dave.wait(10)
    assert res.ok, _why(res, got, pbx=pbx)
    rec = _record(pbx, res)
    assert rec["answered_by"] == "dave" and rec["to_number"] == "+81120123456"


@pytest.mark.asyncio
@pytest.mark.parametrize("dialled", ["102", "0399999999", "*43"])
async def test_trunk_cannot_reach_extensions_outside_numbers_or_features(
        pbx: PbxProcess, dialled: str) -> None:
    run = carrier(pbx, dialled)
    run.scenario = _scenario("uac_carrier_refused.xml")
    res = await run_sipp(run)
    # No digest challenge: the trunk's address is its credential, and it reaches DIDs only.
    assert res.ok, _why(res, pbx=pbx)
    assert _finals(trace(res.messages)) == [404]


@pytest.mark.asyncio
async def test_same_call_from_an_unknown_address_is_challenged(pbx: PbxProcess) -> None:
    res = await run_sipp(carrier(pbx, "+81312345678", source="127.0.0.3"))
    finals = _finals(trace(res.messages))
    assert finals and finals[0] == 401, _why(res, pbx=pbx)


@pytest.mark.asyncio
async def test_carrier_call_forwarded_to_our_did_is_matched_by_diversion(
        pbx: PbxProcess, tmp_path: Path) -> None:
    # The carrier forwards a call for our DID: Request-URI and To carry the number the caller
    # dialled elsewhere, Diversion (RFC 5806) ours.
    text = Path(_scenario("uac_carrier.xml")).read_text().replace(
        "      P-Asserted-Identity:",
        "      Diversion: <sip:0312345678@carrier.example>;reason=unconditional\n"
        "      P-Asserted-Identity:", 1)
    scenario = tmp_path / "uac_carrier_diverted.xml"
    scenario.write_text(text)
    async with member(pbx, "bob", "uas_answer.xml") as bob:
        run = carrier(pbx, "0355550000")
        run.scenario = str(scenario)
        res = await run_sipp(run)
        got = await bob.wait(10)
    assert res.ok, _why(res, got, pbx=pbx)
    assert _record(pbx, res)["answered_by"] == "bob"


@pytest.mark.asyncio
async def test_carrier_caller_walks_an_ivr_to_a_phone(pbx: PbxProcess, tmp_path: Path) -> None:
    # The path most outside callers take: DID -> menu -> key "1" (RFC 4733, SIPp's own
    # capture) -> the chosen phone, with the caller moved onto it by a re-INVITE.
    text = (Path(_scenario("uac_carrier_ivr.xml")).read_text()
            .replace("PCAP_PATH", "/usr/share/sip-tester/dtmf_2833_1.pcap")
            .replace("HOLD_MS", "500"))
    scenario = tmp_path / "uac_carrier_ivr.xml"
    scenario.write_text(text)
    async with member(pbx, "bob", "uas_answer.xml") as bob:
        run = carrier(pbx, "+81312345699")
        run.scenario = str(scenario)
        res = await run_sipp(run)
        got = await bob.wait(10)
    assert res.ok, _why(res, got, pbx=pbx)
    invite = _one(trace(got.messages), sent=False, method="INVITE")
    assert "+819012345678" in (invite.header("From") or "")
    rec = _record(pbx, res)
    assert rec["answered_by"] == "bob" and rec["keys"] == "1"
    assert rec["direction"] == "inbound" and rec["caller_user"] is None
