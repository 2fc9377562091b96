"""A queue's caps with many callers at once, driven by SIPp over real sockets.

At most ``max_callers`` wait (the next caller goes to ``on_full``, even when they all arrive
together or while places are being freed and taken at once), nobody waits longer than
``max_wait`` (then ``on_timeout``, or a polite message and the PBX hangs up), and the exit key
leaves the queue for ``on_exit``. What the callers hear is checked on RTP sent to a sink of the
test's own; the waiting count through the HTTP API; what became of each caller in the call
records.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import soundfile  # type: ignore[import-untyped]

from media.g711 import ulaw_decode
from tests.integration.db import wait_rows
from tests.integration.pbx_process import API_KEY, PbxProcess, run_pbx
from tests.integration.test_ring_groups import USERS, member
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.integration.test_sipp_edge import Traced, _one, _record, _scenario, _why, trace
from tests.peers.audio import dominant_frequency, rms
from tests.peers.ports import LOOPBACK
from tests.peers.sipp import SippProcess, SippResult, SippRun, run_sipp, start_sipp

pytestmark = pytest.mark.integration

BIG = "0312345610"
BRIEF = "0312345611"
POLITE = "0312345612"
EXIT = "0312345613"
MUSIC_HZ = 440.0

# Dave and erin never register in this module: dave is the queues' only agent (so nobody is
# ever offered a caller and they wait), erin the user on_full names (480 at once).
ROUTING = """\
dialplan:
  region: JP
numbers:
  - number: "03-1234-5610"
    type: local
    route: {queue: big}
  - number: "03-1234-5611"
    type: local
    route: {queue: brief}
  - number: "03-1234-5612"
    type: local
    route: {queue: polite}
  - number: "03-1234-5613"
    type: local
    route: {queue: exit}
queues:
  big:
    members: [dave]
    max_callers: 25
    music: {file: MUSIC}
    on_full: {user: erin}
  brief:
    members: [dave]
    max_wait: 3s
    on_timeout: {user: carol}
  polite:
    members: [dave]
    max_wait: 3s
    music: {file: MUSIC}
  exit:
    members: [dave]
    exit_key: "0"
    on_exit: {user: carol}
"""


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    work = tmp_path_factory.mktemp("queue_caps")
    music = work / "music.wav"
    t = np.arange(8000 * 3) / 8000.0
    soundfile.write(music, (0.4 * np.sin(2 * np.pi * MUSIC_HZ * t)).astype(np.float32), 8000)
    with run_pbx(work, SIPP_AUTH, users=USERS,
                 extra_top=ROUTING.replace("MUSIC", str(music))) as p:
        yield p


# -- helpers ---------------------------------------------------------------------------------


class RtpSink(asyncio.DatagramProtocol):
    """A UDP socket the callers' SDP points at: the PBX's RTP per sending address, with the
    local arrival time of each packet."""

    def __init__(self) -> None:
        self.packets: dict[tuple[str, int], list[tuple[float, int, bytes]]] = {}
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) >= 12 and data[0] >> 6 == 2:  # RTP version 2 (RFC 3550 5.1)
            self.packets.setdefault(addr, []).append((time.monotonic(), data[1] & 0x7F,
                                                      data[12:]))

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    def audio(self, source: tuple[str, int], start: float = 0.0,
              end: float = float("inf")) -> npt.NDArray[np.int16]:
        """The PCMU audio from ``source`` that arrived between ``start`` and ``end`` seconds
        after its first packet."""
        got = self.packets[source]
        first = got[0][0]
        frames = [payload for at, pt, payload in got if pt == 0 and start <= at - first < end]
        if not frames:
            return np.zeros(0, dtype=np.int16)
        return np.asarray(ulaw_decode(b"".join(frames)), dtype=np.int16)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@contextlib.asynccontextmanager
async def rtp_sink() -> AsyncIterator[RtpSink]:
    loop = asyncio.get_running_loop()
    _, sink = await loop.create_datagram_endpoint(RtpSink, local_addr=(LOOPBACK, 0))
    try:
        yield sink
    finally:
        sink.close()


async def _started(stack: contextlib.AsyncExitStack, run: SippRun) -> SippProcess:
    """SIPp started in the background, stopped (by PID) when ``stack`` closes unless it has
    finished by then."""
    return await stack.enter_async_context(await start_sipp(run))


def tone_share(samples: npt.NDArray[np.int16], freq: float) -> float:
    """The share of the signal's energy within 15 Hz of ``freq`` (1.0: a pure tone)."""
    data = samples.astype(np.float64)
    spectrum = np.abs(np.fft.rfft((data - data.mean()) * np.hanning(data.size))) ** 2
    bins = np.fft.rfftfreq(data.size, 1 / 8000)
    total = float(spectrum[1:].sum())
    return float(spectrum[np.abs(bins - freq) <= 15].sum()) / total if total else 0.0


