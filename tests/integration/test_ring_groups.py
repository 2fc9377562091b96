"""Ring groups reached through a DID dialled from an extension (as an admin tests them).

Simultaneous: every member rings, the first answer wins, the others are cancelled with the
"completed elsewhere" Reason. Sequential: an offline member, a busy one (on a call, no call
waiting) and one who does not answer; the order and ring times are read from the phones' own
SIPp traces.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.integration.pbx_process import PbxProcess, run_pbx
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.integration.test_sipp_edge import (
    COMPLETED_ELSEWHERE,
    _one,
    _record,
    _scenario,
    _why,
    trace,
)
from tests.peers.phone_driver import Phone
from tests.peers.ports import free_port
from tests.peers.sipp import SippProcess, SippRun, run_sipp, start_sipp

pytestmark = pytest.mark.integration

USERS = {
    "alice": ("101", "alice-pw-1", "Alice"),
    "bob": ("102", "bob-pw-2", "Bob"),
    "carol": ("103", "carol-pw-3", "Carol"),
    "dave": ("104", "dave-pw-4", "Dave"),
    "erin": ("105", "erin-pw-5", "Erin"),
    "frank": ("106", "frank-pw-6", "Frank"),
}

ROUTING = """\
dialplan:
  region: JP
numbers:
  - number: "03-1234-5678"
    type: local
    route: {ring_group: sales}
  - number: "+81312345679"
    type: local
    route: {ring_group: support}
  - number: "+81312345600"
    type: local
    route: {ring_group: night}
ring_groups:
  night: {members: [frank], strategy: sequential, ring_seconds: 2}
  sales: {members: [bob, carol, dave], strategy: simultaneous, ring_seconds: 10}
  support: {members: [bob, carol, dave, erin], strategy: sequential, ring_seconds: 2}
