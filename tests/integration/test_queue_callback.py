"""Queue callbacks to outside callers, end to end with SIPp peers.

A carrier (SIPp on 127.0.0.2, an IP-authenticated trunk) delivers a caller to a queue's DID;
the caller presses the queue's callback key, then 1 for "the number I call from" (RFC 4733
events in an RTP capture), hears the confirmation and hangs up while nobody can take the call.
The entry keeps its place in the waiting list. When an agent's phone (SIPp) registers, the PBX
rings the agent first, then dials the customer through the outbound trunk, where another SIPp
plays the provider: it answers (the agent is moved onto the relay by a re-INVITE) or is busy
for every attempt (the PBX retries after ``callback_retry`` and gives up after
``callback_attempts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.db import wait_rows
from tests.integration.pbx_process import API_KEY, PbxProcess, run_pbx
from tests.integration.pcapgen import write_pcap
from tests.integration.test_ring_groups import USERS, _register
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.integration.test_sipp_edge import Traced, _one, _scenario, _why, trace
from tests.peers.ports import free_port
from tests.peers.sipp import SippProcess, SippResult, SippRun, run_sipp, start_sipp

pytestmark = pytest.mark.integration

CARRIER = "127.0.0.2"
"""The carrier's address: its calls come from here, and outside calls go to it."""
PROVIDER_PORT = free_port()
CUSTOMER = "09012345678"
CUSTOMER_E164 = "+819012345678"
BOB_CALLER_ID = "+81312345610"
CAROL_CALLER_ID = "+81312345611"

ROUTING = f"""\
dialplan:
  region: JP
  outbound: [carrier]
trunks:
  - {{name: carrier, host: {CARRIER}, port: {PROVIDER_PORT}, number_format: national,
     from_domain: carrier.example}}
numbers:
  - number: "03-1234-5610"
    type: local
    route: {{queue: callback}}
  - number: "03-1234-5611"
    type: local
    route: {{queue: retry}}
queues:
  callback:
    members: [bob]
    callback_key: "9"
    ring_timeout: 10s
  retry:
    members: [carol]
    callback_key: "9"
    ring_timeout: 10s
    callback_attempts: 2
    callback_retry: 5s
"""


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with run_pbx(tmp_path_factory.mktemp("callback"), SIPP_AUTH, users=USERS,
                 extra_top=ROUTING,
                 user_extra={"bob": f'    caller_id: "{BOB_CALLER_ID}"\n',
                             "carol": f'    caller_id: "{CAROL_CALLER_ID}"\n'}) as p:
        yield p


# -- the caller's keys -------------------------------------------------------------------------
_EVENT_PT = 101
_SILENCE = b"\xff" * 160  # PCMU silence (G.711 mu-law of 0)


def keys_pcap(path: Path, keys: str, *, lead: float = 0.5, gap: float = 1.5,
              tail: float = 5.0) -> Path:
    """One RTP stream of PCMU silence with ``keys`` as RFC 4733 events: ``lead`` seconds
    before the first key, ``gap`` between keys, ``tail`` after the last. Each key is one event
    (RFC 4733 2.5.1.2: every packet of it carries the event's start timestamp, the duration
    grows, the end is sent three times, 2.5.1.4), 100 ms long."""
    packets: list[bytes] = []
    seq = ts = 0

    def packet(pt: int, stamp: int, payload: bytes, marker: bool = False) -> None:
        nonlocal seq
        packets.append(struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF,
                                   stamp, 0x43424B31) + payload)
        seq += 1

    def silence(seconds: float) -> None:
        nonlocal ts
        for _ in range(round(seconds / 0.02)):
            packet(0, ts, _SILENCE)
            ts += 160

    silence(lead)
    for index, key in enumerate(keys):
        code = "0123456789*#".index(key)
        for n in range(1, 6):
            packet(_EVENT_PT, ts, struct.pack("!BBH", code, 10, n * 160), marker=n == 1)
        for _ in range(3):
            packet(_EVENT_PT, ts, struct.pack("!BBH", code, 0x80 | 10, 5 * 160))
        ts += 8 * 160
        silence(gap if index < len(keys) - 1 else tail)
    return write_pcap(path, packets)


