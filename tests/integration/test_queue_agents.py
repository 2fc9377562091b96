"""Queue agents on live calls: which agent's phone the queue rings, in which order and when.

Each test runs its own PBX with one queue (``desk``, reached on the DID 03-1234-5600) and
real phones over loopback: baresip phones as callers and agents (their ``incoming`` events,
stamped on arrival, give the order of the offers), SIPp phones where the SIP messages an
agent's phone sends or receives matter (a 603 Decline, the CANCEL of the agents who lost a
simultaneous offer).
Agents' states are read and changed through the HTTP API (``/api/v1/agents``) and from the
agents' own phones (feature codes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.db import wait_rows
from tests.integration.pbx_process import API_KEY, PbxProcess, run_pbx
from tests.integration.test_ring_groups import USERS, member
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.integration.test_sipp_edge import COMPLETED_ELSEWHERE, _one, _scenario, _why, trace
from tests.peers.phone_driver import Phone

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

DID = "0312345600"
TONES = {"bob": 2300.0, "carol": 2700.0, "dave": 3100.0}
"""What each agent's phone sends: high enough not to be mistaken for the hold music."""

_ROUTING = """\
dialplan:
  region: JP
numbers:
  - number: "03-1234-5600"
    type: local
    route: {queue: desk}
queues:
  desk:
"""


def _queue_yaml(**params: str) -> str:
    return _ROUTING + "".join(f"    {key}: {value}\n" for key, value in params.items())


@contextlib.contextmanager
def _desk(tmp_path: Path, **params: str) -> Iterator[PbxProcess]:
    """A PBX whose queue ``desk`` has ``params`` (YAML values as written)."""
    with run_pbx(tmp_path, SIPP_AUTH, users=USERS, extra_top=_queue_yaml(**params)) as pbx:
        yield pbx


# -- the HTTP API ---------------------------------------------------------------------------------


async def _api(pbx: PbxProcess, method: str, path: str,
               body: dict[str, Any] | None = None) -> Any:
    def call() -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            pbx.api + path, data=data, method=method,
            headers={"X-API-Key": API_KEY, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    return await asyncio.to_thread(call)


async def _agent(pbx: PbxProcess, uid: str) -> dict[str, Any]:
    found: dict[str, Any] = await _api(pbx, "GET", f"/agents/{uid}")
    return found


async def _agent_state(pbx: PbxProcess, uid: str, state: str, timeout: float = 5.0
                       ) -> dict[str, Any]:
    """The agent's view once it shows ``state`` (the PBX acts on its own tick)."""
    deadline = time.monotonic() + timeout
    while True:
        view = await _agent(pbx, uid)
        if view["state"] == state:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"agent {uid} is {view}, never {state!r}\n"
                                 f"{pbx.log_text()[-3000:]}")
        await asyncio.sleep(0.05)


# -- phones ---------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _phones(pbx: PbxProcess, *names: str) -> AsyncIterator[dict[str, Phone]]:
    """Baresip phones registered as ``names`` (unregistered and stopped on exit)."""
    async with contextlib.AsyncExitStack() as stack:
        started = await asyncio.gather(*(
            stack.enter_async_context(Phone.start(name=n, max_lifetime=120)) for n in names))
        phones = dict(zip(names, started, strict=True))
        await asyncio.gather(*(
            p.register(pbx.address, USERS[n][0], USERS[n][1], domain="pbx.test")
            for n, p in phones.items()))
        await asyncio.gather(*(p.tone(TONES[n]) for n, p in phones.items() if n in TONES))
        yield phones


def _offers(agents: dict[str, Phone]) -> list[tuple[float, str]]:
    """Every offer the agents' phones received so far: (arrival, agent), first first."""
    return sorted((e["at"], name) for name, p in agents.items() for e in p.seen("incoming"))


async def _next_offer(agents: dict[str, Phone], seen: int, timeout: float = 8.0
                      ) -> tuple[float, str]:
    """The offer after the first ``seen`` ones."""
    deadline = time.monotonic() + timeout
    while len(offers := _offers(agents)) <= seen:
        if time.monotonic() > deadline:
            raise AssertionError(f"no offer number {seen + 1} within {timeout:g} s; "
                                 f"offers so far: {offers}")
        await asyncio.sleep(0.02)
    return offers[seen]