def _api(pbx: PbxProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=pbx.api, headers={"X-API-Key": API_KEY}, timeout=5.0)


async def _until(pbx: PbxProcess, queue: str, check: Callable[[dict[str, Any]], bool],
                 timeout: float = 8.0) -> dict[str, Any]:
    """Poll GET /queues/{queue} until ``check`` holds on its live figures."""
    deadline = time.monotonic() + timeout
    live: dict[str, Any] = {}
    async with _api(pbx) as api:
        while time.monotonic() < deadline:
            got = await api.get(f"/queues/{queue}")
            assert got.status_code == 200, got.text
            live = got.json()["live"]
            if check(live):
                return live
            await asyncio.sleep(0.1)
    raise AssertionError(f"queue {queue}: live figures stayed {live}\n{pbx.log_text()[-3000:]}")


async def _interval(pbx: PbxProcess, queue: str) -> dict[str, Any]:
    """The queue's interval counters (GET /queues/{queue}; reading does not reset them)."""
    async with _api(pbx) as api:
        got = await api.get(f"/queues/{queue}")
    assert got.status_code == 200, got.text
    figures: dict[str, Any] = got.json()["interval"]
    return figures


def _grew(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    return {key: after[key] - before[key]
            for key in ("offered", "answered", "abandoned", "overflowed")}


async def _waiting_list(pbx: PbxProcess, queue: str) -> list[dict[str, Any]]:
    async with _api(pbx) as api:
        got = await api.get(f"/queues/{queue}/calls")
    assert got.status_code == 200, got.text
    calls: list[dict[str, Any]] = got.json()
    return calls


def _caller(pbx: PbxProcess, scenario: str, number: str, *, calls: int = 1,
            hold_ms: int = 500, sink: RtpSink | None = None, timeout: float = 30.0,
            rate: float = 100.0) -> SippRun:
    """Alice's SIPp dialling ``number`` ``calls`` times, ``rate`` calls a second."""
    ext, pw, _ = USERS["alice"]
    keys = {"domain": pbx.address}
    if sink is not None:
        keys |= {"sink_ip": LOOPBACK, "sink_port": str(sink.port)}
    return SippRun(_scenario(scenario), pbx.address, users=[(ext, pw)], service=number,
                   keys=keys, calls=calls, rate=rate if calls > 1 else None,
                   limit=calls if calls > 1 else None, duration_ms=hold_ms, timeout=timeout,
                   auto_answer=False)


def _logged(res: SippResult, word: str) -> list[str]:
    """The Call-IDs the scenario logged with ``word`` (``queued`` or ``full``)."""
    return [line.split()[1] for line in res.logs.splitlines()
            if line.startswith(word + " ") and len(line.split()) == 2]


def _of_call(msgs: list[Traced], call_id: str) -> list[Traced]:
    return [m for m in msgs if m.header("Call-ID") == call_id]


def _records(pbx: PbxProcess, call_ids: list[str]) -> list[dict[str, Any]]:
    marks = ",".join("?" * len(call_ids))
    return wait_rows(pbx.database, f"SELECT * FROM calls WHERE sip_call_id IN ({marks}) "
                     "AND ended_at IS NOT NULL", *call_ids, count=len(call_ids), timeout=10,
                     where=pbx.log_text()[-2000:])


def _turned_away(pbx: PbxProcess, res: SippResult, call_id: str) -> None:
    """The caller got 480 from on_full's user without ever being answered, and was never
    counted in the queue."""
    mine = _of_call(trace(res.messages), call_id)
    finals = [m.status for m in mine if not m.sent and m.status is not None
              and m.status >= 200 and m.cseq_method == "INVITE"]
    assert finals[-1:] == [480] and 200 not in finals, _why(res, pbx=pbx)
    (rec,) = _records(pbx, [call_id])
    assert rec["answered_at"] is None and rec["disposition"] != "answered"
    # Never waited: no queue in the record, or (CallQueued's documented "full") the queue
    # that turned them away.
    assert (rec["queue"], rec["queue_result"]) in ((None, None), ("big", "full")), rec


def _waited(pbx: PbxProcess, call_ids: list[str], low: float, high: float) -> None:
    """Each caller waited in queue big between ``low`` and ``high`` seconds and hung up."""
    for rec in _records(pbx, call_ids):
        assert rec["queue"] == "big" and rec["queue_result"] == "abandoned", rec
        assert low <= rec["queue_wait"] <= high, rec
        assert rec["answered_by"] is None and rec["hangup_by"] == "caller", rec


# -- max_callers -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_26_callers_at_once_25_wait_with_music_the_26th_goes_to_on_full(
        pbx: PbxProcess) -> None:
    await _until(pbx, "big", lambda live: live["waiting"] == 0)
    counted = await _interval(pbx, "big")
    hold = 6.0
    async with rtp_sink() as sink, contextlib.AsyncExitStack() as stack:
        proc = await _started(stack, _caller(pbx, "uac_queue_wait_or_full.xml", BIG, calls=26,
                                             hold_ms=int(hold * 1000), sink=sink))
        await _until(pbx, "big", lambda live: live["waiting"] == 25)
        await asyncio.sleep(1.5)  # nobody else got in meanwhile, nobody dropped out
        await _until(pbx, "big", lambda live: live["waiting"] == 25, timeout=0.5)
        waiting = await _waiting_list(pbx, "big")
        res = await proc.wait(30)
    assert res.ok, _why(res, pbx=pbx)
    queued, full = _logged(res, "queued"), _logged(res, "full")
    assert len(queued) == 25 and len(set(queued)) == 25 and len(full) == 1, res.logs
    assert [c["position"] for c in waiting] == list(range(1, 26))
    assert all(c["caller_number"] == "101" for c in waiting)
    # Every waiting caller heard the queue's music on its own stream; the 26th heard nothing.
    streams = {src: got for src, got in sink.packets.items() if len(got) >= 100}
    assert len(streams) == 25, {src: len(got) for src, got in sink.packets.items()}
    for source in streams:
        audio = sink.audio(source, 0.5, 2.5)
        assert abs(dominant_frequency(audio) - MUSIC_HZ) <= 5 and rms(audio) > 1000, source
    _turned_away(pbx, res, full[0])
    _waited(pbx, queued, hold - 1.5, hold + 0.5)
    await _until(pbx, "big", lambda live: live["waiting"] == 0)
    assert _grew(counted, await _interval(pbx, "big")) == {
        "offered": 26, "answered": 0, "abandoned": 25, "overflowed": 1}