def carrier_call(pbx: PbxProcess, tmp_path: Path, did: str, keys: str = "91",
                 hold_ms: int = 7500) -> SippRun:
    """The carrier's caller: dials ``did`` from CUSTOMER, presses ``keys``, listens, hangs
    up ``hold_ms`` after the keys began."""
    pcap = keys_pcap(tmp_path / "keys.pcap", keys)
    scenario = tmp_path / "uac_callback_carrier.xml"
    scenario.write_text(Path(_scenario("uac_callback_carrier.xml")).read_text()
                        .replace("PCAP_PATH", str(pcap)).replace("HOLD_MS", str(hold_ms)))
    return SippRun(scenario, pbx.address, local_ip=CARRIER, service=did,
                   keys={"domain": pbx.address, "to": did, "from": CUSTOMER,
                         "name": "Tanaka Ichiro"},
                   timeout=30, auto_answer=False)


# -- the other peers ---------------------------------------------------------------------------
def provider(scenario: str, calls: int = 1, timeout: float = 60.0,
             duration_ms: int | None = None) -> SippRun:
    """The provider behind the outbound trunk (no digest asked)."""
    return SippRun(_scenario(scenario), None, local_ip=CARRIER, local_port=PROVIDER_PORT,
                   calls=calls, timeout=timeout, duration_ms=duration_ms, auto_answer=False)


@contextlib.asynccontextmanager
async def agent(pbx: PbxProcess, uid: str, scenario: str, *, calls: int = 1,
                duration_ms: int | None = None) -> AsyncIterator[SippProcess]:
    """A SIPp phone registered as ``uid`` serving ``calls`` calls with ``scenario``; its
    binding is removed afterwards."""
    port = free_port()
    await _register(pbx, uid, port, 300)
    proc = await start_sipp(SippRun(_scenario(scenario), None, local_port=port, calls=calls,
                                    timeout=45, duration_ms=duration_ms, auto_answer=False))
    try:
        yield proc
    finally:
        await proc.stop()
        await _register(pbx, uid, port, 0)


def _api(pbx: PbxProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=pbx.api, headers={"X-API-Key": API_KEY}, timeout=5.0)


async def waiting_callback(pbx: PbxProcess, queue: str, timeout: float = 5.0,
                           ) -> list[dict[str, Any]]:
    """The queue's waiting list once it holds a callback (the caller's line is gone)."""
    deadline = time.monotonic() + timeout
    listed: list[dict[str, Any]] = []
    async with _api(pbx) as api:
        while time.monotonic() < deadline:
            got = await api.get(f"/queues/{queue}/calls")
            assert got.status_code == 200, got.text
            listed = got.json()
            if any(w["callback"] for w in listed):
                return listed
            await asyncio.sleep(0.1)
    raise AssertionError(f"no callback waiting in {queue}: {listed}\n"
                         + pbx.log_text()[-3000:])


def _rtp_range(pbx: PbxProcess) -> range:
    found = re.search(r"rtp_ports: \[(\d+), (\d+)\]", pbx.config_path.read_text())
    assert found is not None
    return range(int(found[1]), int(found[2]) + 1)


def _received(msgs: list[Traced], method: str) -> list[Traced]:
    return [m for m in msgs if not m.sent and m.method == method]


def _secs(later: Traced, earlier: Traced) -> float:
    return (later.at - earlier.at).total_seconds()


async def _ask_for_callback(pbx: PbxProcess, tmp_path: Path, did: str) -> SippResult:
    res = await run_sipp(carrier_call(pbx, tmp_path, did))
    assert res.ok, _why(res, pbx=pbx)
    return res


