"""Presence from the phone: do-not-disturb (*22) makes direct calls busy, offline (*23) makes
them unavailable, available (*21) lets them ring again; the state survives a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.db import wait_rows
from tests.integration.pbx_process import USERS, PbxProcess, run_pbx
from tests.peers.phone_driver import Phone

pytestmark = pytest.mark.integration


async def _feature(phone: Phone, pbx: PbxProcess, code: str) -> None:
    """Dial a feature code and wait until the PBX has confirmed and hung up."""
    await phone.dial(f"sip:{code}@{pbx.address}")
    await phone.wait_for("established", timeout=10)
    await phone.wait_for("closed", timeout=15)


async def _call_outcome(alice: Phone, bob: Phone, pbx: PbxProcess) -> str:
    """Alice calls bob: "rang" if bob's phone rang (then alice hangs up), else the reason."""
    before = len(alice.seen("closed"))
    await alice.dial(f"sip:{USERS['bob'][0]}@{pbx.address}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while loop.time() < deadline:
        if bob.seen("incoming"):
            await alice.hangup()
            await bob.wait_for("closed", timeout=10)
            return "rang"
        closed = alice.seen("closed")[before:]
        if closed:
            return str(closed[-1].get("reason", ""))
        await asyncio.sleep(0.05)
    raise AssertionError("neither rang nor refused")


@pytest.mark.asyncio
async def test_presence_codes_change_how_calls_reach_a_user(tmp_path: Path) -> None:
    with run_pbx(tmp_path) as pbx:
        async with Phone.start(name="alice") as alice, Phone.start(name="bob") as bob:
            for phone, user in ((alice, "alice"), (bob, "bob")):
                ext, pw, _ = USERS[user]
                await phone.register(pbx.address, ext, pw, domain="pbx.test")
            await _feature(bob, pbx, "*22")
            assert "486" in await _call_outcome(alice, bob, pbx)
            await _feature(bob, pbx, "*23")
            assert "480" in await _call_outcome(alice, bob, pbx)
            await _feature(bob, pbx, "*21")
            assert await _call_outcome(alice, bob, pbx) == "rang"
            await _feature(bob, pbx, "*22")
        rows = wait_rows(pbx.database, "SELECT * FROM calls WHERE hangup_cause = ?",
                         "do not disturb", count=1)
        assert rows[0]["disposition"] == "busy"
    # Do-not-disturb is still on after a restart.
    with run_pbx(tmp_path, port=pbx.port) as pbx:
        assert "1 users on do-not-disturb or offline" in pbx.log_text()
