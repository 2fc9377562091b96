"""Outside calls through SIP trunks: SIPp plays the provider on 127.0.0.2, challenging the
INVITE with digest; the caller ID, privacy and failover to the second trunk are checked."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.pbx_process import PbxProcess, run_pbx
from tests.integration.test_ring_groups import USERS
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.integration.test_sipp_edge import _one, _record, _scenario, _why, trace
from tests.peers.ports import free_port
from tests.peers.sipp import SippRun, run_sipp, scenario_path, start_sipp

pytestmark = pytest.mark.integration

PROVIDER = "127.0.0.2"
BACKUP = "127.0.0.3"
PORTS = (free_port(), free_port())
ROUTING = f"""\
dialplan:
  region: JP
  outbound: [primary, backup]
trunks:
  - {{name: primary, host: {PROVIDER}, port: {PORTS[0]}, username: acct, password: s3cret,
     from_domain: carrier.example,
     rates: [{{prefix: "+81", per_minute: 0.03}}, {{prefix: "+813", per_minute: 0.05}}]}}
  - {{name: backup, host: {BACKUP}, port: {PORTS[1]}, username: acct, password: s3cret,
     from_domain: carrier.example, rates: [{{prefix: "81", per_minute: 0.6}}],
     billing_increment: 1s}}
"""
PROVIDER_KEYS = {"realm": "carrier.example", "auth_user": "acct", "auth_pass": "s3cret"}


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with run_pbx(tmp_path_factory.mktemp("outbound"), SIPP_AUTH, users=USERS, extra_top=ROUTING,
                 user_extra={"alice": '    caller_id: "+81312345678"\n'}) as p:
        yield p


def _provider(scenario: str, port: int, host: str = PROVIDER) -> SippRun:
    return SippRun(_scenario(scenario), None, local_ip=host, local_port=port,
                   keys=PROVIDER_KEYS, timeout=20, auto_answer=False)


def _caller(pbx: PbxProcess, number: str, scenario: str = "uac_call_auth.xml") -> SippRun:
    return SippRun(scenario, pbx.address, users=[(USERS["alice"][0], USERS["alice"][1])],
                   service=number, keys={"domain": pbx.address}, duration_ms=300, timeout=20,
                   auto_answer=False)


@pytest.mark.asyncio
async def test_outside_call_presents_the_users_caller_id(pbx: PbxProcess) -> None:
    provider = await start_sipp(_provider("uas_trunk_invite.xml", PORTS[0]))
    res = await run_sipp(_caller(pbx, "03-9999-8888"))
    got = await provider.wait(10)
    assert res.ok, _why(res, got, pbx=pbx)
    assert got.ok, _why(got, pbx=pbx)
    invites = [m for m in trace(got.messages) if m.method == "INVITE" and not m.sent]
    assert len(invites) == 2  # challenged once, then answered with the trunk's credentials
    invite = invites[-1]
    assert invite.start.startswith(f"INVITE sip:+81399998888@{PROVIDER}:{PORTS[0]}")
    assert "<sip:+81312345678@carrier.example>" in (invite.header("From") or "")
    assert invite.header("P-Asserted-Identity") == "<sip:+81312345678@carrier.example>"
    assert invite.header("Privacy") is None
    rec = _record(pbx, res)
    assert rec["direction"] == "outbound" and rec["to_number"] == "+81399998888"
    assert rec["caller_user"] == "alice" and rec["disposition"] == "answered"
    # The primary trunk's +813 rate (longest prefix), per started minute.
    assert 0 < rec["duration"] < 60 and rec["cost"] == pytest.approx(0.05)


@pytest.mark.asyncio
async def test_privacy_hides_the_caller_but_keeps_the_asserted_identity(
        pbx: PbxProcess, tmp_path: Path) -> None:
    text = scenario_path("uac_call_auth.xml").read_text().replace(
        "Max-Forwards: 70\n", "Max-Forwards: 70\n      Privacy: id\n")
    private = tmp_path / "uac_private.xml"
    private.write_text(text)
    provider = await start_sipp(_provider("uas_trunk_invite.xml", PORTS[0]))
    res = await run_sipp(_caller(pbx, "+81399998888", str(private)))
    got = await provider.wait(10)
    assert res.ok and got.ok, _why(res, got, pbx=pbx)
    invite = [m for m in trace(got.messages) if m.method == "INVITE" and not m.sent][-1]
    # RFC 3323 / 3325: an anonymous From, the identity only for the trusted provider.
    assert "anonymous@anonymous.invalid" in (invite.header("From") or "")
    assert invite.header("P-Asserted-Identity") == "<sip:+81312345678@carrier.example>"
    assert invite.header("Privacy") == "id"


@pytest.mark.asyncio
async def test_second_trunk_takes_the_call_when_the_first_is_down(pbx: PbxProcess) -> None:
    down = await start_sipp(_provider("uas_trunk_down.xml", PORTS[0]))
    backup = await start_sipp(_provider("uas_trunk_invite.xml", PORTS[1], BACKUP))
    res = await run_sipp(_caller(pbx, "0399998888"))
    failed, took = await down.wait(10), await backup.wait(10)
    assert res.ok, _why(res, failed, took, pbx=pbx)
    assert failed.ok and took.ok, _why(failed, took, pbx=pbx)
    _one(trace(failed.messages), sent=True, status=503)
    rec = _record(pbx, res)
    assert rec["disposition"] == "answered" and rec["direction"] == "outbound"
    # The backup trunk answered: its rate, per started second.
    assert rec["cost"] == pytest.approx(math.ceil(rec["duration"] - 1e-9) * 0.6 / 60, abs=1e-6)
