"""An admin changes a queue's members and reloads while a caller waits: the caller keeps
waiting (no call dropped) and is offered to the new member, not the removed one."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from tests.integration.db import wait_rows
from tests.integration.pbx_process import API_KEY, run_pbx
from tests.integration.test_ring_groups import USERS
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.peers.phone_driver import Phone

pytestmark = pytest.mark.integration

ROUTING = """\
dialplan:
  region: JP
numbers:
  - number: "03-1234-5630"
    type: local
    route: {queue: desk}
queues:
  desk:
    members: [dave]
    ring_timeout: 10s
"""


@pytest.mark.asyncio
async def test_a_reload_changes_the_members_without_dropping_the_waiting_caller(
        tmp_path: Path) -> None:
    with run_pbx(tmp_path, SIPP_AUTH, users=USERS, extra_top=ROUTING) as pbx:
        async with Phone.start(name="alice") as alice, Phone.start(name="carol") as carol, \
                httpx.AsyncClient(base_url=pbx.api, headers={"X-API-Key": API_KEY},
                                  timeout=5.0) as api:
            for phone, user in ((alice, "alice"), (carol, "carol")):
                ext, pw, _ = USERS[user]
                await phone.register(pbx.address, ext, pw, domain="pbx.test")
            await alice.dial(f"sip:0312345630@{pbx.address}")
            await alice.wait_for("established", timeout=10)
            await asyncio.sleep(1.0)
            assert not carol.seen("incoming")  # carol is not a member yet
            text = pbx.config_path.read_text()
            pbx.config_path.write_text(text.replace("members: [dave]", "members: [carol]"))
            pbx.signal(signal.SIGHUP)
            await asyncio.to_thread(pbx.wait_log, "config reloaded")
            await carol.wait_for("incoming", timeout=10)
            await carol.answer()
            agents = {a["user_id"]: a["state"] for a in (await api.get("/agents")).json()}
            assert agents["carol"] == "on_call"
            await asyncio.sleep(0.5)
            await alice.hangup()
            await carol.wait_for("closed", timeout=10)
        rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE queue = 'desk' AND "
                        "ended_at IS NOT NULL", count=1)[-1]
    assert rec["answered_by"] == "carol" and rec["queue_result"] == "answered"
    assert rec["queue_wait"] >= 1.0