@pytest.mark.asyncio
async def test_a_place_freed_while_two_arrive_together_admits_exactly_one(
        pbx: PbxProcess) -> None:
    await _until(pbx, "big", lambda live: live["waiting"] == 0)
    counted = await _interval(pbx, "big")
    async with rtp_sink() as sink, contextlib.AsyncExitStack() as stack:
        stay = await _started(stack, _caller(pbx, "uac_queue_wait_or_full.xml", BIG, calls=24,
                                             hold_ms=11000, sink=sink))
        leave = await _started(stack, _caller(pbx, "uac_queue_wait_or_full.xml", BIG,
                                              hold_ms=2000, sink=sink))
        await _until(pbx, "big", lambda live: live["waiting"] == 25)
        left = await leave.wait(15)
        await _until(pbx, "big", lambda live: live["waiting"] == 24)
        late = await _started(stack, _caller(pbx, "uac_queue_wait_or_full.xml", BIG, calls=2,
                                             hold_ms=2000, sink=sink))
        await _until(pbx, "big", lambda live: live["waiting"] == 25)
        two = await late.wait(15)
        await _until(pbx, "big", lambda live: live["waiting"] == 24)
        stayed = await stay.wait(30)
    for res in (left, two, stayed):
        assert res.ok, _why(res, pbx=pbx)
    assert len(_logged(stayed, "queued")) == 24 and not _logged(stayed, "full"), stayed.logs
    assert len(_logged(left, "queued")) == 1, left.logs
    # Of the two who came together for the one free place, one waits, one goes to on_full.
    assert len(_logged(two, "queued")) == 1 and len(_logged(two, "full")) == 1, two.logs
    _turned_away(pbx, two, _logged(two, "full")[0])
    _waited(pbx, _logged(left, "queued") + _logged(two, "queued"), 1.0, 2.5)
    _waited(pbx, _logged(stayed, "queued"), 9.5, 11.5)
    # 26 callers were let in over the test, each on a stream of music of its own.
    assert len([got for got in sink.packets.values() if len(got) >= 50]) == 26
    await _until(pbx, "big", lambda live: live["waiting"] == 0)
    assert _grew(counted, await _interval(pbx, "big")) == {
        "offered": 27, "answered": 0, "abandoned": 26, "overflowed": 1}


