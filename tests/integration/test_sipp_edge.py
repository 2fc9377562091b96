"""SIPp against the running PBX: forking, ring timeout, unreachable callees, callee hang-up,
hold/resume re-INVITEs, SIP INFO DTMF, TCP flows and Max-Forwards.

Every test drives real SIPp phones over loopback sockets and checks what a phone sees (the
messages in SIPp's trace) and what the PBX recorded in its ``calls`` table.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.integration import pbx_process
from tests.integration.db import rows, wait_rows
from tests.integration.pbx_process import USERS, PbxProcess, run_pbx
from tests.peers.ports import LOOPBACK, free_port
from tests.peers.sipp import SCENARIOS as PEER_SCENARIOS
from tests.peers.sipp import SippProcess, SippResult, SippRun, run_sipp, start_sipp

pytestmark = pytest.mark.integration

SCENARIOS = Path(__file__).resolve().parent / "scenarios"

# SIPp 3.6 answers only the first challenge and only MD5, so these PBXs list MD5 first.
SIPP_AUTH = "  auth_algorithms: [MD5, SHA-256]\n"
COMPLETED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'

Transport = Literal["udp", "tcp"]


def _scenario(name: str) -> str:
    """A scenario of this folder by file name (the peers' own ones resolve by bare name)."""
    return str(SCENARIOS / name)


# -- reading SIPp message traces ---------------------------------------------------------------

_SEPARATOR = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\s*$", re.M)


@dataclass(frozen=True)
class Traced:
    """One SIP message in a SIPp ``-trace_msg`` file."""

    at: datetime
    sent: bool
    start: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def method(self) -> str | None:
        return None if self.start.startswith("SIP/2.0") else self.start.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        return int(self.start.split()[1]) if self.start.startswith("SIP/2.0") else None

    @property
    def cseq_method(self) -> str:
        return (self.header("CSeq") or " ").split()[-1]

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def sdp_line(self, prefix: str) -> str:
        for line in self.body.decode("ascii", "replace").splitlines():
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} line in SDP:\n{self.body!r}")

    @property
    def sdp_port(self) -> int:
        return int(self.sdp_line("m=audio ").split()[1])

    @property
    def sdp_direction(self) -> str:
        for attr in ("sendrecv", "sendonly", "recvonly", "inactive"):
            if f"a={attr}\r\n" in self.body.decode("ascii", "replace") + "\r\n":
                return attr
        return "sendrecv"  # RFC 3264 5.1: no attribute means sendrecv


def trace(text: str) -> list[Traced]:
    """Split a SIPp message trace into messages (the trace keeps each message's CRLFs)."""
    out: list[Traced] = []
    marks = list(_SEPARATOR.finditer(text))
    for i, m in enumerate(marks):
        chunk = text[m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        chunk = chunk.lstrip("\n")
        info, _, raw = chunk.partition("\n")
        raw = raw.lstrip("\n")
        head, _, body = raw.partition("\r\n\r\n")
        lines = head.split("\r\n")
        headers = [(k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:])]
        length = next((int(v) for k, v in headers if k.lower() in ("content-length", "l")), 0)
        out.append(Traced(
            at=datetime.fromisoformat(m.group(1)), sent=" sent" in info, start=lines[0],
            headers=headers, body=body.encode("latin-1")[:length],
        ))  # fmt: skip
    return out


def _one(msgs: list[Traced], *, sent: bool, method: str | None = None, status: int | None = None,
         cseq: str | None = None, nth: int = 0) -> Traced:
    found = [
        m for m in msgs
        if m.sent == sent and (method is None or m.method == method)
        and (status is None or m.status == status) and (cseq is None or m.cseq_method == cseq)
    ]  # fmt: skip
    if len(found) <= nth:
        what = method or status
        raise AssertionError(f"no {what} {'sent' if sent else 'received'} (#{nth}) in trace:\n"
                             + "\n".join(("> " if m.sent else "< ") + m.start for m in msgs))
    return found[nth]


def _finals(msgs: list[Traced]) -> list[int]:
    """Final responses the phone received to its INVITEs."""
    return [m.status for m in msgs
            if not m.sent and m.status is not None and m.status >= 200
            and m.cseq_method == "INVITE"]  # fmt: skip


# -- phones --------------------------------------------------------------------------------------


