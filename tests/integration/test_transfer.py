"""Transfers with real softphones: blind (REFER) and attended (REFER with Replaces).

Alice calls bob; bob hands alice over to carol. Audio is checked at the phones (alice and carol
hear each other's tones), and the call keeps one record and one recording, whose right channel
carries bob's tone first and carol's after the transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.integration.db import wait_rows
from tests.integration.pbx_process import USERS, PbxProcess, run_pbx
from tests.peers.phone_driver import Phone

pytestmark = pytest.mark.integration

ALICE_HZ, BOB_HZ, CAROL_HZ = 600.0, 1000.0, 1400.0


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with run_pbx(tmp_path_factory.mktemp("transfer"),
                 extra_top="recording:\n  enabled: true\n") as p:
        yield p


@contextlib.asynccontextmanager
async def three_phones(pbx: PbxProcess) -> AsyncIterator[tuple[Phone, Phone, Phone]]:
    """Alice, bob and carol registered, each sending its own tone; alice has called bob and
    bob has answered."""
    async with Phone.start(name="alice") as alice, Phone.start(name="bob") as bob, \
            Phone.start(name="carol") as carol:
        for phone, user, hz in ((alice, "alice", ALICE_HZ), (bob, "bob", BOB_HZ),
                                (carol, "carol", CAROL_HZ)):
            ext, pw, _ = USERS[user]
            await phone.register(pbx.address, ext, pw, domain="pbx.test")
            await phone.tone(hz)
        await alice.dial(f"sip:{USERS['bob'][0]}@{pbx.address}")
        await bob.wait_for("incoming", timeout=10)
        await bob.answer()
        await alice.wait_for("established", timeout=10)
        assert abs(await alice.received_frequency(expect=BOB_HZ, timeout=10) - BOB_HZ) <= 20
        yield alice, bob, carol


def _dominant(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def _check_recording(rec: dict[str, object]) -> None:
    """Left: alice all along. Right: bob at the start, carol at the end."""
    path = Path(str(rec["recording_path"]))
    audio, rate = sf.read(path, dtype="int16")
    seconds = len(audio) / rate
    assert abs(seconds - float(rec["recording_seconds"])) < 0.05  # type: ignore[arg-type]
    head = audio[int(0.3 * rate): int(1.3 * rate)]
    tail = audio[-int(1.3 * rate): -int(0.3 * rate)]
    assert abs(_dominant(head[:, 0], rate) - ALICE_HZ) <= 10
    assert abs(_dominant(tail[:, 0], rate) - ALICE_HZ) <= 10
    assert abs(_dominant(head[:, 1], rate) - BOB_HZ) <= 10
    assert abs(_dominant(tail[:, 1], rate) - CAROL_HZ) <= 10


@pytest.mark.asyncio
async def test_blind_transfer_connects_caller_to_target(pbx: PbxProcess) -> None:
    async with three_phones(pbx) as (alice, bob, carol):
        await asyncio.sleep(1.5)
        transfer = asyncio.create_task(bob.transfer(f"sip:{USERS['carol'][0]}@{pbx.address}"))
        incoming = await carol.wait_for("incoming", timeout=10)
        # Carol's phone shows who she will be talking to: alice, not bob.
        assert "Alice Sato" in str(incoming)
        await carol.answer()
        await transfer
        await bob.wait_for("transferred", timeout=15)
        await bob.wait_for("closed", timeout=10)
        assert abs(await carol.received_frequency(expect=ALICE_HZ, timeout=10) - ALICE_HZ) <= 20
        assert abs(await alice.received_frequency(expect=CAROL_HZ, timeout=10) - CAROL_HZ) <= 20
        await asyncio.sleep(1.5)
        await carol.hangup()
        await alice.wait_for("closed", timeout=10)
    rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE transfers = 1 AND ended_at IS NOT "
                    "NULL AND transferred_to = 'carol'", count=1)[-1]
    assert rec["caller_user"] == "alice" and rec["answered_by"] == "bob"
    assert rec["disposition"] == "answered"
    assert rec["hangup_by"] == "callee"
    _check_recording(rec)


@pytest.mark.asyncio
async def test_attended_transfer_joins_caller_and_consulted_party(pbx: PbxProcess) -> None:
    async with three_phones(pbx) as (alice, bob, carol):
        await asyncio.sleep(1.5)
        await bob.consult(f"sip:{USERS['carol'][0]}@{pbx.address}")
        await carol.wait_for("incoming", timeout=10)
        await carol.answer()
        await bob.wait_for("established", timeout=10)
        assert abs(await bob.received_frequency(expect=CAROL_HZ, timeout=10) - CAROL_HZ) <= 20
        await bob.attended_transfer()
        await bob.wait_for("transferred", timeout=15)
        assert abs(await carol.received_frequency(expect=ALICE_HZ, timeout=10) - ALICE_HZ) <= 20
        assert abs(await alice.received_frequency(expect=CAROL_HZ, timeout=10) - CAROL_HZ) <= 20
        await asyncio.sleep(1.5)
        await alice.hangup()
        await carol.wait_for("closed", timeout=10)
    rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE transfers = 1 AND ended_at IS NOT "
                    "NULL AND transferred_to = 'carol' AND hangup_by = 'caller'", count=1)[-1]
    assert rec["caller_user"] == "alice" and rec["disposition"] == "answered"
    _check_recording(rec)
    consult = wait_rows(pbx.database, "SELECT * FROM calls WHERE hangup_cause = 'transferred'",
                        count=1)[-1]
    assert consult["caller_user"] == "bob" and consult["callee_user"] == "carol"


@pytest.mark.asyncio
async def test_blind_transfer_to_unregistered_user_keeps_the_call(pbx: PbxProcess) -> None:
    async with three_phones(pbx) as (alice, bob, _carol):
        await bob.transfer(f"sip:199@{pbx.address}")
        failed = await bob.wait_for("transfer_failed", timeout=15)
        assert failed is not None
        # The call goes on: bob takes it off hold and they hear each other again.
        for _ in range(20):  # the stack refuses while its own hold re-INVITE is in flight
            try:
                await bob.resume()
                break
            except Exception:
                await asyncio.sleep(0.25)
        assert abs(await alice.received_frequency(expect=BOB_HZ, timeout=10) - BOB_HZ) <= 20
        await bob.hangup()
        await alice.wait_for("closed", timeout=10)


@pytest.mark.asyncio
async def test_blind_transfer_refused_by_target_returns_the_call(pbx: PbxProcess) -> None:
    async with three_phones(pbx) as (alice, bob, carol):
        transfer = asyncio.create_task(bob.transfer(f"sip:{USERS['carol'][0]}@{pbx.address}"))
        await carol.wait_for("incoming", timeout=10)
        await carol.reject()
        await transfer
        failed = await bob.wait_for("transfer_failed", timeout=15)
        assert "486" in str(failed)
        for _ in range(20):
            try:
                await bob.resume()
                break
            except Exception:
                await asyncio.sleep(0.25)
        assert abs(await alice.received_frequency(expect=BOB_HZ, timeout=10) - BOB_HZ) <= 20
        assert abs(await bob.received_frequency(expect=ALICE_HZ, timeout=10) - ALICE_HZ) <= 20
        await alice.hangup()
        await bob.wait_for("closed", timeout=10)
