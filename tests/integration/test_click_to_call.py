"""Click-to-call from the API: the agent's phone rings first with an auto-answer hint, then
the PBX dials the number, and the two talk under one outbound-or-internal call record."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.db import wait_rows
from tests.integration.pbx_process import API_KEY, PbxProcess, run_pbx
from tests.integration.test_ring_groups import USERS
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.peers.phone_driver import Phone

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with run_pbx(tmp_path_factory.mktemp("click"), SIPP_AUTH, users=USERS) as p:
        yield p


@pytest.mark.asyncio
async def test_click_to_call_rings_the_agent_first_then_the_number(pbx: PbxProcess) -> None:
    async with Phone.start(name="alice") as alice, Phone.start(name="carol") as carol, \
            httpx.AsyncClient(base_url=pbx.api, headers={"X-API-Key": API_KEY},
                              timeout=5.0) as api:
        for phone, user in ((alice, "alice"), (carol, "carol")):
            ext, pw, _ = USERS[user]
            await phone.register(pbx.address, ext, pw, domain="pbx.test")
        assert (await api.post("/calls/click-to-call",
                               json={"agent": "zed", "number": "103"})).status_code == 404
        assert (await api.post("/calls/click-to-call",
                               json={"agent": "bob", "number": "103"})).status_code == 409
        started = await api.post("/calls/click-to-call", json={"agent": "alice",
                                                               "number": "103"})
        assert started.status_code == 202, started.text
        call_id = started.json()["call_id"]
        incoming = await alice.wait_for("incoming", timeout=10)
        assert "Calling 103" in str(incoming)
        assert not carol.seen("incoming")  # the agent's phone first
        await alice.tone(800)
        await alice.answer()
        await carol.wait_for("incoming", timeout=10)
        await carol.tone(1600)
        await carol.answer()
        assert abs(await carol.received_frequency(expect=800, timeout=10) - 800) <= 20
        assert abs(await alice.received_frequency(expect=1600, timeout=10) - 1600) <= 20
        await carol.hangup()
        await alice.wait_for("closed", timeout=10)
    rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE id = ? AND ended_at IS NOT NULL",
                    call_id, count=1)[-1]
    assert rec["caller_user"] == "alice" and rec["answered_by"] == "carol"
    assert rec["direction"] == "internal" and rec["disposition"] == "answered"
    assert rec["to_number"] == "103" and rec["hangup_by"] == "callee"