def _cred(uid: str) -> tuple[str, str]:
    ext, pw, _ = USERS[uid]
    return ext, pw


async def _register(pbx: PbxProcess, uid: str, port: int, expires: int,
                    transport: Transport = "udp") -> SippResult:
    return await run_sipp(SippRun(
        "register_auth.xml", pbx.address, local_port=port, transport=transport,
        users=[_cred(uid)], timeout=10, keys={"domain": pbx.address, "expires": str(expires)},
    ))  # fmt: skip


@contextlib.asynccontextmanager
async def phone(pbx: PbxProcess, uid: str, scenario: str, *, timeout: float = 20.0,
                duration_ms: int | None = None) -> AsyncIterator[SippProcess]:
    """A SIPp phone registered as ``uid`` and serving one call with ``scenario``; its binding
    is removed again afterwards, so later calls are not forked to a SIPp that is gone."""
    port = free_port()
    reg = await _register(pbx, uid, port, 300)
    assert reg.ok, reg.describe()
    proc = await start_sipp(SippRun(scenario, None, local_port=port, timeout=timeout,
                                    duration_ms=duration_ms, auto_answer=False))
    try:
        yield proc
    finally:
        await proc.stop()
        unreg = await _register(pbx, uid, port, 0)
        assert unreg.ok, unreg.describe()


def caller_run(pbx: PbxProcess, scenario: str, number: str, *, caller: str = "alice",
               duration_ms: int | None = None, transport: Transport = "udp",
               keys: dict[str, str] | None = None, timeout: float = 20.0) -> SippRun:
    """A SIPp caller dialling ``number`` as ``caller`` (its digest credentials injected)."""
    return SippRun(scenario, pbx.address, users=[_cred(caller)], service=number,
                   keys={"domain": pbx.address, **(keys or {})}, duration_ms=duration_ms,
                   transport=transport, timeout=timeout, auto_answer=False)


async def dial(pbx: PbxProcess, scenario: str, number: str, **kwargs: Any) -> SippResult:
    return await run_sipp(caller_run(pbx, scenario, number, **kwargs))


def _record(pbx: PbxProcess, caller: SippResult) -> dict[str, Any]:
    """The finished call record of the call ``caller`` placed (found by its Call-ID)."""
    invite = _one(trace(caller.messages), sent=True, method="INVITE")
    call_id = invite.header("Call-ID")
    return wait_rows(pbx.database,
                     "SELECT * FROM calls WHERE sip_call_id = ? AND ended_at IS NOT NULL",
                     call_id, where=pbx.log_text()[-2000:])[0]


def _why(*results: SippResult, pbx: PbxProcess | None = None) -> str:
    parts = [r.describe() for r in results]
    if pbx is not None:
        parts.append("--- PBX log ---\n" + pbx.log_text()[-3000:])
    return "\n".join(parts)


# -- PBXs ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with run_pbx(tmp_path_factory.mktemp("edge"), SIPP_AUTH) as p:
        yield p


@pytest.fixture(scope="module")
def short_ring_pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    """A PBX that gives up ringing after 2 s.

    run_pbx's template already sets ``ring_timeout: 8s`` and the loader rejects duplicate keys,
    so the value is replaced in the generated text rather than added through ``extra_sip``.
    """
    original = pbx_process.config_text

    def two_seconds(*args: Any, **kwargs: Any) -> str:
        text = original(*args, **kwargs)
        assert "  ring_timeout: 8s\n" in text
        return text.replace("  ring_timeout: 8s\n", "  ring_timeout: 2s\n")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pbx_process, "config_text", two_seconds)
        with run_pbx(tmp_path_factory.mktemp("ring"), SIPP_AUTH) as p:
            mp.undo()
            yield p