async def _event(phone: Phone, name: str, since: float, timeout: float = 10.0) -> dict[str, Any]:
    """``phone``'s first ``name`` event that arrived at or after ``since``."""
    return await phone.wait_for(name, timeout=timeout, predicate=lambda e: e["at"] >= since)


async def _call_in(pbx: PbxProcess, caller: Phone) -> float:
    """The caller dials the queue and is answered by it (music); returns when."""
    start = time.monotonic()
    await caller.dial(f"sip:{DID}@{pbx.address}")
    await _event(caller, "established", start)
    return start


async def _connect(agent: Phone, caller: Phone) -> None:
    """The ringing agent answers; returns once the caller hears the agent's own tone (moved
    off the music to this very agent)."""
    start = time.monotonic()
    await agent.answer()
    await _event(agent, "established", start)
    tone = TONES[agent.name]
    heard = await caller.received_frequency(expect=tone, timeout=8)
    assert abs(heard - tone) <= 20


async def _hang_up(agent: Phone, caller: Phone) -> float:
    """The agent ends the call; returns when the agent's phone closed (the caller's too)."""
    start = time.monotonic()
    await agent.hangup()
    closed = await _event(agent, "closed", start)
    await _event(caller, "closed", start)
    at: float = closed["at"]
    return at


async def _served_by(pbx: PbxProcess, caller: Phone, agents: dict[str, Phone]) -> str:
    """One caller through the queue: the agent rung answers and hangs up. Returns who it was,
    after checking that nobody else was rung for this caller."""
    seen = len(_offers(agents))
    await _call_in(pbx, caller)
    _, name = await _next_offer(agents, seen)
    await _connect(agents[name], caller)
    await _hang_up(agents[name], caller)
    assert len(_offers(agents)) == seen + 1, f"one offer per caller: {_offers(agents)[seen:]}"
    return name


async def _feature(pbx: PbxProcess, phone: Phone, code: str) -> None:
    """The phone dials a feature code; the PBX answers, confirms and hangs up."""
    start = time.monotonic()
    await phone.dial(f"sip:{code}@{pbx.address}")
    await _event(phone, "established", start)
    await _event(phone, "closed", start, timeout=15)


# -- strategies -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_round_robin_follows_the_order_and_passes_over_unavailable_agents(
        tmp_path: Path) -> None:
    with _desk(tmp_path, members="[bob, carol, dave]", strategy="round_robin",
               ring_timeout="4s", retry="1s") as pbx:
        async with _phones(pbx, "alice", "bob", "carol", "dave") as phones:
            caller = phones.pop("alice")
            agents = phones
            served = [await _served_by(pbx, caller, agents) for _ in range(3)]
            assert served == ["bob", "carol", "dave"]
            # Carol pauses (API), dave sets do-not-disturb on his phone: both are passed over.
            view = await _api(pbx, "POST", "/agents/carol/pause", {"reason": "coffee"})
            assert view["state"] == "paused" and view["paused_reason"] == "coffee"
            await _feature(pbx, agents["dave"], "*22")
            served = [await _served_by(pbx, caller, agents) for _ in range(2)]
            assert served == ["bob", "bob"]
            # Both back: they get their turns in the configured order again.
            view = await _api(pbx, "POST", "/agents/carol/unpause")
            assert view["state"] == "available" and view["paused_reason"] is None
            await _feature(pbx, agents["dave"], "*21")
            served = [await _served_by(pbx, caller, agents) for _ in range(3)]
            assert served == ["carol", "dave", "bob"]
        answered = [r["answered_by"] for r in wait_rows(
            pbx.database, "SELECT answered_by FROM calls WHERE queue = 'desk' "
            "AND ended_at IS NOT NULL ORDER BY started_at", count=8)]
        assert answered == ["bob", "carol", "dave", "bob", "bob", "carol", "dave", "bob"]