async def _watch(pbx: PbxProcess, queue: str, seen: list[int], stop: asyncio.Event) -> None:
    """Record the queue's waiting count every 50 ms until ``stop``."""
    async with _api(pbx) as api:
        while not stop.is_set():
            got = await api.get(f"/queues/{queue}")
            seen.append(got.json()["live"]["waiting"])
            await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_departures_racing_arrivals_never_let_more_than_25_wait(pbx: PbxProcess) -> None:
    # Three waiting callers hang up just as five new ones arrive: whichever the PBX sees
    # first, no more callers get in than places were freed, and the rest go to on_full.
    await _until(pbx, "big", lambda live: live["waiting"] == 0)
    counted = await _interval(pbx, "big")
    seen: list[int] = []
    async with rtp_sink() as sink, contextlib.AsyncExitStack() as stack:
        stop = asyncio.Event()
        watcher = asyncio.create_task(_watch(pbx, "big", seen, stop))
        stack.push_async_callback(asyncio.wait_for, watcher, 5.0)
        stack.callback(stop.set)
        stay = await _started(stack, _caller(pbx, "uac_queue_wait_or_full.xml", BIG, calls=22,
                                             hold_ms=10000, sink=sink))
        await _until(pbx, "big", lambda live: live["waiting"] == 22)
        leave = await _started(stack, _caller(pbx, "uac_queue_wait_or_full.xml", BIG, calls=3,
                                              hold_ms=2500, sink=sink))
        await _until(pbx, "big", lambda live: live["waiting"] == 25)
        # The leavers hang up 2.5 s after their answer; the newcomers' INVITEs (one every
        # 50 ms) go out from about 0.1 s before that until 0.1 s after.
        await asyncio.sleep(2.5 - 0.45)
        late = await _started(stack, _caller(pbx, "uac_queue_wait_or_full.xml", BIG, calls=5,
                                             hold_ms=1500, sink=sink, rate=20))
        came = await late.wait(15)
        left = await leave.wait(15)
        await _until(pbx, "big", lambda live: live["waiting"] == 22)
        stayed = await stay.wait(30)
    for res in (stayed, left, came):
        assert res.ok, _why(res, pbx=pbx)
    assert len(_logged(stayed, "queued")) == 22 and len(_logged(left, "queued")) == 3
    admitted, refused = _logged(came, "queued"), _logged(came, "full")
    assert len(admitted) + len(refused) == 5 and len(admitted) <= 3, came.logs
    assert len(refused) >= 2
    # A place is freed only by a BYE: nobody whose INVITE went out before the first leaver's
    # BYE can have got in (both SIPps stamp their traces with the same clock).
    first_bye = min(m.at for m in trace(left.messages) if m.sent and m.method == "BYE")
    for call_id in admitted:
        (invite,) = [m for m in _of_call(trace(came.messages), call_id)
                     if m.sent and m.header("CSeq") == "2 INVITE"]
        assert invite.at > first_bye, (invite.at, first_bye)
    assert seen and max(seen) == 25, seen
    for call_id in refused:
        _turned_away(pbx, came, call_id)
    _waited(pbx, admitted, 0.5, 2.0)
    await _until(pbx, "big", lambda live: live["waiting"] == 0)
    assert _grew(counted, await _interval(pbx, "big")) == {
        "offered": 30, "answered": 0, "abandoned": 25 + len(admitted),
        "overflowed": len(refused)}