# -- 1. forking ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_forked_call_answered_on_one_phone_cancels_the_other(pbx: PbxProcess) -> None:
    async with (
        phone(pbx, "bob", "uas_ring_noanswer.xml") as ringer,
        phone(pbx, "bob", _scenario("uas_answer_slow.xml")) as answerer,
    ):
        res = await dial(pbx, "uac_call_auth.xml", "102", duration_ms=500)
        won = await answerer.wait(10)
        rang = await ringer.wait(10)
    assert res.ok, _why(res, won, rang, pbx=pbx)
    assert won.ok, _why(won, pbx=pbx)
    assert rang.ok, _why(rang, pbx=pbx)

    # Both phones rang: the PBX forked the INVITE to both of bob's contacts.
    msgs = trace(rang.messages)
    _one(msgs, sent=False, method="INVITE")
    _one(trace(won.messages), sent=False, method="INVITE")
    # The phone that lost was cancelled with the reason that keeps it from showing a missed
    # call (RFC 3326), then completed its INVITE with 487 and got the ACK.
    cancel = _one(msgs, sent=False, method="CANCEL")
    assert cancel.header("Reason") == COMPLETED_ELSEWHERE, cancel.headers
    e487 = _one(msgs, sent=True, status=487)
    ack = _one(msgs, sent=False, method="ACK")
    assert cancel.at <= e487.at <= ack.at
    # The caller got exactly one answer: the winner's.
    assert _finals(trace(res.messages)).count(200) == 1

    rec = _record(pbx, res)
    assert rec["answered_by"] == "bob" and rec["callee_user"] == "bob"
    assert rec["disposition"] == "answered" and rec["hangup_by"] == "caller"


# -- 2. ring timeout -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_unanswered_call_times_out_with_480(short_ring_pbx: PbxProcess) -> None:
    pbx = short_ring_pbx
    async with phone(pbx, "bob", "uas_ring_noanswer.xml") as ringer:
        res = await dial(pbx, _scenario("uac_call_refused.xml"), "102",
                         keys={"max_forwards": "70"})
        rang = await ringer.wait(10)
    assert res.ok, _why(res, rang, pbx=pbx)
    msgs = trace(res.messages)
    assert _finals(msgs)[-1] == 480
    # Measured on SIPp's own clock: from the authenticated INVITE to the 480.
    invite = _one(msgs, sent=True, method="INVITE", nth=1)
    final = _one(msgs, sent=False, status=480)
    waited = (final.at - invite.at).total_seconds()
    assert 1.8 <= waited <= 3.5, waited
    _one(msgs, sent=False, status=180)  # it rang meanwhile

    # Bob's phone stopped ringing: a CANCEL (not "completed elsewhere": nobody answered).
    assert rang.ok, _why(rang, pbx=pbx)
    cancel = _one(trace(rang.messages), sent=False, method="CANCEL")
    assert cancel.header("Reason") != COMPLETED_ELSEWHERE

    rec = _record(pbx, res)
    assert rec["disposition"] == "no_answer" and rec["sip_code"] == 480
    assert rec["answered_by"] is None and rec["duration"] == 0


# -- 3. callee not registered / unknown number ---------------------------------------------------


@pytest.mark.asyncio
async def test_unregistered_callee_gets_480(pbx: PbxProcess) -> None:
    assert not rows(pbx.database, "SELECT * FROM registrations WHERE aor = 'carol'")
    res = await dial(pbx, _scenario("uac_call_refused.xml"), "103", keys={"max_forwards": "70"})
    assert res.ok, _why(res, pbx=pbx)
    assert _finals(trace(res.messages))[-1] == 480
    rec = _record(pbx, res)
    assert rec["to_number"] == "103" and rec["callee_user"] == "carol"
    assert rec["disposition"] == "unavailable" and rec["sip_code"] == 480


@pytest.mark.asyncio
async def test_unknown_number_gets_404(pbx: PbxProcess) -> None:
    res = await dial(pbx, _scenario("uac_call_refused.xml"), "999", keys={"max_forwards": "70"})
    assert res.ok, _why(res, pbx=pbx)
    assert _finals(trace(res.messages))[-1] == 404
    rec = _record(pbx, res)
    assert rec["to_number"] == "999" and rec["callee_user"] is None
    assert rec["caller_user"] == "alice"
    assert rec["disposition"] == "failed" and rec["sip_code"] == 404


