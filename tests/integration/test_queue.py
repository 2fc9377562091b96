"""Call queues with real phones: waiting callers hear the queue's greeting, music and
announcements, the agent who answers talks to the caller under one call record, a supervisor
picks a waiting call for an agent, and a callback keeps the caller's place in line.

baresip phones are the callers and agents here (tones checked both ways once connected);
the caps with many callers are in test_queue_caps.py, the strategies and agent states in
test_queue_agents.py, the CRM-based rules in test_queue_rules.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile

from tests.integration.db import wait_rows
from tests.integration.pbx_process import API_KEY, PbxProcess, run_pbx
from tests.integration.test_ring_groups import USERS
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.peers.phone_driver import Phone

pytestmark = pytest.mark.integration

ROUTING = """\
dialplan:
  region: JP
numbers:
  - number: "03-1234-5600"
    type: local
    route: {queue: support}
queues:
  support:
    members: [bob, carol]
    strategy: longest_idle
    ring_timeout: 4s
    announcements: [{text: "Thank you for waiting."}]
    announce_every: 10s
  tones:
    members: [erin]
    greeting: {file: GREETING}
    music: {file: MUSIC}
    announcements: [{file: NOTICE}]
    announce_every: 10s
  pick:
    members: [bob, carol]
    ring_timeout: 10s
  back:
    members: [bob]
    callback_key: "9"
    ring_timeout: 10s
ivr:
  front:
    welcome: {text: "Welcome."}
    options:
      "2": {label: Support, route: {queue: support}}
"""
MORE_NUMBERS = """\
  - number: "03-1234-5605"
    type: local
    route: {ivr: front}
  - number: "03-1234-5602"
    type: local
    route: {queue: tones}
  - number: "03-1234-5603"
    type: local
    route: {queue: pick}
  - number: "03-1234-5604"
    type: local
    route: {queue: back}