@pytest.mark.asyncio
async def test_longest_idle_offers_the_agent_whose_last_call_ended_first(tmp_path: Path) -> None:
    with _desk(tmp_path, members="[bob, carol, dave]", strategy="longest_idle",
               ring_timeout="4s", retry="1s") as pbx:
        async with _phones(pbx, "alice", "erin", "bob", "carol", "dave") as phones:
            alice, erin = phones.pop("alice"), phones.pop("erin")
            agents = phones
            # Nobody has had a call: the tie goes to the first listed, then the next one.
            await _call_in(pbx, alice)
            assert (await _next_offer(agents, 0))[1] == "bob"
            await _connect(agents["bob"], alice)
            await _call_in(pbx, erin)
            assert (await _next_offer(agents, 1))[1] == "carol"
            await _connect(agents["carol"], erin)
            # Carol finishes first, bob a moment later.
            await _hang_up(agents["carol"], erin)
            await asyncio.sleep(0.5)
            await _hang_up(agents["bob"], alice)
            # Dave, idle since the start, goes first; then carol, idle longer than bob (a
            # round robin or the configured order would have chosen bob).
            await _call_in(pbx, alice)
            assert (await _next_offer(agents, 2))[1] == "dave"
            await _connect(agents["dave"], alice)
            await _call_in(pbx, erin)
            assert (await _next_offer(agents, 3))[1] == "carol"
            await _connect(agents["carol"], erin)
            assert [name for _, name in _offers(agents)] == ["bob", "carol", "dave", "carol"]
            await _hang_up(agents["carol"], erin)
            await _hang_up(agents["dave"], alice)


@pytest.mark.asyncio
async def test_fewest_calls_offers_the_agent_with_fewest_answered_calls(tmp_path: Path) -> None:
    with _desk(tmp_path, members="[bob, carol, dave]", strategy="fewest_calls",
               ring_timeout="4s", retry="1s") as pbx:
        async with _phones(pbx, "alice", "bob", "carol", "dave") as phones:
            alice = phones.pop("alice")
            agents = phones
            # Bob alone takes two calls while carol and dave are paused.
            for uid in ("carol", "dave"):
                await _api(pbx, "POST", f"/agents/{uid}/pause", {"reason": "training"})
            assert [await _served_by(pbx, alice, agents) for _ in range(2)] == ["bob", "bob"]
            # Back from their pause, carol and dave have been idle for less time than bob,
            # but they answered fewer calls today: they go first (carol, back first, first).
            for uid in ("carol", "dave"):
                await _api(pbx, "POST", f"/agents/{uid}/unpause")
            assert [await _served_by(pbx, alice, agents) for _ in range(3)] == [
                "carol", "dave", "carol"]
            counts = {uid: (await _agent(pbx, uid))["calls_today"] for uid in agents}
            assert counts == {"bob": 2, "carol": 2, "dave": 1}


@pytest.mark.asyncio
async def test_simultaneous_rings_every_agent_and_cancels_the_others_on_answer(
        tmp_path: Path) -> None:
    with _desk(tmp_path, members="[bob, carol, dave]", strategy="simultaneous",
               ring_timeout="8s", retry="1s") as pbx:
        async with (
            member(pbx, "bob", "uas_ring_noanswer.xml") as bob,
            member(pbx, "carol", "uas_ring_noanswer.xml") as carol,
            member(pbx, "dave", _scenario("uas_answer_slow.xml")) as dave,  # answers after 1 s
            _phones(pbx, "alice") as phones,
        ):
            alice = phones["alice"]
            await _call_in(pbx, alice)
            await _agent_state(pbx, "dave", "on_call")
            await asyncio.sleep(0.5)
            start = time.monotonic()
            await alice.hangup()
            await _event(alice, "closed", start)
            lost = [await bob.wait(10), await carol.wait(10)]
            won = await dave.wait(10)
        for result in (*lost, won):
            assert result.ok, _why(result, pbx=pbx)
        invites = [_one(trace(r.messages), sent=False, method="INVITE") for r in (*lost, won)]
        # One offer to all three phones at once, naming the queue.
        stamps = sorted(i.at for i in invites)
        assert (stamps[-1] - stamps[0]).total_seconds() <= 0.3, stamps
        assert all(i.header("X-Queue") == "desk" for i in invites)
        # The first to answer took the caller; the others were cancelled as answered
        # elsewhere, as soon as dave answered (two SIPp processes stamp their own traces, so a
        # CANCEL may show a few microseconds before the 200 that caused it).
        answer = _one(trace(won.messages), sent=True, status=200, cseq="INVITE")
        for result in lost:
            cancel = _one(trace(result.messages), sent=False, method="CANCEL")
            assert cancel.header("Reason") == COMPLETED_ELSEWHERE, cancel.headers
            assert -0.05 <= (cancel.at - answer.at).total_seconds() <= 0.5
        assert not [m for m in trace(won.messages) if m.method == "CANCEL"]
        rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE queue = 'desk' AND "
                        "ended_at IS NOT NULL", count=1)[0]
        assert rec["answered_by"] == "dave" and rec["queue_result"] == "answered"