# -- 4. the callee hangs up ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_callee_hangs_up_and_caller_gets_bye(pbx: PbxProcess) -> None:
    async with phone(pbx, "bob", _scenario("uas_answer_bye.xml"), duration_ms=800) as bob:
        res = await dial(pbx, _scenario("uac_call_remote_bye.xml"), "102")
        got = await bob.wait(10)
    assert res.ok, _why(res, got, pbx=pbx)
    assert got.ok, _why(got, pbx=pbx)
    msgs = trace(res.messages)
    ok = _one(msgs, sent=False, status=200, cseq="INVITE")
    bye = _one(msgs, sent=False, method="BYE")
    # The BYE belongs to the caller's dialog (RFC 3261 12.2.1.1): its Call-ID, and the tags
    # swapped (From carries the tag the 200 gave, To the caller's own tag).
    assert bye.header("Call-ID") == ok.header("Call-ID")
    to_tag = (ok.header("To") or "").rsplit("tag=", 1)[1]
    assert f"tag={to_tag}" in (bye.header("From") or "")
    assert "rbye" in (bye.header("To") or "")
    rec = _record(pbx, res)
    assert rec["disposition"] == "answered" and rec["hangup_by"] == "callee"
    assert rec["answered_by"] == "bob"
    assert 0.5 <= rec["duration"] <= 5.0


# -- 5. hold and resume --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_hold_and_resume_reinvites_pass_through(pbx: PbxProcess) -> None:
    async with phone(pbx, "bob", _scenario("uas_hold_resume.xml")) as bob:
        alice = caller_run(pbx, _scenario("uac_hold_resume.xml"), "102")
        res = await run_sipp(alice)
        got = await bob.wait(10)
    assert res.ok, _why(res, got, pbx=pbx)
    assert got.ok, _why(got, pbx=pbx)
    caller_rtp = alice.media_port
    callee_rtp = bob.run.media_port

    b_msgs = trace(got.messages)
    first = _one(b_msgs, sent=False, method="INVITE")
    hold = _one(b_msgs, sent=False, method="INVITE", nth=1)
    resume = _one(b_msgs, sent=False, method="INVITE", nth=2)
    assert (hold.sdp_direction, resume.sdp_direction) == ("sendonly", "sendrecv")
    for offer in (first, hold, resume):
        # Media stays anchored at the PBX: its address, its B-side relay port, never the
        # caller's own RTP port.
        assert offer.sdp_line("c=") == f"c=IN IP4 {LOOPBACK}"
        assert offer.sdp_port == first.sdp_port
        assert offer.sdp_port != caller_rtp
    # The re-INVITEs are in bob's dialog (same Call-ID, To tag set).
    assert hold.header("Call-ID") == first.header("Call-ID") and "tag=" in (hold.header("To") or "")

    a_msgs = trace(res.messages)
    answer = _one(a_msgs, sent=False, status=200, cseq="INVITE")
    held = _one(a_msgs, sent=False, status=200, cseq="INVITE", nth=1)
    resumed = _one(a_msgs, sent=False, status=200, cseq="INVITE", nth=2)
    assert (held.sdp_direction, resumed.sdp_direction) == ("recvonly", "sendrecv")
    for ans in (answer, held, resumed):
        assert ans.sdp_line("c=") == f"c=IN IP4 {LOOPBACK}"
        assert ans.sdp_port == answer.sdp_port != callee_rtp
    rec = _record(pbx, res)
    assert rec["disposition"] == "answered" and rec["hangup_by"] == "caller"


@pytest.mark.asyncio
async def test_answer_without_audio_does_not_kill_the_callers_audio(pbx: PbxProcess) -> None:
    # The callee answers the hold re-INVITE with an SDP that has no m=audio line. Passed on,
    # it would make the caller's phone stop its audio; the PBX keeps the callee's last SDP.
    async with phone(pbx, "bob", _scenario("uas_reinvite_no_audio.xml")) as bob:
        alice = caller_run(pbx, _scenario("uac_hold_resume.xml"), "102")
        res = await run_sipp(alice)
        got = await bob.wait(10)
    assert got.ok, _why(got, pbx=pbx)
    a_msgs = trace(res.messages)
    answer = _one(a_msgs, sent=False, status=200, cseq="INVITE")
    held = _one(a_msgs, sent=False, status=200, cseq="INVITE", nth=1)
    assert held.sdp_port is not None and held.sdp_port == answer.sdp_port
    assert "pbx" in pbx.log_text() and "SDP without audio" in pbx.log_text()


