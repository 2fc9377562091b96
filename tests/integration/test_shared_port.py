"""The PBX with ``media.shared_port``: every call's RTP through one UDP port, audio both ways
and the stereo recording as with per-call ports."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.integration.db import wait_rows
from tests.integration.pbx_process import USERS, run_pbx
from tests.peers.phone_driver import Phone

pytestmark = pytest.mark.integration


def _dominant(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.asyncio
async def test_call_through_the_shared_port_is_heard_and_recorded(tmp_path: Path) -> None:
    a_ext, a_pw, _ = USERS["alice"]
    b_ext, b_pw, _ = USERS["bob"]
    with run_pbx(tmp_path, extra_top="recording:\n  enabled: true\n",
                 extra_media="  shared_port: true\n") as pbx:
        async with Phone.start(name="alice") as alice, Phone.start(name="bob") as bob:
            await alice.register(pbx.address, a_ext, a_pw, domain="pbx.test")
            await bob.register(pbx.address, b_ext, b_pw, domain="pbx.test")
            await alice.tone(600)
            await bob.tone(1000)
            await alice.dial(f"sip:{b_ext}@{pbx.address}")
            await bob.wait_for("incoming", timeout=10)
            await bob.answer()
            await alice.wait_for("established", timeout=10)
            assert abs(await bob.received_frequency(expect=600, timeout=10) - 600) <= 20
            assert abs(await alice.received_frequency(expect=1000, timeout=10) - 1000) <= 20
            await asyncio.sleep(2.0)
            await alice.hangup()
            await bob.wait_for("closed", timeout=10)
        rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE recording_path IS NOT NULL")[0]
    audio, rate = sf.read(Path(rec["recording_path"]), dtype="int16")
    mid = audio[int(0.5 * rate): len(audio) - int(0.5 * rate)]
    assert abs(_dominant(mid[:, 0], rate) - 600) <= 10
    assert abs(_dominant(mid[:, 1], rate) - 1000) <= 10