# -- max_wait --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_max_wait_sends_the_caller_on_to_the_on_timeout_route(pbx: PbxProcess) -> None:
    async with member(pbx, "carol", "uas_answer.xml") as carol:
        res = await run_sipp(_caller(pbx, "uac_queue_moved.xml", BRIEF, hold_ms=500))
        got = await carol.wait(10)
    assert res.ok, _why(res, got, pbx=pbx)
    assert got.ok, _why(got, pbx=pbx)
    answered = _one(trace(res.messages), sent=False, status=200, cseq="INVITE")
    rang = _one(trace(got.messages), sent=False, method="INVITE")
    # Carol's phone rings once the caller has waited max_wait (the queue looks every 0.25 s).
    waited = (rang.at - answered.at).total_seconds()
    assert 2.9 <= waited <= 3.8, waited
    rec = _record(pbx, res)
    assert rec["queue"] == "brief" and rec["queue_result"] == "timeout", rec
    assert 2.95 <= rec["queue_wait"] <= 3.4, rec
    assert rec["answered_by"] == "carol", rec


@pytest.mark.asyncio
async def test_max_wait_without_a_route_says_so_and_hangs_up(pbx: PbxProcess) -> None:
    async with rtp_sink() as sink:
        res = await run_sipp(_caller(pbx, "uac_queue_hung_up.xml", POLITE, sink=sink))
    assert res.ok, _why(res, pbx=pbx)
    msgs = trace(res.messages)
    answered = _one(msgs, sent=False, status=200, cseq="INVITE")
    bye = _one(msgs, sent=False, method="BYE")
    talked = (bye.at - answered.at).total_seconds()
    ((source, packets),) = sink.packets.items()
    heard = packets[-1][0] - packets[0][0]
    # Music until max_wait, then the message (speech, not the music's tone), then the BYE.
    music = sink.audio(source, 0.5, 2.8)
    assert tone_share(music, MUSIC_HZ) > 0.9, tone_share(music, MUSIC_HZ)
    message = sink.audio(source, 3.6, heard - 0.2)
    assert message.size >= 8000, (heard, talked)  # a second of it at least
    assert rms(message) > 300 and tone_share(message, MUSIC_HZ) < 0.2, (
        rms(message), tone_share(message, MUSIC_HZ))
    assert 3.0 + 1.0 <= talked <= 15.0 and abs(talked - heard) <= 1.0, (talked, heard)
    rec = _record(pbx, res)
    assert rec["queue"] == "polite" and rec["queue_result"] == "timeout", rec
    assert 2.95 <= rec["queue_wait"] <= 3.4, rec
    assert rec["answered_by"] is None and rec["hangup_by"] != "caller", rec


# -- exit key --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_exit_key_leaves_the_queue_for_the_on_exit_route(pbx: PbxProcess) -> None:
    counted = await _interval(pbx, "exit")
    async with (member(pbx, "carol", "uas_answer.xml") as carol,
                contextlib.AsyncExitStack() as stack):
        proc = await _started(stack, _caller(pbx, "uac_queue_exit_key.xml", EXIT, hold_ms=500))
        # Waiting in line until the key (pressed 2 s after the answer), gone right after.
        await _until(pbx, "exit", lambda live: live["waiting"] == 1, timeout=2.0)
        await _until(pbx, "exit", lambda live: live["waiting"] == 0, timeout=6.0)
        res = await proc.wait(30)
        got = await carol.wait(10)
    assert res.ok, _why(res, got, pbx=pbx)
    assert got.ok, _why(got, pbx=pbx)
    answered = _one(trace(res.messages), sent=False, status=200, cseq="INVITE")
    rang = _one(trace(got.messages), sent=False, method="INVITE")
    # Carol's phone rings right after the key, not before.
    assert 2.0 <= (rang.at - answered.at).total_seconds() <= 3.5
    rec = _record(pbx, res)
    assert rec["keys"] == "0" and rec["answered_by"] == "carol", rec
    assert rec["queue"] == "exit" and rec["queue_result"] == "exit", rec
    assert 1.5 <= rec["queue_wait"] <= 2.6, rec
    # The queue's own figures count a caller who left by the key as abandoned
    # (QueueState.leave), never as answered by carol.
    assert _grew(counted, await _interval(pbx, "exit")) == {
        "offered": 1, "answered": 0, "abandoned": 1, "overflowed": 0}