@pytest.mark.asyncio
async def test_delayed_offer_call_passes_offer_and_answer_through(pbx: PbxProcess) -> None:
    # RFC 3261 13.2.1: the caller's INVITE has no SDP; the callee's 200 makes the offer and
    # the caller's ACK carries the answer. Both are anchored at the PBX on their way.
    async with phone(pbx, "bob", PEER_SCENARIOS / "uas_answer.xml") as bob:
        res = await dial(pbx, _scenario("uac_delayed_offer.xml"), "102", duration_ms=500)
        got = await bob.wait(10)
    assert res.ok, _why(res, got, pbx=pbx)
    assert got.ok, _why(got, pbx=pbx)
    b_msgs = trace(got.messages)
    invite = _one(b_msgs, sent=False, method="INVITE")
    assert not invite.body, "the delayed offer must stay a delayed offer"
    ack = _one(b_msgs, sent=False, method="ACK")
    assert ack.sdp_line("c=") == f"c=IN IP4 {LOOPBACK}" and ack.sdp_port is not None
    callee_offer = _one(b_msgs, sent=True, status=200, cseq="INVITE")
    assert ack.sdp_port != callee_offer.sdp_port  # the PBX's relay port, not bob's own
    offer = _one(trace(res.messages), sent=False, status=200, cseq="INVITE")
    assert offer.sdp_line("c=") == f"c=IN IP4 {LOOPBACK}"
    assert offer.sdp_port not in (None, callee_offer.sdp_port)
    rec = _record(pbx, res)
    assert rec["disposition"] == "answered" and rec["answered_by"] == "bob"


@pytest.mark.asyncio
async def test_pcmu_caller_and_pcma_callee_are_transcoded(pbx: PbxProcess) -> None:
    # The caller offers only PCMU, the callee speaks only PCMA: the callee is offered both,
    # answers PCMA, and the caller still gets an answer in PCMU (the relay converts).
    async with phone(pbx, "bob", _scenario("uas_answer_pcma.xml")) as bob:
        res = await dial(pbx, PEER_SCENARIOS / "uac_call_auth.xml", "102", duration_ms=300)
        got = await bob.wait(10)
    assert res.ok, _why(res, got, pbx=pbx)
    offer = _one(trace(got.messages), sent=False, method="INVITE")
    offered = offer.sdp_line("m=audio ").split()[3:]
    assert offered[:2] == ["0", "101"] and "8" in offered
    answer = _one(trace(res.messages), sent=False, status=200, cseq="INVITE")
    assert answer.sdp_line("m=audio ").split()[3:] == ["0", "101"]
    assert "a=rtpmap:0 PCMU/8000" in answer.body.decode()
    assert "transcoding caller 0 <-> callee 8" in pbx.log_text()


# -- 6. SIP INFO DTMF ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_info_dtmf_reaches_the_callee(pbx: PbxProcess) -> None:
    async with phone(pbx, "bob", _scenario("uas_info_dtmf.xml")) as bob:
        res = await dial(pbx, _scenario("uac_info_dtmf.xml"), "102")
        got = await bob.wait(10)
    assert res.ok, _why(res, got, pbx=pbx)
    assert got.ok, _why(got, pbx=pbx)
    sent = _one(trace(res.messages), sent=True, method="INFO")
    arrived = _one(trace(got.messages), sent=False, method="INFO")
    assert sent.body.startswith(b"Signal=5\r\nDuration=160")
    assert arrived.body == sent.body
    assert arrived.header("Content-Type") == "application/dtmf-relay"
    # The caller's 200 is the callee's answer relayed, not one the PBX made up: it arrives
    # after the callee sent its own (the callee waits 300 ms before answering).
    answered = _one(trace(got.messages), sent=True, status=200, cseq="INFO")
    relayed = _one(trace(res.messages), sent=False, status=200, cseq="INFO")
    assert relayed.at >= answered.at
    assert (relayed.at - sent.at).total_seconds() >= 0.25


# -- 7. TCP --------------------------------------------------------------------------------------


def _tcp_peers(port: int) -> set[tuple[int, int]]:
    """(local port, remote port) of every established loopback TCP socket using ``port``."""
    found: set[tuple[int, int]] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cells = line.split()
        if len(cells) < 4 or cells[3] != "01":  # 01 = TCP_ESTABLISHED
            continue
        local, remote = (int(c.split(":")[1], 16) for c in cells[1:3])
        if port in (local, remote):
            found.add((local, remote))
    return found