# -- agents who do not take the call ----------------------------------------------------------


@pytest.mark.asyncio
async def test_agents_who_refuse_are_passed_over_until_the_retry(tmp_path: Path) -> None:
    with _desk(tmp_path, members="[bob, carol]", strategy="longest_idle",
               ring_timeout="4s", retry="2s", max_missed="5") as pbx:
        async with (
            _phones(pbx, "alice", "bob") as phones,
            member(pbx, "carol", _scenario("uas_agent_decline.xml")) as carol_phone,
        ):
            alice, bob = phones["alice"], phones["bob"]
            agents = {"bob": bob}
            wall = time.time() - time.monotonic()  # the SIPp trace stamps wall-clock time
            await _call_in(pbx, alice)
            await _next_offer(agents, 0)
            bob_refused = time.monotonic()
            await bob.reject()  # 486 Busy Here
            # Carol, next, is offered the caller at once; her phone declines (603).
            carol = await carol_phone.wait(10)
            assert carol.ok, _why(carol, pbx=pbx)
            msgs = trace(carol.messages)
            carol_rang = _one(msgs, sent=False, method="INVITE").at
            carol_refused = _one(msgs, sent=True, status=603).at
            assert 0 <= carol_rang.timestamp() - (bob_refused + wall) <= 1.0
            # Everyone has refused this caller: nobody is rung again at once; a new round
            # starts `retry` later, in the strategy's order (bob first again).
            at, _ = await _next_offer(agents, 1, timeout=6)
            waited = at + wall - carol_refused.timestamp()
            assert 2.0 - 0.2 <= waited <= 2.0 + 1.0, waited
            await _connect(bob, alice)
            await _hang_up(bob, alice)
            assert len(_offers(agents)) == 2
        # A refusal counts against the agent, not as a call.
        bob_view = await _agent(pbx, "bob")
        assert bob_view["state"] == "available" and bob_view["calls_today"] == 1
        assert (await _agent(pbx, "carol"))["calls_today"] == 0


@pytest.mark.asyncio
async def test_an_offer_that_rings_out_goes_to_the_next_agent_alone(tmp_path: Path) -> None:
    with _desk(tmp_path, members="[bob, carol, dave]", strategy="round_robin",
               ring_timeout="2s", retry="1s", max_missed="5") as pbx:
        async with _phones(pbx, "alice", "bob", "carol", "dave") as phones:
            alice = phones.pop("alice")
            agents = phones
            await _call_in(pbx, alice)
            first, name = await _next_offer(agents, 0)
            assert name == "bob"
            # Bob lets it ring out; carol, next in order, rings alone.
            at, name = await _next_offer(agents, 1, timeout=6)
            assert name == "carol" and 2.0 - 0.2 <= at - first <= 2.0 + 1.0, at - first
            await _event(agents["bob"], "closed", first)
            await asyncio.sleep(1.0)
            assert [n for _, n in _offers(agents)] == ["bob", "carol"], _offers(agents)
            assert (await _agent(pbx, "carol"))["state"] == "ringing"
            await _connect(agents["carol"], alice)
            await _hang_up(agents["carol"], alice)
            assert [n for _, n in _offers(agents)] == ["bob", "carol"], _offers(agents)


@pytest.mark.asyncio
async def test_a_new_round_waits_retry_after_the_last_agent_missed(tmp_path: Path) -> None:
    with _desk(tmp_path, members="[bob, carol]", strategy="longest_idle",
               ring_timeout="3s", retry="2s", max_missed="5") as pbx:
        async with _phones(pbx, "alice", "bob", "carol") as phones:
            alice = phones.pop("alice")
            agents = phones
            await _call_in(pbx, alice)
            await _next_offer(agents, 0)
            await agents["bob"].reject()
            carol_rang, name = await _next_offer(agents, 1, timeout=3)
            assert name == "carol"
            # Carol lets it ring out (3 s): a new round starts 2 s after her miss, with bob.
            at, name = await _next_offer(agents, 2, timeout=10)
            assert name == "bob"
            assert 3.0 + 2.0 - 0.2 <= at - carol_rang <= 3.0 + 2.0 + 1.0, at - carol_rang
            await asyncio.sleep(0.5)
            assert [n for _, n in _offers(agents)] == ["bob", "carol", "bob"], _offers(agents)
            await _connect(agents["bob"], alice)
            await _hang_up(agents["bob"], alice)


