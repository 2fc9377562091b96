"""The legs of a call record, from the running PBX with real phones: each user whose phones
rang (directly, in a ring group, as a queue's offer, as a transfer's target) and what became of
it.

The PBX runs as its own process, as in production, with one addition: the sink the call path
hands its call-record events to is tapped, and every event is also written, in the order the
call path emitted it, as a JSON line to a file the test reads. So the test sees the legs as the
record keeper gets them, and can check that each call's legs come before its end (the record
keeper closes the legs still open when the call ends, and the ``call.ended`` webhook carries
them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.db import rows, wait_rows
from tests.integration.pbx_process import ROOT, PbxProcess, config_text
from tests.integration.test_queue_callback import (
    CARRIER,
    CUSTOMER_E164,
    PROVIDER_PORT,
    agent,
    carrier_call,
    provider,
    waiting_callback,
)
from tests.integration.test_ring_groups import USERS
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.integration.test_sipp_edge import _why
from tests.peers.phone_driver import Phone
from tests.peers.ports import free_port
from tests.peers.sipp import run_sipp, start_sipp

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROUTING = f"""\
dialplan:
  region: JP
  outbound: [carrier]
trunks:
  - {{name: carrier, host: {CARRIER}, port: {PROVIDER_PORT}, number_format: national,
     from_domain: carrier.example}}
numbers:
  - number: "03-1234-5601"
    type: local
    route: {{ring_group: everyone}}
  - number: "03-1234-5602"
    type: local
    route: {{ring_group: in_turn}}
  - number: "03-1234-5603"
    type: local
    route: {{queue: desk}}
  - number: "03-1234-5604"
    type: local
    route: {{queue: later}}
ring_groups:
  everyone: {{members: [bob, carol, dave], strategy: simultaneous, ring_seconds: 15}}
  in_turn: {{members: [bob, carol, dave], strategy: sequential, ring_seconds: 2}}
queues:
  later:
    members: [erin]
    callback_key: "9"
    ring_timeout: 10s
  desk:
    members: [bob, carol, dave]
    strategy: longest_idle
    ring_timeout: 2s
    retry: 1s
    max_missed: 10
"""
CALLER_IDS = {"alice": '    caller_id: "+81312345601"\n',
              "erin": '    caller_id: "+81312345604"\n'}

#: Run in the PBX's process before ``pbx run``: every call-record event the call path emits
#: is appended to $PBX_RECORD_TAP (one JSON line each), then passed on unchanged.
_TAPPED = r"""
import dataclasses, json, os, sys
from pbx import sipapp

_path = os.environ["PBX_RECORD_TAP"]


