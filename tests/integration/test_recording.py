"""Recorded calls: a stereo file whose channels carry each party's audio."""

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
    x = x.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.asyncio
async def test_answered_call_is_recorded_one_party_per_channel(tmp_path: Path) -> None:
    a_ext, a_pw, _ = USERS["alice"]
    b_ext, b_pw, _ = USERS["bob"]
    with run_pbx(tmp_path, extra_top="recording:\n  enabled: true\n") as pbx:
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
            await asyncio.sleep(2.5)
            await alice.hangup()
            await bob.wait_for("closed", timeout=10)
        rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE recording_path IS NOT NULL")[0]
    path = Path(rec["recording_path"])
    assert path.is_file() and path.suffix == ".wav"
    assert str(path).startswith(str(tmp_path))
    audio, rate = sf.read(path, dtype="int16")
    assert rate == 8000 and audio.shape[1] == 2
    seconds = len(audio) / rate
    assert abs(seconds - rec["recording_seconds"]) < 0.05
    assert abs(seconds - rec["duration"]) < 1.0
    # The caller's tone is on the left channel, the callee's on the right, each alone.
    mid = audio[int(0.5 * rate) : int(seconds * rate) - int(0.5 * rate)]
    assert abs(_dominant(mid[:, 0], rate) - 600) <= 10
    assert abs(_dominant(mid[:, 1], rate) - 1000) <= 10
    assert np.sqrt(np.mean(mid.astype(np.float64) ** 2, axis=0)).min() > 500
