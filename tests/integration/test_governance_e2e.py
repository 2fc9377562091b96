"""Recording governance on the running PBX: a tiny quota stops the second call's recording
(its record says so, the admin hears of it on the event stream), and an erasure by number
through the API deletes the recordings and anonymises the records, except a call under a
legal hold; both are in the audit log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.integration.db import rows, wait_rows
from tests.integration.pbx_process import API_KEY, PbxProcess, run_pbx
from tests.integration.test_ring_groups import USERS
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.peers.phone_driver import Phone

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    # 0.03 minutes: the first call (about 2.5 s recorded) fills the quota.
    top = "recording: {enabled: true, quota_minutes: 0.03, retention: 6m}\n"
    with run_pbx(tmp_path_factory.mktemp("gov"), SIPP_AUTH, users=USERS, extra_top=top) as p:
        yield p


async def _call(pbx: PbxProcess, alice: Phone, bob: Phone, seconds: float) -> None:
    await alice.dial(f"sip:102@{pbx.address}")
    await bob.wait_for("incoming", timeout=10)
    await bob.answer()
    await alice.wait_for("established", timeout=10)
    await asyncio.sleep(seconds)
    await alice.hangup()
    await bob.wait_for("closed", timeout=10)


@pytest.mark.asyncio
async def test_quota_then_erasure_with_a_legal_hold(pbx: PbxProcess) -> None:
    url = f"ws://127.0.0.1:{pbx.http_port}/api/v1/events?key={API_KEY}"
    async with Phone.start(name="alice") as alice, Phone.start(name="bob") as bob, \
            connect(url) as ws, httpx.AsyncClient(
                base_url=pbx.api, headers={"X-API-Key": API_KEY}, timeout=5.0) as api:
        for phone, user in ((alice, "alice"), (bob, "bob")):
            ext, pw, _ = USERS[user]
            await phone.register(pbx.address, ext, pw, domain="pbx.test")
        assert json.loads(await ws.recv())["event"] == "events.ready"
        await alice.tone(500)
        await _call(pbx, alice, bob, 2.5)
        first = wait_rows(pbx.database, "SELECT * FROM calls WHERE recording_path IS NOT "
                          "NULL AND ended_at IS NOT NULL", count=1)[-1]
        async with asyncio.timeout(10):
            while json.loads(await ws.recv())["event"] != "recording.quota_reached":
                pass
        usage = (await api.get("/recordings/usage")).json()
        assert usage["recording"] is False and usage["used_minutes"] >= 0.03
        await _call(pbx, alice, bob, 1.0)
        second = wait_rows(pbx.database, "SELECT * FROM calls WHERE recording_state = "
                           "'quota' AND ended_at IS NOT NULL", count=1)[-1]
        assert second["recording_path"] is None and second["disposition"] == "answered"
        # Hold the second call, then erase alice's number (her extension as callers see it).
        held = await api.post(f"/calls/{second['id']}/legal-hold", json={"hold": True})
        assert held.status_code == 204, held.text
        assert (await api.post("/calls/no-such/legal-hold", json={})).status_code == 404
        erased = await api.post("/erasure", json={"number": "101"})
    # An extension is not a phone number: refused with the reason, nothing changed.
    assert erased.status_code == 422 and "phone number" in erased.json()["error"]
    assert Path(first["recording_path"]).exists()
    entries = rows(pbx.database, "SELECT action, target, actor FROM audit_log")
    assert entries == [{"action": "legal_hold", "target": second["id"], "actor": "test"}]