@pytest.mark.asyncio
async def test_an_agent_who_misses_max_missed_offers_is_paused_until_unpaused(
        tmp_path: Path) -> None:
    with _desk(tmp_path, members="[bob]", strategy="longest_idle", ring_timeout="2s",
               retry="1s", max_missed="2") as pbx:
        async with _phones(pbx, "alice", "bob") as phones:
            alice = phones.pop("alice")
            agents = phones
            bob = agents["bob"]
            called = await _call_in(pbx, alice)
            # Bob's phone rings out twice (ring_timeout each, retry between).
            first, _ = await _next_offer(agents, 0)
            second, _ = await _next_offer(agents, 1, timeout=8)
            assert 2.0 + 1.0 - 0.3 <= second - first <= 2.0 + 1.0 + 1.0, second - first
            view = await _agent_state(pbx, "bob", "paused", timeout=4)
            assert view["paused_reason"] == "missed 2 offers"
            paused = time.monotonic()
            await _event(bob, "closed", second)
            queue = await _api(pbx, "GET", "/queues/desk")
            assert queue["live"]["waiting"] == 1 and queue["live"]["agents"]["paused"] == 1
            # Paused, bob is offered nothing while the caller keeps waiting.
            await asyncio.sleep(3.0)
            assert len(_offers(agents)) == 2, _offers(agents)
            assert not [e for e in alice.seen("closed") if e["at"] >= called]
            assert (await _agent(pbx, "bob"))["state"] == "paused"
            # Unpaused, he is offered the caller at once.
            unpaused = time.monotonic()
            view = await _api(pbx, "POST", "/agents/bob/unpause")
            assert view["state"] in ("available", "ringing") and view["paused_reason"] is None
            at, _ = await _next_offer(agents, 2, timeout=3)
            assert at - unpaused <= 1.0 and at - paused >= 3.0
            await _connect(bob, alice)
            await _hang_up(bob, alice)


@pytest.mark.asyncio
async def test_wrap_up_holds_the_next_caller_back_for_its_seconds(tmp_path: Path) -> None:
    with _desk(tmp_path, members="[bob]", strategy="longest_idle", ring_timeout="4s",
               wrap_up="3s") as pbx:
        async with _phones(pbx, "alice", "erin", "bob") as phones:
            alice, erin = phones.pop("alice"), phones.pop("erin")
            agents = phones
            bob = agents["bob"]
            await _call_in(pbx, alice)
            await _next_offer(agents, 0)
            await _connect(bob, alice)
            # A second caller waits while bob talks.
            await _call_in(pbx, erin)
            await asyncio.sleep(0.5)
            assert len(_offers(agents)) == 1
            ended = await _hang_up(bob, alice)
            view = await _agent_state(pbx, "bob", "wrap_up", timeout=2)
            assert view["calls_today"] == 1
            at, _ = await _next_offer(agents, 1, timeout=8)
            assert 3.0 - 0.2 <= at - ended <= 3.0 + 0.8, at - ended
            await _connect(bob, erin)
            await _hang_up(bob, erin)


# -- feature codes --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_agent_feature_codes_pause_unpause_logout_and_login(tmp_path: Path) -> None:
    with _desk(tmp_path, members="[bob]", strategy="longest_idle", ring_timeout="4s") as pbx:
        async with _phones(pbx, "alice", "bob") as phones:
            alice, bob = phones["alice"], phones["bob"]
            agents = {"bob": bob}
            assert (await _agent(pbx, "bob"))["state"] == "available"
            await _feature(pbx, bob, "*33")
            view = await _agent(pbx, "bob")
            assert view["state"] == "paused" and view["paused_reason"] == "paused from phone"
            # Paused from his phone, bob is not offered a caller ...
            await _call_in(pbx, alice)
            await asyncio.sleep(1.5)
            assert _offers(agents) == []
            # ... until he unpauses from it; then the caller is offered to him at once.
            done = time.monotonic()
            await _feature(pbx, bob, "*34")
            at, _ = await _next_offer(agents, 0, timeout=3)
            assert at - done <= 3.0
            await _connect(bob, alice)
            await _hang_up(bob, alice)
            view = await _agent(pbx, "bob")
            assert view["state"] == "available" and view["paused_reason"] is None
            await _feature(pbx, bob, "*32")
            assert (await _agent(pbx, "bob"))["state"] == "offline"
            await _feature(pbx, bob, "*31")
            assert (await _agent(pbx, "bob"))["state"] == "available"