"""


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with run_pbx(tmp_path_factory.mktemp("groups"), SIPP_AUTH, users=USERS, extra_top=ROUTING,
                 user_extra={"carol": "    call_waiting: false\n"}) as p:
        yield p


def _cred(uid: str) -> tuple[str, str]:
    return USERS[uid][0], USERS[uid][1]


async def _register(pbx: PbxProcess, uid: str, port: int, expires: int) -> None:
    res = await run_sipp(SippRun(
        "register_auth.xml", pbx.address, local_port=port, users=[_cred(uid)], timeout=10,
        keys={"domain": pbx.address, "expires": str(expires)}))
    assert res.ok, res.describe()


@contextlib.asynccontextmanager
async def member(pbx: PbxProcess, uid: str, scenario: str,
                 duration_ms: int | None = None) -> AsyncIterator[SippProcess]:
    """A SIPp phone registered as ``uid`` serving one call with ``scenario``."""
    port = free_port()
    await _register(pbx, uid, port, 300)
    proc = await start_sipp(SippRun(scenario, None, local_port=port, timeout=30,
                                    duration_ms=duration_ms, auto_answer=False))
    try:
        yield proc
    finally:
        await proc.stop()
        await _register(pbx, uid, port, 0)


def _dial(pbx: PbxProcess, caller: str, number: str, scenario: str = "uac_call_auth.xml",
          duration_ms: int = 500) -> SippRun:
    return SippRun(scenario, pbx.address, users=[_cred(caller)], service=number,
                   keys={"domain": pbx.address}, duration_ms=duration_ms, timeout=30,
                   auto_answer=False)


@pytest.mark.asyncio
async def test_simultaneous_group_rings_everyone_and_cancels_the_losers(pbx: PbxProcess) -> None:
    async with (
        member(pbx, "bob", "uas_ring_noanswer.xml") as bob,
        member(pbx, "carol", "uas_ring_noanswer.xml") as carol,
        member(pbx, "dave", _scenario("uas_answer_slow.xml")) as dave,
    ):
        res = await run_sipp(_dial(pbx, "alice", "0312345678"))
        won, lost = await dave.wait(10), [await bob.wait(10), await carol.wait(10)]
    assert res.ok, _why(res, won, *lost, pbx=pbx)
    assert won.ok, _why(won, pbx=pbx)
    for rang in lost:
        assert rang.ok, _why(rang, pbx=pbx)
        cancel = _one(trace(rang.messages), sent=False, method="CANCEL")
        assert cancel.header("Reason") == COMPLETED_ELSEWHERE, cancel.headers
    rec = _record(pbx, res)
    assert rec["answered_by"] == "dave" and rec["disposition"] == "answered"
    assert rec["to_number"] == "0312345678"


@pytest.mark.asyncio
async def test_sequential_group_skips_offline_and_busy_and_moves_on(pbx: PbxProcess) -> None:
    b_ext, b_pw, _ = USERS["bob"]
    async with Phone.start(name="bob") as bob:
        # Bob goes offline from his phone (*23), then leaves his phone registered.
        await bob.register(pbx.address, b_ext, b_pw, domain="pbx.test")
        await bob.dial(f"sip:*23@{pbx.address}")
        await bob.wait_for("established", timeout=10)
        await bob.wait_for("closed", timeout=15)
        async with (
            member(pbx, "carol", "uas_answer.xml") as carol,
            member(pbx, "dave", "uas_ring_noanswer.xml") as dave,
            member(pbx, "erin", _scenario("uas_answer_slow.xml")) as erin,
        ):
            # Carol is busy: on a call with alice, and she has no call waiting.
            busy = await start_sipp(_dial(pbx, "alice", "103", duration_ms=6000))
            try:
                res = await run_sipp(_dial(pbx, "frank", "+81312345679"))
            finally:
                carol_call = await busy.wait()
            rang, answered = await dave.wait(10), await erin.wait(10)
            carol_res = await carol.wait(10)
        assert bob.seen("incoming") == [], "bob is offline: his phone must not ring"
        # Bob back to available for the other tests.
        await bob.dial(f"sip:*21@{pbx.address}")
        await bob.wait_for("closed", timeout=15)
    assert res.ok, _why(res, rang, answered, pbx=pbx)
    assert carol_call.ok, _why(carol_call, pbx=pbx)
    # Carol's phone saw one call only: alice's; the group never rang her.
    carol_invites = {m.header("Call-ID") for m in trace(carol_res.messages)
                     if m.method == "INVITE" and not m.sent}
    assert len(carol_invites) == 1, carol_invites
    # Dave rang first, for ring_seconds, then was cancelled (nobody answered: no
    # "completed elsewhere"); erin rang right after and answered.
    d_invite = _one(trace(rang.messages), sent=False, method="INVITE")
    d_cancel = _one(trace(rang.messages), sent=False, method="CANCEL")
    e_invite = _one(trace(answered.messages), sent=False, method="INVITE")
    assert d_cancel.header("Reason") != COMPLETED_ELSEWHERE
    rang_for = (d_cancel.at - d_invite.at).total_seconds()
    assert 1.8 <= rang_for <= 3.0, rang_for
    # Erin's INVITE leaves together with dave's CANCEL (two SIPp processes stamp them).
    assert -0.05 <= (e_invite.at - d_cancel.at).total_seconds() <= 0.5
    rec = _record(pbx, res)
    assert rec["answered_by"] == "erin" and rec["disposition"] == "answered"


@pytest.mark.asyncio
async def test_group_with_nobody_available_plays_the_unavailable_prompt(
        pbx: PbxProcess) -> None:
    # Frank, the only member, has no registered phone: the caller is answered, hears the
    # unavailable prompt, and the PBX hangs up; the record is a missed call.
    res = await run_sipp(SippRun(
        _scenario("uac_call_remote_bye.xml"), pbx.address, users=[_cred("alice")],
        service="0312345600", keys={"domain": pbx.address}, timeout=20, auto_answer=False))
    assert res.ok, _why(res, pbx=pbx)
    msgs = trace(res.messages)
    ok = _one(msgs, sent=False, status=200, cseq="INVITE")
    bye = _one(msgs, sent=False, method="BYE")
    assert (bye.at - ok.at).total_seconds() >= 1.5  # the prompt played before the hang-up
    rec = _record(pbx, res)
    assert rec["disposition"] == "no_answer" and rec["answered_by"] is None
    assert rec["duration"] == 0