def _dead_port() -> int:
    """A TCP port nobody listens on (bound and closed again)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.asyncio
async def test_tcp_call_reaches_callee_over_its_registration_connection(
    pbx: PbxProcess,
) -> None:
    # One SIPp process registers bob over TCP and keeps that one connection open; the INVITE
    # for bob (a new Call-ID) is served there by the out-of-call scenario. Bob's Contact names
    # a port where nothing listens, and the sockets are counted during the call: it can only
    # have reached him over the connection he registered on (RFC 3261 18.2.2, RFC 5626 flows).
    contact_port = _dead_port()
    bob = await start_sipp(SippRun(
        _scenario("register_stay.xml"), pbx.address, transport="tcp", users=[_cred("bob")],
        keys={"domain": pbx.address, "contact_port": str(contact_port)}, duration_ms=5000,
        timeout=20, auto_answer=False,
        extra_args=["-oocsf", str(PEER_SCENARIOS / "uas_answer.xml")],
    ))  # fmt: skip
    async with bob:
        deadline = time.monotonic() + 5
        reg: list[dict[str, Any]] = []
        while not reg and time.monotonic() < deadline:
            reg = rows(pbx.database, "SELECT * FROM registrations WHERE aor = 'bob' AND uri LIKE ?",
                       f"%:{contact_port};%")
            if not reg:
                await asyncio.sleep(0.1)
        assert reg, _why(await bob.stop(), pbx=pbx)
        assert reg[0]["source"].startswith("tcp:127.0.0.1:")
        assert f":{contact_port}#" not in reg[0]["source"]

        res = await dial(pbx, "uac_call_auth.xml", "102", transport="tcp", duration_ms=500)
        # SIPp binds its TCP client socket to its -p port and listens there too, so a fresh
        # connection from the PBX would also have reached it: only the socket count tells.
        # Still registered (register_stay pauses 5 s), bob has exactly one connection.
        sockets = _tcp_peers(bob.local_port)
        got = await bob.wait(15)
    assert sockets == {(bob.local_port, pbx.port), (pbx.port, bob.local_port)}, sockets
    assert res.ok, _why(res, got, pbx=pbx)
    assert got.ok, _why(got, pbx=pbx)
    msgs = trace(got.messages)
    invite = _one(msgs, sent=False, method="INVITE")
    assert (invite.header("Via") or "").startswith("SIP/2.0/TCP ")
    assert "transport=tcp" in (invite.header("Contact") or "")
    _one(msgs, sent=False, method="BYE")
    # The caller's side was TCP too, and the PBX answered it over its connection.
    a_ok = _one(trace(res.messages), sent=False, status=200, cseq="INVITE")
    assert "transport=tcp" in (a_ok.header("Contact") or "")
    rec = _record(pbx, res)
    assert rec["disposition"] == "answered" and rec["answered_by"] == "bob"
    # Bob unregistered on the same connection at the end of register_stay.xml (the PBX writes
    # registration changes in batches, about once a second).
    deadline = time.monotonic() + 5
    while rows(pbx.database, "SELECT * FROM registrations WHERE aor = 'bob'"):
        assert time.monotonic() < deadline, "bob's registration is still stored"
        await asyncio.sleep(0.1)


# -- 9. Max-Forwards -----------------------------------------------------------------------------


def test_options_with_max_forwards_zero_is_answered(pbx: PbxProcess) -> None:
    # RFC 3261 11 / RFC 4475 3.1.2.5 ("zeromf"): the PBX is the endpoint of an OPTIONS addressed
    # to it, so Max-Forwards 0 does not stop it from answering.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        s.settimeout(3)
        port = s.getsockname()[1]
        branch = "z9hG4bK" + uuid.uuid4().hex
        req = (
            f"OPTIONS sip:{pbx.address} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOOPBACK}:{port};branch={branch}\r\n"
            "Max-Forwards: 0\r\n"
            f"From: <sip:probe@{LOOPBACK}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{pbx.address}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Accept: application/sdp\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        s.sendto(req.encode(), (LOOPBACK, pbx.port))
        data, _ = s.recvfrom(65535)
    head = data.decode().split("\r\n\r\n", 1)[0].split("\r\n")
    assert head[0] == "SIP/2.0 200 OK", head
    names = {h.split(":", 1)[0].lower() for h in head[1:]}
    assert {"allow", "via", "call-id", "cseq"} <= names
    assert any(h.lower().startswith("via:") and branch in h for h in head)