"""


def _tone_file(path: Path, freq: float, seconds: float) -> Path:
    t = np.arange(int(8000 * seconds)) / 8000.0
    soundfile.write(path, (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 8000)
    return path


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    work = tmp_path_factory.mktemp("queue")
    routing = (ROUTING.replace("queues:\n", MORE_NUMBERS + "queues:\n", 1)
               .replace("GREETING", str(_tone_file(work / "greeting.wav", 1000.0, 1.5)))
               .replace("MUSIC", str(_tone_file(work / "music.wav", 440.0, 3.0)))
               .replace("NOTICE", str(_tone_file(work / "notice.wav", 1800.0, 1.5))))
    with run_pbx(work, SIPP_AUTH, users=USERS, extra_top=routing) as p:
        yield p


def _api(pbx: PbxProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=pbx.api, headers={"X-API-Key": API_KEY}, timeout=5.0)


async def _register(phone: Phone, pbx: PbxProcess, user: str) -> None:
    ext, pw, _ = USERS[user]
    await phone.register(pbx.address, ext, pw, domain="pbx.test")


@pytest.mark.asyncio
async def test_waiting_caller_hears_music_then_the_agent_who_answers(pbx: PbxProcess) -> None:
    async with Phone.start(name="alice") as alice, Phone.start(name="bob") as bob:
        await _register(alice, pbx, "alice")
        await alice.tone(600)
        await alice.dial(f"sip:0312345600@{pbx.address}")
        await alice.wait_for("established", timeout=10)
        # Nobody to take the call yet: the caller waits with music (any audible sound).
        await alice.received_frequency(timeout=10)
        await asyncio.sleep(1.0)
        await _register(bob, pbx, "bob")
        await bob.tone(1400)
        incoming = await bob.wait_for("incoming", timeout=10)
        assert "Alice" in str(incoming)
        await bob.answer()
        assert abs(await bob.received_frequency(expect=600, timeout=10) - 600) <= 20
        assert abs(await alice.received_frequency(expect=1400, timeout=10) - 1400) <= 20
        await alice.hangup()
        await bob.wait_for("closed", timeout=10)
        await bob.unregister()
    rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE answered_by = 'bob' AND "
                    "ended_at IS NOT NULL AND caller_user = 'alice' AND queue = 'support'",
                    count=1)[-1]
    assert rec["queue_result"] == "answered" and rec["disposition"] == "answered"
    assert rec["queue_wait"] >= 1.0


@pytest.mark.asyncio
async def test_greeting_music_and_announcement_are_heard_in_turn(pbx: PbxProcess) -> None:
    async with Phone.start(name="alice") as alice:
        await _register(alice, pbx, "alice")
        await alice.dial(f"sip:0312345602@{pbx.address}")
        await alice.wait_for("established", timeout=10)
        start = time.monotonic()
        await alice.received_frequency(expect=1000, timeout=5)  # the greeting
        await alice.received_frequency(expect=440, timeout=5)  # then the music
        # The announcement comes announce_every (10 s) after the music started.
        await alice.received_frequency(expect=1800, timeout=15)
        assert 9.0 <= time.monotonic() - start <= 15.0
        await alice.received_frequency(expect=440, timeout=5)  # and the music again
        async with _api(pbx) as api:
            live = (await api.get("/queues/tones")).json()
        assert live["live"]["waiting"] == 1
        await alice.hangup()
    rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE queue = 'tones' AND "
                    "ended_at IS NOT NULL", count=1)[-1]
    assert rec["queue_result"] == "abandoned" and rec["queue_wait"] >= 9.0
    assert rec["disposition"] == "no_answer" and rec["answered_by"] is None


@pytest.mark.asyncio
async def test_a_supervisor_picks_a_waiting_call_for_an_agent(pbx: PbxProcess) -> None:
    async with Phone.start(name="alice") as alice, Phone.start(name="carol") as carol, \
            _api(pbx) as api:
        await _register(alice, pbx, "alice")
        await _register(carol, pbx, "carol")
        # Carol is paused: the queue offers her nothing, but she can be given a call.
        assert (await api.post("/agents/carol/pause", json={"reason": "coaching"})
                ).status_code == 200
        await alice.tone(700)
        await carol.tone(1300)
        await alice.dial(f"sip:0312345603@{pbx.address}")
        await alice.wait_for("established", timeout=10)
        await asyncio.sleep(1.0)
        assert not carol.seen("incoming")
        waiting = (await api.get("/queues/pick/calls")).json()
        assert len(waiting) == 1 and waiting[0]["position"] == 1
        call_id = waiting[0]["call_id"]
        refused = await api.post(f"/queues/pick/calls/{call_id}/pick", json={"agent": "dave"})
        assert refused.status_code == 404
        picked = await api.post(f"/queues/pick/calls/{call_id}/pick", json={"agent": "carol"})
        assert picked.status_code == 200, picked.text
        await carol.wait_for("incoming", timeout=10)
        await carol.answer()
        assert abs(await carol.received_frequency(expect=700, timeout=10) - 700) <= 20
        assert abs(await alice.received_frequency(expect=1300, timeout=10) - 1300) <= 20
        assert (await api.get("/queues/pick/calls")).json() == []
        await carol.hangup()
        await alice.wait_for("closed", timeout=10)
        await api.post("/agents/carol/unpause")
        await carol.unregister()
    rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE queue = 'pick' AND "
                    "answered_by = 'carol' AND ended_at IS NOT NULL", count=1)[-1]
    assert rec["queue_result"] == "answered" and rec["hangup_by"] == "callee"


@pytest.mark.asyncio
async def test_a_callback_keeps_its_place_and_rings_the_agent_first(pbx: PbxProcess) -> None:
    async with Phone.start(name="alice") as alice, Phone.start(name="carol") as carol, \
            Phone.start(name="bob") as bob, _api(pbx) as api:
        await _register(alice, pbx, "alice")
        await _register(carol, pbx, "carol")
        await alice.dial(f"sip:0312345604@{pbx.address}")
        await alice.wait_for("established", timeout=10)
        await asyncio.sleep(0.5)
        await carol.dial(f"sip:0312345604@{pbx.address}")
        await carol.wait_for("established", timeout=10)
        await asyncio.sleep(0.5)
        # Alice asks to be called back at the number she calls from, then hangs up.
        await alice.send_dtmf("9")
        await asyncio.sleep(1.0)
        await alice.send_dtmf("1")
        await asyncio.sleep(3.0)
        await alice.hangup()
        await asyncio.sleep(0.5)
        waiting = (await api.get("/queues/back/calls")).json()
        assert [(w["position"], w["callback"], w["callback_number"]) for w in waiting] == [
            (1, True, "101"), (2, False, None)]
        # Bob comes: the callback is first. His phone rings, then the PBX dials Alice.
        await _register(bob, pbx, "bob")
        await bob.tone(900)
        incoming = await bob.wait_for("incoming", timeout=10)
        assert "Callback 101" in str(incoming)
        await bob.answer()
        await alice.wait_for("incoming", timeout=15)
        await alice.tone(500)
        await alice.answer()
        assert abs(await bob.received_frequency(expect=500, timeout=10) - 500) <= 20
        assert abs(await alice.received_frequency(expect=900, timeout=10) - 900) <= 20
        assert [w["caller_number"] for w in (await api.get("/queues/back/calls")).json()] \
            == ["103"]
        await alice.hangup()
        await bob.wait_for("closed", timeout=10)
        await carol.hangup()
        await bob.unregister()
    rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE queue = 'back' AND "
                    "callback_number = '101' AND answered_by = 'bob' AND duration > 0",
                    count=1, timeout=10)[-1]
    assert rec["callback_attempts"] == 1 and rec["caller_user"] == "alice"


@pytest.mark.asyncio
async def test_a_supervisor_moves_a_caller_to_another_queue(pbx: PbxProcess) -> None:
    async with Phone.start(name="alice") as alice, _api(pbx) as api:
        await _register(alice, pbx, "alice")
        await alice.dial(f"sip:0312345603@{pbx.address}")
        await alice.wait_for("established", timeout=10)
        await asyncio.sleep(1.0)
        [waiting] = (await api.get("/queues/pick/calls")).json()
        moved = await api.post(f"/queues/pick/calls/{waiting['call_id']}/move",
                               json={"queue": "tones"})
        assert moved.status_code == 200, moved.text
        assert (await api.get("/queues/pick/calls")).json() == []
        [there] = (await api.get("/queues/tones/calls")).json()
        assert there["call_id"] == waiting["call_id"] and there["position"] == 1
        # The caller now hears the other queue's music.
        await alice.received_frequency(expect=440, timeout=5)
        gone = await api.post(f"/queues/pick/calls/{waiting['call_id']}/move",
                              json={"queue": "tones"})
        assert gone.status_code == 404
        await alice.hangup()
    rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE queue = 'tones' AND "
                    "caller_user = 'alice' AND queue_result = 'abandoned' AND "
                    "to_number = '0312345603'", count=1)[-1]
    assert rec["disposition"] == "no_answer"


@pytest.mark.asyncio
async def test_an_ivr_option_puts_the_caller_in_a_queue(pbx: PbxProcess) -> None:
    async with Phone.start(name="alice") as alice:
        await _register(alice, pbx, "alice")
        await alice.tone(650)
        await alice.dial(f"sip:0312345605@{pbx.address}")
        await alice.wait_for("established", timeout=10)
        await asyncio.sleep(0.5)
        await alice.send_dtmf("2")
        await asyncio.sleep(1.5)  # waiting in the queue now: none of its agents is registered
        async with _api(pbx) as api:
            assert len((await api.get("/queues/support/calls")).json()) == 1
        async with Phone.start(name="bob") as bob:
            await _register(bob, pbx, "bob")
            await bob.tone(1350)
            await bob.wait_for("incoming", timeout=10)
            await bob.answer()
            assert abs(await bob.received_frequency(expect=650, timeout=10) - 650) <= 20
            assert abs(await alice.received_frequency(expect=1350, timeout=10) - 1350) <= 20
            await alice.hangup()
            await bob.wait_for("closed", timeout=10)
            await bob.unregister()
    rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE answered_by = 'bob' AND "
                    "to_number = '0312345605' AND ended_at IS NOT NULL", count=1)[-1]
    assert rec["keys"] == "2" and rec["queue"] == "support"
    assert rec["queue_result"] == "answered"
