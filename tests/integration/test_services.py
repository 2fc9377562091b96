"""The PBX answering calls itself: the key test (*44) and the echo test (*43).

Keys arrive three ways and give the same result: RFC 4733 telephone-events (SIPp playing its
own capture, and a baresip phone), and in-band tones in the G.711 audio (a capture made here,
for a user whose ``dtmf_mode`` is ``inband``). The PBX reads each key back, and the call record
keeps the keys pressed. The phones hear the PBX's prompts (energy checked) and, in the echo
test, their own tone coming back (frequency checked).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from media.g711 import ulaw_encode
from tests.integration.db import wait_rows
from tests.integration.pbx_process import USERS, PbxProcess, run_pbx
from tests.integration.pcapgen import rtp_packets, write_pcap
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.integration.test_sipp_edge import _record, _why, caller_run
from tests.media.dtmf_signals import SIPP_PCAPS, dual_tone
from tests.peers.phone_driver import Phone
from tests.peers.sipp import run_sipp

pytestmark = pytest.mark.integration

SCENARIO = Path(__file__).parent / "scenarios" / "uac_play_pcap.xml"


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with run_pbx(tmp_path_factory.mktemp("services"), SIPP_AUTH,
                 user_extra={"carol": "    dtmf_mode: inband\n"}) as p:
        yield p


def _scenario(tmp: Path, pcap: Path, hold_ms: int) -> str:
    text = SCENARIO.read_text().replace("PCAP_PATH", str(pcap)).replace("HOLD_MS", str(hold_ms))
    out = tmp / "uac_play_pcap.xml"
    out.write_text(text)
    return str(out)


def _keys_of(pbx: PbxProcess, number: str, caller: str) -> str | None:
    row = wait_rows(pbx.database, "SELECT * FROM calls WHERE to_number = ? AND caller_user = ? "
                    "AND ended_at IS NOT NULL", number, caller, where=pbx.log_text()[-2000:])[-1]
    assert row["disposition"] == "answered" and row["answered_by"] is None
    return row["keys"]


@pytest.mark.asyncio
@pytest.mark.parametrize("digit", ["1", "7"])
async def test_sipp_rfc4733_capture_is_heard_as_its_key(pbx: PbxProcess, tmp_path: Path,
                                                         digit: str) -> None:
    pcap = SIPP_PCAPS / f"dtmf_2833_{digit}.pcap"
    if not pcap.is_file():
        pytest.fail("SIPp's captures are missing: apt-get install sip-tester")
    res = await run_sipp(caller_run(pbx, _scenario(tmp_path, pcap, 1500), "*44"))
    assert res.ok, _why(res, pbx=pbx)
    rec = _record(pbx, res)
    assert rec["to_number"] == "*44" and rec["answered_by"] is None
    assert rec["keys"] == digit


@pytest.mark.asyncio
async def test_inband_tones_are_heard_as_keys_for_an_inband_user(pbx: PbxProcess,
                                                                  tmp_path: Path) -> None:
    # "4", a pause, "2": each 200 ms of the Q.23 pair at -10 dBm0 in µ-law, as a trunk sends.
    pcm = np.concatenate([
        np.zeros(8000, dtype=np.int16), dual_tone("4", 200), np.zeros(1600, dtype=np.int16),
        dual_tone("2", 200), np.zeros(1600, dtype=np.int16),
    ])
    pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % 160, dtype=np.int16)])
    payloads = [ulaw_encode(pcm[i:i + 160]) for i in range(0, len(pcm), 160)]
    pcap = write_pcap(tmp_path / "inband.pcap", rtp_packets(payloads))
    res = await run_sipp(caller_run(pbx, _scenario(tmp_path, pcap, 3000), "*44",
                                    caller="carol"))
    assert res.ok, _why(res, pbx=pbx)
    assert _record(pbx, res)["keys"] == "42"


@pytest.mark.asyncio
async def test_phone_hears_the_key_test_and_its_keys_read_back(pbx: PbxProcess) -> None:
    ext, pw, _ = USERS["bob"]
    async with Phone.start(name="bob") as bob:
        await bob.register(pbx.address, ext, pw, domain="pbx.test")
        await bob.dial(f"sip:*44@{pbx.address}")
        await bob.wait_for("established", timeout=10)
        # The spoken explanation: speech energy arrives within the first seconds.
        await _heard_speech(bob)
        await bob.send_dtmf("5")
        await asyncio.sleep(0.3)
        await _heard_speech(bob)  # "You pressed 5."
        await bob.send_dtmf("#")
        await asyncio.sleep(1.0)
        await bob.hangup()
        await bob.wait_for("closed", timeout=10)
    assert _keys_of(pbx, "*44", "bob") == "5#"


@pytest.mark.asyncio
async def test_echo_test_returns_the_callers_own_voice(pbx: PbxProcess) -> None:
    ext, pw, _ = USERS["alice"]
    async with Phone.start(name="alice") as alice:
        await alice.register(pbx.address, ext, pw, domain="pbx.test")
        await alice.dial(f"sip:*43@{pbx.address}")
        await alice.wait_for("established", timeout=10)
        await _heard_speech(alice)
        await alice.tone(700)
        heard = await alice.received_frequency(expect=700, timeout=20)
        assert abs(heard - 700) <= 20
        await alice.hangup()
        await alice.wait_for("closed", timeout=10)


async def _heard_speech(phone: Phone, timeout: float = 10.0) -> None:
    """Wait for a half second of received audio with speech-like energy."""
    deadline = asyncio.get_running_loop().time() + timeout
    seen = len(phone.seen("audio"))
    while asyncio.get_running_loop().time() < deadline:
        events = phone.seen("audio")[seen:]
        if any(float(e.get("rms", 0)) > 300 for e in events):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no speech heard: {phone.describe(12)}")
