"""The record key of a phone (INFO ``Record: off`` / ``Record: on``) pauses and resumes a call's
recording: the paused time is silence in the file, the timeline keeps running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from media.g711 import ulaw_encode
from tests.integration.pbx_process import PbxProcess, run_pbx
from tests.integration.pcapgen import rtp_packets, write_pcap
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.integration.test_sipp_edge import _record, _why, caller_run, phone
from tests.peers.sipp import run_sipp

pytestmark = pytest.mark.integration

SCENARIO = Path(__file__).parent / "scenarios" / "uac_record_key.xml"


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with run_pbx(tmp_path_factory.mktemp("reckey"), SIPP_AUTH,
                 extra_top="recording:\n  enabled: true\n") as p:
        yield p


def _tone_pcap(path: Path, hz: float, seconds: float) -> Path:
    t = np.arange(int(seconds * 8000)) / 8000
    pcm = (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    payloads = [ulaw_encode(pcm[i:i + 160]) for i in range(0, len(pcm) - 159, 160)]
    return write_pcap(path, rtp_packets(payloads))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0


@pytest.mark.asyncio
async def test_record_key_pauses_with_silence_and_resumes(pbx: PbxProcess, tmp_path: Path) -> None:
    pcap = _tone_pcap(tmp_path / "tone.pcap", 600.0, 8.0)
    text = (SCENARIO.read_text().replace("PCAP_PATH", str(pcap))
            .replace("PAUSE_MS", "2000").replace("HOLD_MS", "2000"))
    scenario = tmp_path / "uac_record_key.xml"
    scenario.write_text(text)
    async with phone(pbx, "bob", "uas_answer.xml") as bob:
        res = await run_sipp(caller_run(pbx, str(scenario), "102", timeout=30))
        await bob.wait(10)
    assert res.ok, _why(res, pbx=pbx)
    rec = _record(pbx, res)
    audio, rate = sf.read(Path(rec["recording_path"]), dtype="int16")
    left = audio[:, 0]
    seconds = len(left) / rate
    # One file, one timeline: as long as the call was recorded, pause included.
    assert abs(seconds - rec["recording_seconds"]) < 0.05
    assert abs(seconds - rec["duration"]) < 1.0
    # Talk for ~2 s, paused ~2 s, talk again ~2 s (0.5 s after the answer the capture starts).
    per_half = [_rms(left[i:i + rate // 2]) for i in range(0, len(left) - rate // 2, rate // 2)]
    loud = [r > 1000 for r in per_half]
    silent_run = max(len(run) for run in "".join("1" if v else "0" for v in loud).split("1"))
    assert silent_run >= 3, per_half  # at least 1.5 s of silence in the middle
    first = loud.index(True)
    assert any(loud[:first + 4]) and any(loud[-4:]), per_half
