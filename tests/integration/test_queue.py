"""Call queues with real phones: waiting callers hear music, agents are offered calls by the
queue's strategy, and the agent who answers talks to the caller under one call record.

baresip phones are the callers and agents here (tones checked both ways once connected);
the caps with many callers at once are in test_queue_caps.py (SIPp).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.integration.db import wait_rows
from tests.integration.pbx_process import PbxProcess, run_pbx
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
  - number: "03-1234-5601"
    type: local
    route: {queue: rr}
queues:
  support:
    members: [bob, carol]
    strategy: longest_idle
    ring_timeout: 4s
    announcements: [{text: "Thank you for waiting."}]
    announce_every: 10s
  rr:
    members: [carol, dave, bob]
    strategy: round_robin
    ring_timeout: 3s
    retry: 1s
    max_missed: 2
"""


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with run_pbx(tmp_path_factory.mktemp("queue"), SIPP_AUTH, users=USERS,
                 extra_top=ROUTING) as p:
        yield p


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