# -- tests -------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_outside_callback_rings_the_agent_then_dials_the_customer_out(
        pbx: PbxProcess, tmp_path: Path) -> None:
    customer = await start_sipp(provider("uas_callback_provider.xml"))
    try:
        caller = await _ask_for_callback(pbx, tmp_path, "+81312345610")
        waiting = await waiting_callback(pbx, "callback")
        assert [(w["position"], w["callback"], w["callback_number"]) for w in waiting] == [
            (1, True, CUSTOMER_E164)]
        # Bob's phone comes online: the callback's turn. His phone rings first, then the PBX
        # dials the customer; bob talks for 1.5 s once connected and hangs up.
        async with agent(pbx, "bob", "uas_callback_agent.xml", duration_ms=1500) as bob:
            took = await bob.wait(40)
        reached = await customer.wait(10)
    finally:
        await customer.stop()
    assert took.ok and reached.ok, _why(took, reached, caller, pbx=pbx)

    at_bob, at_customer = trace(took.messages), trace(reached.messages)
    rung, moved = _received(at_bob, "INVITE")
    shown = rung.header("From") or ""
    assert "Callback" in shown and CUSTOMER_E164 in shown, shown
    answered = _one(at_bob, sent=True, status=200, cseq="INVITE")

    # Out through the trunk, in its national format, with bob's caller ID, and only once bob
    # had answered.
    [dialled] = _received(at_customer, "INVITE")
    assert dialled.start.startswith(f"INVITE sip:{CUSTOMER}@{CARRIER}:{PROVIDER_PORT}"), \
        dialled.start
    assert f"<sip:{BOB_CALLER_ID}@carrier.example>" in (dialled.header("From") or "")
    assert dialled.header("P-Asserted-Identity") == f"<sip:{BOB_CALLER_ID}@carrier.example>"
    assert _secs(dialled, answered) > 0

    # The customer's answer moves bob's phone from the PBX's own media onto the relay.
    picked_up = _one(at_customer, sent=True, status=200, cseq="INVITE")
    assert _secs(moved, picked_up) >= 0
    ports = _rtp_range(pbx)
    assert moved.sdp_line("c=") == "c=IN IP4 127.0.0.1"
    assert moved.sdp_port in ports and rung.sdp_port in ports
    assert moved.sdp_port != rung.sdp_port
    assert moved.sdp_port != dialled.sdp_port  # the relay's other side faces the customer
    _one(at_customer, sent=False, method="BYE")  # bob hung up: the customer's leg ends too

    call_id = _one(trace(caller.messages), sent=True, method="INVITE").header("Call-ID")
    rec = wait_rows(pbx.database,
                    "SELECT * FROM calls WHERE sip_call_id = ? AND queue_result = 'answered' "
                    "AND duration > 0", call_id, timeout=10, where=pbx.log_text()[-3000:])[0]
    assert rec["queue"] == "callback" and rec["callback_number"] == CUSTOMER_E164
    assert rec["callback_attempts"] == 1 and rec["answered_by"] == "bob"
    assert rec["from_number"] == CUSTOMER_E164 and rec["direction"] == "inbound"


