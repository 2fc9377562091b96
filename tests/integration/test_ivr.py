"""A caller walking a three-level IVR reached through a DID, landing at the right phone.

With RFC 4733 keys from a baresip phone (audio checked both ways once connected) and with
in-band tones from SIPp playing a G.711 capture for a user whose ``dtmf_mode`` is ``inband``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from media.g711 import ulaw_encode
from tests.integration.db import wait_rows
from tests.integration.pbx_process import PbxProcess, run_pbx
from tests.integration.pcapgen import rtp_packets, write_pcap
from tests.integration.test_ring_groups import USERS, member
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.integration.test_sipp_edge import _record, _why, trace
from tests.media.dtmf_signals import dual_tone
from tests.peers.phone_driver import Phone
from tests.peers.sipp import SippRun, run_sipp

pytestmark = pytest.mark.integration

ROUTING = """\
dialplan:
  region: JP
numbers:
  - number: "03-1234-5678"
    type: local
    route: {ivr: main}
ivr:
  main:
    welcome: {text: "Welcome."}
    timeout: 4s
    options:
      "1": {label: Sales, route: {user: bob}}
      "2":
        label: Support
        menu:
          options:
            "1":
              label: Billing
              menu:
                options:
                  "3": {label: Invoices, route: {user: carol}}
"""
SCENARIO = Path(__file__).parent / "scenarios" / "uac_pcap_then_moved.xml"


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with run_pbx(tmp_path_factory.mktemp("ivr"), SIPP_AUTH, users=USERS, extra_top=ROUTING,
                 user_extra={"frank": "    dtmf_mode: inband\n"}) as p:
        yield p


@pytest.mark.asyncio
async def test_rfc4733_caller_walks_three_levels_to_the_right_phone(pbx: PbxProcess) -> None:
    async with Phone.start(name="alice") as alice, Phone.start(name="carol") as carol:
        for phone, user in ((alice, "alice"), (carol, "carol")):
            ext, pw, _ = USERS[user]
            await phone.register(pbx.address, ext, pw, domain="pbx.test")
        await alice.tone(600)
        await carol.tone(1400)
        await alice.dial(f"sip:0312345678@{pbx.address}")
        await alice.wait_for("established", timeout=10)
        await asyncio.sleep(0.5)
        await alice.send_dtmf("213")
        incoming = await carol.wait_for("incoming", timeout=15)
        assert "Alice" in str(incoming)
        await carol.answer()
        heard = await carol.received_frequency(expect=600, timeout=10)
        assert abs(heard - 600) <= 20
        assert abs(await alice.received_frequency(expect=1400, timeout=10) - 1400) <= 20
        await alice.hangup()
        await carol.wait_for("closed", timeout=10)
    rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE answered_by = 'carol' AND "
                    "ended_at IS NOT NULL AND caller_user = 'alice'", count=1)[-1]
    assert rec["keys"] == "213" and rec["to_number"] == "0312345678"
    assert rec["disposition"] == "answered" and rec["hangup_by"] == "caller"


@pytest.mark.asyncio
async def test_inband_caller_walks_three_levels_to_the_right_phone(pbx: PbxProcess,
                                                                   tmp_path: Path) -> None:
    gap = np.zeros(1600, dtype=np.int16)
    pcm = np.concatenate([np.zeros(4000, dtype=np.int16), dual_tone("2", 200), gap,
                          dual_tone("1", 200), gap, dual_tone("3", 200),
                          np.zeros(16000, dtype=np.int16)])
    pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % 160, dtype=np.int16)])
    pcap = write_pcap(tmp_path / "keys.pcap", rtp_packets(
        [ulaw_encode(pcm[i:i + 160]) for i in range(0, len(pcm), 160)]))
    scenario = tmp_path / "uac_play_pcap.xml"
    scenario.write_text(SCENARIO.read_text().replace("PCAP_PATH", str(pcap))
                        .replace("HOLD_MS", "1000"))
    async with member(pbx, "carol", "uas_answer.xml") as carol:
        res = await run_sipp(SippRun(
            str(scenario), pbx.address, users=[(USERS["frank"][0], USERS["frank"][1])],
            service="0312345678", keys={"domain": pbx.address}, timeout=30,
            auto_answer=False))
        got = await carol.wait(10)
    assert res.ok, _why(res, got, pbx=pbx)
    assert got.ok, _why(got, pbx=pbx)
    assert [m for m in trace(got.messages) if m.method == "INVITE" and not m.sent]
    rec = _record(pbx, res)
    assert rec["answered_by"] == "carol" and rec["keys"] == "213"


@pytest.mark.asyncio
async def test_invalid_key_replays_the_menu_and_a_valid_one_still_connects(
        pbx: PbxProcess) -> None:
    async with Phone.start(name="alice") as alice, Phone.start(name="bob") as bob:
        for phone, user in ((alice, "alice"), (bob, "bob")):
            ext, pw, _ = USERS[user]
            await phone.register(pbx.address, ext, pw, domain="pbx.test")
        await alice.dial(f"sip:+81312345678@{pbx.address}")
        await alice.wait_for("established", timeout=10)
        await alice.send_dtmf("9")  # no option 9: "not a valid choice", then the menu again
        await asyncio.sleep(1.0)
        assert not bob.seen("incoming")
        await alice.send_dtmf("1")
        await bob.wait_for("incoming", timeout=15)
        await bob.answer()
        await asyncio.sleep(0.5)
        await bob.hangup()
        await alice.wait_for("closed", timeout=10)
    rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE answered_by = 'bob' AND "
                    "ended_at IS NOT NULL AND caller_user = 'alice'", count=1)[-1]
    assert rec["keys"] == "91" and rec["hangup_by"] == "callee"