class _Tap:
    def __init__(self, sink):
        self._sink = sink

    def emit(self, event):
        row = {"event": type(event).__name__}
        for key, value in dataclasses.asdict(event).items():
            row[key] = value.isoformat() if hasattr(value, "isoformat") else value
        with open(_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        self._sink.emit(event)

    def __getattr__(self, name):
        return getattr(self._sink, name)


_init = sipapp.SipApp.__init__


def _tapped_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.records = _Tap(self.records)


sipapp.SipApp.__init__ = _tapped_init
from pbx.cli import main

raise SystemExit(main(sys.argv[1:]))
"""


@contextlib.contextmanager
def run_tapped_pbx(workdir: Path, tap: Path, extra_top: str) -> Iterator[PbxProcess]:
    """The PBX as a subprocess (as :func:`tests.integration.pbx_process.run_pbx`), with its
    call-record events written to ``tap``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, http_port = free_port(), free_port()
    cfg = workdir / "pbx.yaml"
    cfg.write_text(config_text(port, workdir, SIPP_AUTH, users=USERS, extra_top=extra_top,
                               user_extra=CALLER_IDS, http_port=http_port))
    env = dict(os.environ, PYTHONUNBUFFERED="1", PBX_RECORD_TAP=str(tap))
    proc = subprocess.Popen(
        [sys.executable, "-c", _TAPPED, "run", "--config", str(cfg),
         "--pidfile", str(workdir / "pbx.pid")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    pbx = PbxProcess(port, workdir, cfg, proc, workdir / "pbx.db", http_port=http_port)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            pbx.log.append(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    try:
        pbx.wait_log("PBX ready", timeout=20)
        yield pbx
    finally:
        pbx.stop()


class Tap:
    """The events the PBX emitted, read back from its tap file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def mark(self) -> int:
        return len(self.all())

    async def wait(self, since: int, found: Callable[[list[dict[str, Any]]], bool],
                   timeout: float = 15.0) -> list[dict[str, Any]]:
        """The events after event ``since`` once ``found`` says they hold what is awaited."""
        deadline = time.monotonic() + timeout
        while not found(events := self.all()[since:]):
            if time.monotonic() > deadline:
                raise AssertionError(f"never came: {events}")
            await asyncio.sleep(0.05)
        return events

    async def ended_call(self, since: int, to_number: str, timeout: float = 15.0,
                         ) -> list[dict[str, Any]]:
        """The events of the call to ``to_number`` started after event ``since``, once it
        has ended (every event of that call, in order)."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.all()[since:]
            started = [e for e in events
                       if e["event"] == "CallStarted" and e["to_number"] == to_number]
            if started:
                call_id = started[-1]["call_id"]
                mine = [e for e in events if e.get("call_id") == call_id]
                if any(e["event"] == "CallEnded" for e in mine):
                    return mine
            if time.monotonic() > deadline:
                raise AssertionError(f"no ended call to {to_number} in {events}")
            await asyncio.sleep(0.05)


def legs(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The call's CallLeg events, checked to come before its (last) end, with ids of the
    call."""
    ended = max(i for i, e in enumerate(events) if e["event"] == "CallEnded")
    found = [(i, e) for i, e in enumerate(events) if e["event"] == "CallLeg"]
    assert all(i < ended for i, _ in found), events
    call_id = events[0]["call_id"]
    assert all(e["leg_id"].startswith(f"{call_id}:") for _, e in found)
    return [e for _, e in found]


def stored(pbx: PbxProcess, events: list[dict[str, Any]]) -> tuple[dict[str, Any],
                                                                    dict[str, dict[str, Any]]]:
    """The call's one record in the PBX's database, final, and its stored legs by id (every
    leg closed); also checks that no other record was made for it (one row per call, not one
    per ringing phone)."""
    call_id = events[0]["call_id"]
    sip_call_id = events[0]["sip_call_id"]
    row = wait_rows(pbx.database, "SELECT * FROM calls WHERE id = ? AND status = 'completed'",
                    call_id, timeout=10)[0]
    assert len(rows(pbx.database, "SELECT id FROM calls WHERE sip_call_id = ?",
                    sip_call_id)) == 1
    stored_legs = {leg["id"]: leg for leg in rows(
        pbx.database, "SELECT * FROM call_legs WHERE call_id = ?", call_id)}
    assert stored_legs and all(leg["ended_at"] is not None for leg in stored_legs.values())
    return row, stored_legs


def by_user(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One event per user (each must have exactly one)."""
    users = [e["user"] for e in found]
    assert len(users) == len(set(users)), found
    return {e["user"]: e for e in found}


@pytest.fixture(scope="module")
def pbx_tap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PbxProcess, Tap]]:
    workdir = tmp_path_factory.mktemp("legs")
    tap = workdir / "records.jsonl"
    with run_tapped_pbx(workdir, tap, ROUTING) as pbx:
        yield pbx, Tap(tap)


@contextlib.asynccontextmanager
async def phones(pbx: PbxProcess, *names: str) -> AsyncIterator[dict[str, Phone]]:
    """Baresip phones registered as ``names`` (``bob2``: a second phone of bob's)."""
    async with contextlib.AsyncExitStack() as stack:
        started = await asyncio.gather(*(
            stack.enter_async_context(Phone.start(name=n, max_lifetime=100)) for n in names))
        found = dict(zip(names, started, strict=True))
        await asyncio.gather(*(
            p.register(pbx.address, USERS[n.rstrip("2")][0], USERS[n.rstrip("2")][1],
                       domain="pbx.test")
            for n, p in found.items()))
        try:
            yield found
        finally:
            await asyncio.gather(*(p.unregister() for p in found.values()),
                                 return_exceptions=True)


async def _incoming(*ringing: Phone) -> None:
    await asyncio.gather(*(p.wait_for("incoming", timeout=10) for p in ringing))


async def _talk_and_hang_up(caller: Phone, callee: Phone) -> None:
    await callee.answer()
    await caller.wait_for("established", timeout=10)
    await asyncio.sleep(0.3)
    await caller.hangup()
    await callee.wait_for("closed", timeout=10)


@pytest.mark.asyncio
async def test_a_direct_call_is_one_leg_for_all_of_the_users_phones(
        pbx_tap: tuple[PbxProcess, Tap]) -> None:
    pbx, tap = pbx_tap
    since = tap.mark()
    async with phones(pbx, "alice", "bob", "bob2") as p:
        await p["alice"].dial(f"sip:102@{pbx.address}")
        await _incoming(p["bob"], p["bob2"])
        await _talk_and_hang_up(p["alice"], p["bob2"])
        events = await tap.ended_call(since, "102")
    found = legs(events)
    # Both of bob's phones rang: one leg, answered, open until the call ends.
    assert len(found) == 1, found
    leg = found[0]
    assert (leg["kind"], leg["user"], leg["result"]) == ("ring", "bob", "answered")
    assert leg["answered_at"] is not None and leg["ended_at"] is None
    assert leg["number"] is None and leg["queue"] is None and leg["sip_code"] is None
    assert leg["started_at"] <= leg["answered_at"]
    assert events[-1]["disposition"] == "answered"


@pytest.mark.asyncio
async def test_a_simultaneous_group_answered_by_one_member_was_answered_elsewhere_for_the_rest(
        pbx_tap: tuple[PbxProcess, Tap]) -> None:
    pbx, tap = pbx_tap
    since = tap.mark()
    async with phones(pbx, "alice", "bob", "carol", "dave") as p:
        await p["alice"].dial(f"sip:0312345601@{pbx.address}")
        await _incoming(p["bob"], p["carol"], p["dave"])
        await _talk_and_hang_up(p["alice"], p["carol"])
        events = await tap.ended_call(since, "0312345601")
    found = by_user(legs(events))
    assert set(found) == {"bob", "carol", "dave"}
    assert found["carol"]["result"] == "answered" and found["carol"]["ended_at"] is None
    for uid in ("bob", "dave"):
        leg = found[uid]
        assert leg["kind"] == "ring" and leg["result"] == "elsewhere", leg
        assert leg["answered_at"] is None and leg["ended_at"] is not None
        # Decided when carol answered, not when the phones' 487s came back.
        assert leg["ended_at"] >= found["carol"]["answered_at"]
    assert len({leg["leg_id"] for leg in found.values()}) == 3
    # In the database: one record, answered by carol (not missed), with the three legs.
    row, kept = stored(pbx, events)
    assert (row["answered_by"], row["owner"], row["call_type"]) == ("carol", "carol", "internal")
    assert sorted((leg["user_id"], leg["result"]) for leg in kept.values()) == [
        ("bob", "elsewhere"), ("carol", "answered"), ("dave", "elsewhere")]


@pytest.mark.asyncio
async def test_a_sequential_group_has_a_leg_per_member_in_turn(
        pbx_tap: tuple[PbxProcess, Tap]) -> None:
    pbx, tap = pbx_tap
    since = tap.mark()
    async with phones(pbx, "alice", "bob", "carol", "dave") as p:
        await p["alice"].dial(f"sip:0312345602@{pbx.address}")
        await _incoming(p["bob"])
        await p["bob"].reject()  # 486 Busy Here
        await _incoming(p["carol"])  # rings out after ring_seconds
        await _incoming(p["dave"])
        await _talk_and_hang_up(p["alice"], p["dave"])
        events = await tap.ended_call(since, "0312345602")
    found = legs(events)
    assert [e["user"] for e in found] == ["bob", "carol", "dave"]  # in the order they rang
    bob, carol, dave = found
    assert (bob["result"], bob["sip_code"]) == ("busy", 486)
    assert carol["result"] == "no_answer" and carol["sip_code"] is None
    rang = (_time(carol["ended_at"]) - _time(carol["started_at"]))
    assert 1.8 <= rang <= 3.0, rang
    assert dave["result"] == "answered" and dave["ended_at"] is None
    assert [e["leg_id"] for e in found] == [f"{events[0]['call_id']}:{n}" for n in (1, 2, 3)]


@pytest.mark.asyncio
async def test_legs_of_a_caller_who_gives_up_are_cancelled(
        pbx_tap: tuple[PbxProcess, Tap]) -> None:
    pbx, tap = pbx_tap
    since = tap.mark()
    async with phones(pbx, "alice", "bob", "carol", "dave") as p:
        await p["alice"].dial(f"sip:0312345601@{pbx.address}")
        await _incoming(p["bob"], p["carol"], p["dave"])
        await p["alice"].hangup()  # CANCEL
        await asyncio.gather(*(p[n].wait_for("closed", timeout=10)
                               for n in ("bob", "carol", "dave")))
        events = await tap.ended_call(since, "0312345601")
    found = by_user(legs(events))
    assert {uid: leg["result"] for uid, leg in found.items()} == {
        "bob": "cancelled", "carol": "cancelled", "dave": "cancelled"}
    assert events[-1]["disposition"] == "cancelled"


@pytest.mark.asyncio
async def test_queue_offers_are_legs_refused_rung_out_and_taken(
        pbx_tap: tuple[PbxProcess, Tap]) -> None:
    pbx, tap = pbx_tap
    since = tap.mark()
    async with phones(pbx, "alice", "bob", "carol", "dave") as p:
        agents = {n: p[n] for n in ("bob", "carol", "dave")}
        await p["alice"].dial(f"sip:0312345603@{pbx.address}")
        await p["alice"].wait_for("established", timeout=10)  # the queue's music
        # Whoever the queue offers the caller to first refuses, the next lets it ring out,
        # the third answers.
        first = await _offered(agents, set())
        await agents[first].reject()
        second = await _offered(agents, {first})
        third = await _offered(agents, {first, second}, timeout=10)
        await agents[third].answer()
        await agents[third].wait_for("established", timeout=10)
        await asyncio.sleep(0.5)
        await agents[third].hangup()
        await p["alice"].wait_for("closed", timeout=10)
        events = await tap.ended_call(since, "0312345603")
    found = legs(events)
    assert all(e["kind"] == "queue" and e["queue"] == "desk" for e in found), found
    final = {e["leg_id"]: e for e in found}  # the last event of each leg
    outcome = {e["user"]: (e["result"], e["sip_code"]) for e in final.values()
               if e["user"] in (first, second, third)}
    assert outcome[first] == ("busy", 486)
    assert outcome[second] == ("no_answer", None)
    assert outcome[third] == ("answered", None)
    row, kept = stored(pbx, events)
    assert (row["queue"], row["queue_result"], row["answered_by"]) == ("desk", "answered", third)
    assert {(leg["user_id"], leg["result"]) for leg in kept.values()} >= {
        (first, "busy"), (second, "no_answer"), (third, "answered")}


@pytest.mark.asyncio
async def test_a_blind_transfer_ends_the_transferors_leg_and_answers_the_targets(
        pbx_tap: tuple[PbxProcess, Tap]) -> None:
    pbx, tap = pbx_tap
    since = tap.mark()
    async with phones(pbx, "alice", "bob", "carol") as p:
        alice, bob, carol = p["alice"], p["bob"], p["carol"]
        await alice.dial(f"sip:102@{pbx.address}")
        await _incoming(bob)
        await bob.answer()
        await alice.wait_for("established", timeout=10)
        await asyncio.sleep(0.5)
        transfer = asyncio.create_task(bob.transfer(f"sip:103@{pbx.address}"))
        await _incoming(carol)
        await carol.answer()
        await transfer
        await carol.wait_for("established", timeout=10)
        await asyncio.sleep(0.5)
        await alice.hangup()
        await carol.wait_for("closed", timeout=10)
        events = await tap.ended_call(since, "102")
    found = legs(events)
    bobs = [e for e in found if e["user"] == "bob"]
    carols = [e for e in found if e["user"] == "carol"]
    # Bob's leg: answered, then the same leg again, ended by the transfer.
    assert [(e["result"], e["ended_at"] is None) for e in bobs] == [
        ("answered", True), ("answered", False)]
    assert bobs[0]["leg_id"] == bobs[1]["leg_id"] and bobs[0]["kind"] == "ring"
    # Carol's: the transfer's target, answered, open until the call ends.
    assert len(carols) == 1, found
    leg = carols[0]
    assert (leg["kind"], leg["result"], leg["ended_at"]) == ("transfer", "answered", None)
    assert leg["leg_id"] != bobs[0]["leg_id"]
    assert bobs[1]["ended_at"] == leg["answered_at"]
    transferred = next(i for i, e in enumerate(events) if e["event"] == "CallTransferred")
    assert events[transferred]["to_user"] == "carol"
    # One record for the whole call, with both legs: the transferred call is synced too.
    row, kept = stored(pbx, events)
    assert (row["transferred_to"], row["transfers"]) == ("carol", 1)
    assert sorted((leg["user_id"], leg["kind"]) for leg in kept.values()) == [
        ("bob", "ring"), ("carol", "transfer")]


async def _offered(agents: dict[str, Phone], seen: set[str], timeout: float = 8.0) -> str:
    """The agent not in ``seen`` whose phone rings next."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, phone in agents.items():
            if name not in seen and phone.seen("incoming"):
                return name
        await asyncio.sleep(0.02)
    raise AssertionError(f"no offer to anyone but {seen} within {timeout:g} s")


def _time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


@pytest.mark.asyncio
async def test_an_outside_call_is_a_leg_to_the_number(pbx_tap: tuple[PbxProcess, Tap]) -> None:
    pbx, tap = pbx_tap
    for scenario, outcome in (("uas_callback_provider.xml", ("answered", None)),
                              ("uas_callback_provider_busy.xml", ("busy", 486))):
        since = tap.mark()
        far_end = await start_sipp(provider(scenario, timeout=20))
        try:
            async with phones(pbx, "alice") as p:
                await p["alice"].dial(f"sip:0399998888@{pbx.address}")
                if outcome[0] == "answered":
                    await p["alice"].wait_for("established", timeout=10)
                    await asyncio.sleep(0.3)
                    await p["alice"].hangup()
                await p["alice"].wait_for("closed", timeout=10)
                events = await tap.ended_call(since, "+81399998888")
        finally:
            await far_end.stop()
        [leg] = legs(events)
        assert (leg["kind"], leg["user"], leg["number"]) == ("outside", None, "+81399998888")
        assert (leg["result"], leg["sip_code"]) == outcome, leg


@pytest.mark.asyncio
async def test_a_callback_has_a_leg_for_the_agent_and_one_for_the_customer(
        pbx_tap: tuple[PbxProcess, Tap], tmp_path: Path) -> None:
    pbx, tap = pbx_tap
    since = tap.mark()
    customer = await start_sipp(provider("uas_callback_provider.xml"))
    try:
        # The caller asks to be called back at the number they call from, and hangs up.
        asked = await run_sipp(carrier_call(pbx, tmp_path, "+81312345604"))
        assert asked.ok, _why(asked, pbx=pbx)
        await waiting_callback(pbx, "later")
        # Erin's phone comes online: rung first, then the customer is dialled.
        async with agent(pbx, "erin", "uas_callback_agent.xml", duration_ms=1000) as erin:
            took = await erin.wait(40)
        reached = await customer.wait(10)
    finally:
        await customer.stop()
    assert took.ok and reached.ok, _why(took, reached, pbx=pbx)

    def done(events: list[dict[str, Any]]) -> bool:
        numbered = [i for i, e in enumerate(events) if e["event"] == "CallLeg"
                    and e["number"] == CUSTOMER_E164]
        return bool(numbered) and any(e["event"] == "CallEnded"
                                      for e in events[numbered[0]:])

    everything = await tap.wait(since, done)
    call_id = next(e["call_id"] for e in everything if e["event"] == "CallStarted"
                   and e["from_number"] == CUSTOMER_E164)
    found = legs([e for e in everything if e.get("call_id") == call_id])
    assert [(e["kind"], e["user"], e["number"], e["queue"], e["result"]) for e in found] == [
        ("callback", "erin", None, "later", "answered"),
        ("callback", None, CUSTOMER_E164, "later", "answered")]
    assert [e["leg_id"] for e in found] == [f"{call_id}:1", f"{call_id}:2"]
    assert all(e["ended_at"] is None for e in found)