@pytest.mark.asyncio
async def test_busy_customer_is_tried_callback_attempts_times_then_given_up(
        pbx: PbxProcess, tmp_path: Path) -> None:
    # Room for a third INVITE: the provider must still see only two.
    customer = await start_sipp(provider("uas_callback_provider_busy.xml", calls=3))
    try:
        caller = await _ask_for_callback(pbx, tmp_path, "+81312345611")
        waiting = await waiting_callback(pbx, "retry")
        assert [(w["position"], w["callback"], w["callback_number"]) for w in waiting] == [
            (1, True, CUSTOMER_E164)]
        async with agent(pbx, "carol", "uas_callback_agent_hungup.xml", calls=2) as carol:
            took = await carol.wait(40)
        call_id = _one(trace(caller.messages), sent=True, method="INVITE").header("Call-ID")
        rec = wait_rows(pbx.database,
                        "SELECT * FROM calls WHERE sip_call_id = ? AND "
                        "queue_result = 'callback_failed'", call_id, timeout=10,
                        where=pbx.log_text()[-3000:])[0]
        # A third attempt would come callback_retry (5 s) after the second.
        await asyncio.sleep(6.5)
    finally:
        refused = await customer.stop()
    assert took.ok, _why(took, refused, pbx=pbx)

    at_carol, at_customer = trace(took.messages), trace(refused.messages)
    rung = _received(at_carol, "INVITE")
    hung_up = _received(at_carol, "BYE")
    assert len(rung) == 2 and len(hung_up) == 2, _why(took, pbx=pbx)
    for invite in rung:
        assert "Callback" in (invite.header("From") or "")
    # Each time carol hears the notices (connecting, then unavailable) before the PBX hangs
    # up, and the retry comes callback_retry after the first attempt ended.
    for n in range(2):
        ack = _one(at_carol, sent=False, method="ACK", nth=n)
        assert _secs(hung_up[n], ack) >= 1.5
    assert 4.5 <= _secs(rung[1], hung_up[0]) <= 9.0

    dialled = _received(at_customer, "INVITE")
    assert len(dialled) == 2, _why(refused, pbx=pbx)
    assert len({m.header("Call-ID") for m in dialled}) == 2
    for invite in dialled:
        assert invite.start.startswith(f"INVITE sip:{CUSTOMER}@{CARRIER}:{PROVIDER_PORT}")
        assert f"<sip:{CAROL_CALLER_ID}@carrier.example>" in (invite.header("From") or "")
    # Never two at once: the second attempt starts after the first was refused and ACKed,
    # and each comes only once carol answered.
    first_ack = _one(at_customer, sent=False, method="ACK")
    assert _secs(dialled[1], first_ack) >= 4.5
    for n in range(2):
        assert _secs(dialled[n], _one(at_carol, sent=True, status=200, cseq="INVITE",
                                      nth=n)) > 0

    assert rec["queue"] == "retry" and rec["callback_number"] == CUSTOMER_E164
    assert rec["callback_attempts"] == 2


@pytest.mark.asyncio
async def test_customer_hanging_up_ends_the_agents_call_and_is_recorded_as_the_caller(
        pbx: PbxProcess, tmp_path: Path) -> None:
    # The customer hangs up 2 s after answering; the PBX hangs up bob's phone.
    customer = await start_sipp(provider("uas_callback_provider_bye.xml", duration_ms=2000))
    try:
        caller = await _ask_for_callback(pbx, tmp_path, "+81312345610")
        await waiting_callback(pbx, "callback")
        async with agent(pbx, "bob", "uas_callback_agent_moved.xml") as bob:
            took = await bob.wait(40)
        reached = await customer.wait(10)
    finally:
        await customer.stop()
    assert took.ok and reached.ok, _why(took, reached, caller, pbx=pbx)
    at_bob, at_customer = trace(took.messages), trace(reached.messages)
    assert len(_received(at_bob, "INVITE")) == 2  # rung, then moved onto the relay
    gone = _one(at_customer, sent=True, method="BYE")
    # Each SIPp stamps a message when it logs it: the customer logs its BYE after sending it,
    # and the PBX may have passed it on to bob within that moment (a fraction of a ms).
    assert -0.01 <= _secs(_one(at_bob, sent=False, method="BYE"), gone) <= 1.0

    call_id = _one(trace(caller.messages), sent=True, method="INVITE").header("Call-ID")
    rec = wait_rows(pbx.database,
                    "SELECT * FROM calls WHERE sip_call_id = ? AND queue_result = 'answered' "
                    "AND duration > 0", call_id, timeout=10, where=pbx.log_text()[-3000:])[0]
    assert rec["answered_by"] == "bob" and rec["callback_attempts"] == 1
    # The record's caller is the customer (from_number), who hung up.
    assert rec["from_number"] == CUSTOMER_E164
    assert (rec["hangup_by"], rec["hangup_cause"]) == ("caller", "caller hung up"), rec
