"""pyVoIP, a common Python softphone library, served by the PBX: register, call, answer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.db import wait_rows
from tests.integration.pbx_process import USERS, PbxProcess, run_pbx
from tests.peers.phone_driver import Phone
from tests.peers.pyvoip_phone import PyVoipPhone

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    # Default challenge (SHA-256 first, MD5 second): pyVoIP must find the MD5 one, and
    # answers it the RFC 2069 way (no qop), which the PBX accepts once per nonce.
    with run_pbx(tmp_path_factory.mktemp("pyvoip")) as p:
        yield p


@pytest.mark.asyncio
async def test_pyvoip_registers_calls_and_is_called(pbx: PbxProcess) -> None:
    c_ext, c_pw, _ = USERS["carol"]
    b_ext, b_pw, _ = USERS["bob"]
    async with PyVoipPhone.start(pbx.address, c_ext, c_pw, name="carol") as carol, \
            Phone.start(name="bob") as bob:
        await carol.register(timeout=15)
        await bob.register(pbx.address, b_ext, b_pw, domain="pbx.test")
        wait_rows(pbx.database, "SELECT * FROM registrations WHERE aor = 'carol'")

        # pyVoIP calls bob; bob answers; audio crosses both ways.
        await carol.call(b_ext)
        await bob.wait_for("incoming", timeout=10)
        await bob.answer()
        await carol.wait_for("established", timeout=10)
        await carol.tone(800)
        await bob.tone(1200)
        assert abs(await bob.received_frequency(expect=800, timeout=10) - 800) <= 25
        assert abs(await carol.received_frequency(expect=1200, timeout=10) - 1200) <= 25
        await carol.hangup()
        await bob.wait_for("closed", timeout=10)
        await carol.wait_for("closed", timeout=10)

        # bob calls pyVoIP; it answers.
        await bob.dial(f"sip:{c_ext}@{pbx.address}")
        incoming = await carol.wait_for("incoming", timeout=10)
        assert "102" in incoming["from"]
        await carol.answer()
        await bob.wait_for("established", timeout=10)
        await bob.hangup()
        await carol.wait_for("closed", timeout=10)

    recs = wait_rows(pbx.database, "SELECT * FROM calls WHERE disposition = 'answered' "
                     "AND ended_at IS NOT NULL", count=2)
    assert {(r["caller_user"], r["answered_by"]) for r in recs} == {("carol", "bob"),
                                                                      ("bob", "carol")}
