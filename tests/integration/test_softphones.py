"""Two real softphones (baresip) calling each other through the PBX: audio both ways, DTMF."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.integration.db import wait_rows
from tests.integration.pbx_process import USERS, PbxProcess, run_pbx
from tests.peers.phone_driver import Phone

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    # The default challenge order: SHA-256 first, then MD5.
    with run_pbx(tmp_path_factory.mktemp("phones")) as p:
        yield p


@contextlib.asynccontextmanager
async def connected(pbx: PbxProcess) -> AsyncIterator[tuple[Phone, Phone]]:
    """Alice (101) and bob (102) registered, alice has called bob and bob has answered."""
    a_ext, a_pw, _ = USERS["alice"]
    b_ext, b_pw, _ = USERS["bob"]
    async with Phone.start(name="alice") as alice, Phone.start(name="bob") as bob:
        await alice.register(pbx.address, a_ext, a_pw, domain="pbx.test")
        await bob.register(pbx.address, b_ext, b_pw, domain="pbx.test")
        await alice.dial(f"sip:{b_ext}@{pbx.address}")
        await bob.wait_for("incoming", timeout=10)
        await bob.answer()
        await alice.wait_for("established", timeout=10)
        yield alice, bob


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.asyncio
async def test_two_phones_talk_through_the_pbx(pbx: PbxProcess, transport: str) -> None:
    a_ext, a_pw, _ = USERS["alice"]
    b_ext, b_pw, _ = USERS["bob"]
    async with Phone.start(name="alice") as alice, Phone.start(name="bob") as bob:
        await alice.register(pbx.address, a_ext, a_pw, domain="pbx.test", transport=transport)
        await bob.register(pbx.address, b_ext, b_pw, domain="pbx.test", transport=transport)
        suffix = "" if transport == "udp" else ";transport=tcp"
        await alice.dial(f"sip:{b_ext}@{pbx.address}{suffix}")
        incoming = await bob.wait_for("incoming", timeout=10)
        # The callee's phone shows who is calling: the caller's name and extension.
        assert "Alice Sato" in str(incoming) and a_ext in str(incoming)
        await alice.wait_for("ringing", timeout=10)
        await bob.answer()
        await alice.wait_for("established", timeout=10)
        await bob.wait_for("established", timeout=10)

        # A tone each way, measured at the other phone: audio really crosses the PBX's relay.
        await alice.tone(600)
        await bob.tone(1000)
        heard_by_bob = await bob.received_frequency(expect=600, timeout=10)
        heard_by_alice = await alice.received_frequency(expect=1000, timeout=10)
        assert abs(heard_by_bob - 600) <= 20
        assert abs(heard_by_alice - 1000) <= 20

        # RFC 4733 DTMF passes through the relay.
        await alice.silence()
        await alice.send_dtmf("123#")
        assert await bob.received_digits(4, timeout=15) == "123#"

        await alice.hangup()
        await bob.wait_for("closed", timeout=10)

    rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE disposition = 'answered' "
                    "AND ended_at IS NOT NULL AND sip_call_id != ''", count=1)[-1]
    assert rec["from_name"] == "Alice Sato" and rec["answered_by"] == "bob"


@pytest.mark.asyncio
async def test_hold_and_resume_pass_through(pbx: PbxProcess) -> None:
    async with connected(pbx) as (alice, bob):
        await bob.tone(1000)
        assert abs(await alice.received_frequency(expect=1000, timeout=10) - 1000) <= 20
        await alice.hold()
        await asyncio.sleep(1.0)
        await alice.resume()
        await asyncio.sleep(0.5)
        # After resume the audio flows again.
        assert abs(await alice.received_frequency(expect=1000, timeout=10) - 1000) <= 20
        await bob.hangup()
        await alice.wait_for("closed", timeout=10)


@pytest.mark.asyncio
async def test_party_on_hold_hears_the_pbx_music(pbx: PbxProcess) -> None:
    async with connected(pbx) as (alice, bob):
        # 2 kHz is far from every note of the hold music.
        await alice.tone(2000)
        assert abs(await bob.received_frequency(expect=2000, timeout=10) - 2000) <= 20

        await alice.hold()
        await asyncio.sleep(0.6)  # let reports from before the hold pass
        start = len(bob.events)
        await asyncio.sleep(3.0)
        during = [e for e in bob.events[start:] if e.get("event") == "audio"]
        assert during, bob.describe()
        # Bob hears music from the PBX: sound, and none of it alice's tone.
        assert all(float(e["rms"]) > 100 for e in during), during
        assert all(abs(float(e["freq"]) - 2000) > 100 for e in during), during
        # The hold music is in C major: what bob hears sits on the notes of that scale.
        white_keys = [440 * 2 ** ((n - 69) / 12) for n in range(36, 96) if n % 12 in
                      (0, 2, 4, 5, 7, 9, 11)]
        for e in during:
            f = float(e["freq"])
            assert min(abs(f - k) / k for k in white_keys) < 0.02, during

        await alice.resume()
        # Off hold: the music stops and alice's own audio is forwarded again.
        assert abs(await bob.received_frequency(expect=2000, timeout=10) - 2000) <= 20
        await alice.hangup()
        await bob.wait_for("closed", timeout=10)
