"""Call recordings as the call controller drives them: start, pause, resume, a new far phone,
stop; one stereo file per call with one timeline."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from media.g711 import alaw_encode, ulaw_encode
from media.relay import Leg, PortAllocator
from media.transcode import Transcoding
from media.udp import RelayHandle, RtpRelay
from pbx.recording import Recordings

RATE = 8000


class _Phone:
    """A loopback phone sending a steady level, paced at 20 ms like a real one."""

    def __init__(self, ssrc: int, pt: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.ssrc = ssrc
        self.pt = pt
        self.seq = random.randrange(1 << 16)
        self.ts = random.randrange(1 << 32)

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()  # type: ignore[no-any-return]

    def send(self, port: int, level: int) -> None:
        pcm = np.full(160, level, dtype=np.int16)
        payload = alaw_encode(pcm) if self.pt == 8 else ulaw_encode(pcm)
        header = struct.pack("!BBHII", 0x80, self.pt, self.seq, self.ts, self.ssrc)
        self.sock.sendto(header + payload, ("127.0.0.1", port))
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 160) & 0xFFFFFFFF

    def drain(self) -> None:
        for _ in range(10_000):
            try:
                self.sock.recv(2048)
            except BlockingIOError:
                return

    def close(self) -> None:
        self.sock.close()


async def _talk(handle: RelayHandle, pairs: list[tuple[_Phone, Leg, int]], seconds: float,
                recordings: Recordings | None = None) -> None:
    """Every phone sends its level for ``seconds``; the recordings tick every 100 ms."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(round(seconds / 0.02)):
        for phone, leg, level in pairs:
            phone.send(handle.port(leg), level)
            phone.drain()
        if recordings is not None and n % 5 == 4:
            recordings.tick(loop.time())
        await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - loop.time()))


def _read(path: str) -> np.ndarray:
    audio, rate = sf.read(path, dtype="int16")
    assert rate == RATE and audio.shape[1] == 2
    return audio  # type: ignore[no-any-return]


@pytest.fixture
def relay_session() -> Callable[[], RtpRelay]:
    def make() -> RtpRelay:
        lo = random.randrange(20000, 60000, 2)
        return RtpRelay(PortAllocator(lo, lo + 63))

    return make


@pytest.mark.asyncio
async def test_pause_resume_and_a_new_far_phone_keep_one_file_and_one_timeline(
    tmp_path: Path, relay_session: Callable[[], RtpRelay]
) -> None:
    relay = relay_session()
    handle = await relay.open_session("127.0.0.1")
    caller, callee, transferee = _Phone(1), _Phone(2), _Phone(3, pt=8)
    recordings = Recordings(tmp_path, "wav")
    loop = asyncio.get_running_loop()
    try:
        handle.set_remote(Leg.A, caller.address)
        handle.set_remote(Leg.B, callee.address)
        t0 = loop.time()
        path = recordings.start("call-1", handle, t0)
        assert path is not None and path.suffix == ".wav" and tmp_path in path.parents
        assert recordings.start("call-1", handle, t0 + 0.1) == path  # already recording
        assert recordings.is_recording("call-1") and not recordings.is_paused("call-1")
        assert not recordings.is_recording("other") and not recordings.is_paused("other")

        await _talk(handle, [(caller, Leg.A, 1000), (callee, Leg.B, 2000)], 1.0, recordings)
        assert recordings.pause("call-1", loop.time())
        assert not recordings.pause("call-1", loop.time())
        assert recordings.is_paused("call-1")
        t_pause = loop.time() - t0
        # A card number read while paused: neither party's audio of this second is kept.
        await _talk(handle, [(caller, Leg.A, 9000), (callee, Leg.B, 9000)], 1.0, recordings)
        assert recordings.resume("call-1", loop.time())
        assert not recordings.resume("call-1", loop.time())
        t_resume = loop.time() - t0
        await _talk(handle, [(caller, Leg.A, 1000), (callee, Leg.B, 2000)], 0.6, recordings)
        # The call controller replaces the callee (a transfer): same relay session, the leg
        # gets the new phone's address and its codec (A-law, transcoded for the caller).
        handle.set_remote(Leg.B, transferee.address)
        handle.set_transcoding(Leg.B, Transcoding.between(8, 0))
        handle.set_transcoding(Leg.A, Transcoding.between(0, 8))
        t_switch = loop.time() - t0
        await _talk(handle, [(caller, Leg.A, 1000), (transferee, Leg.B, -3000)], 1.0, recordings)
        elapsed = loop.time() - t0
        stopped = recordings.stop("call-1")
        assert stopped is not None
        assert stopped[0] == str(path)
        assert recordings.stop("call-1") is None
        assert not recordings.is_recording("call-1") and not recordings.pause("call-1", 0.0)
        await asyncio.wrap_future(recordings.close())
    finally:
        recordings.shutdown()
        await relay.close()
        for phone in (caller, callee, transferee):
            phone.close()

    audio = _read(stopped[0])
    seconds = len(audio) / RATE
    assert abs(seconds - stopped[1]) < 0.01
    assert abs(seconds - elapsed) < 0.15  # one timeline: the file is as long as the call

    def span(a: float, b: float) -> np.ndarray:
        return audio[int(a * RATE) : int(b * RATE)]

    before = span(0.2, t_pause - 0.1)
    assert np.median(before[:, 0]) > 900 and np.median(before[:, 1]) > 1900
    paused = span(t_pause + 0.05, t_resume - 0.05)
    assert not paused.any()  # silence on both channels, nothing of the 9000 level
    assert (np.abs(audio) < 8000).all()
    after = span(t_resume + 0.1, t_switch - 0.05)
    assert np.median(after[:, 0]) > 900 and np.median(after[:, 1]) > 1900
    new = span(t_switch + 0.15, elapsed - 0.1)
    assert np.median(new[:, 0]) > 900
    assert np.median(new[:, 1]) < -2900  # the new phone, on the same channel, in order


@pytest.mark.asyncio
async def test_tick_inside_the_loop_handles_every_call_in_slices(
    tmp_path: Path, relay_session: Callable[[], RtpRelay]
) -> None:
    relay = relay_session()
    handles = [await relay.open_session("127.0.0.1") for _ in range(6)]
    recordings = Recordings(tmp_path, "flac")
    loop = asyncio.get_running_loop()
    phones = [_Phone(10 + n) for n in range(6)]
    try:
        for n, (handle, phone) in enumerate(zip(handles, phones, strict=True)):
            handle.set_remote(Leg.A, phone.address)
            handle.set_remote(Leg.B, ("127.0.0.1", 9))  # discard
            assert recordings.start(f"c{n}", handle, loop.time()) is not None
        assert len(recordings) == 6
        for _ in range(25):
            for handle, phone in zip(handles, phones, strict=True):
                phone.send(handle.port(Leg.A), 1500)
            await asyncio.sleep(0.02)
        recordings.tick(loop.time())
        for _ in range(50):  # the slices run on later loop iterations
            await asyncio.sleep(0)
        results = [recordings.stop(f"c{n}") for n in range(6)]
        await asyncio.wrap_future(recordings.close())
    finally:
        recordings.shutdown()
        await relay.close()
        for phone in phones:
            phone.close()
    for result in results:
        assert result is not None and result[0].endswith(".flac")
        audio = _read(result[0])
        assert abs(len(audio) / RATE - result[1]) < 0.01
        assert np.median(audio[800:, 0]) > 1400 and not audio[:, 1].any()


@pytest.mark.asyncio
async def test_a_file_that_cannot_be_created_is_no_recording(
    tmp_path: Path, relay_session: Callable[[], RtpRelay]
) -> None:
    relay = relay_session()
    handle = await relay.open_session("127.0.0.1")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    recordings = Recordings(blocker, "wav")
    try:
        assert recordings.start("c", handle, 0.0) is None
        assert not recordings.is_recording("c")
        assert not recordings.resume("c", 1.0)
        assert recordings.stop("c") is None
    finally:
        recordings.shutdown()
        await relay.close()


@pytest.mark.asyncio
async def test_a_download_right_after_the_end_waits_for_the_whole_file(
    tmp_path: Path, relay_session: Callable[[], RtpRelay]
) -> None:
    relay = relay_session()
    handle = await relay.open_session("127.0.0.1")
    caller = _Phone(21)
    recordings = Recordings(tmp_path, "wav")
    loop = asyncio.get_running_loop()
    gate = asyncio.Event()
    try:
        handle.set_remote(Leg.A, caller.address)
        handle.set_remote(Leg.B, ("127.0.0.1", 9))
        assert recordings.start("c", handle, loop.time()) is not None
        await _talk(handle, [(caller, Leg.A, 1000)], 1.5, recordings)
        # The writer thread is busy (a slow disk): the file is not finished at the call's end.
        recordings._writer.submit(lambda: asyncio.run_coroutine_threadsafe(
            gate.wait(), loop).result(5))
        result = recordings.stop("c")
        assert result is not None
        path, seconds = result
        waiting = asyncio.create_task(recordings.finished(path))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        gate.set()
        await asyncio.wait_for(waiting, 5)
        assert abs(len(_read(path)) / RATE - seconds) < 0.01
        await recordings.finished(path)  # finished already: returns at once
        await recordings.finished(str(tmp_path / "never-recorded.wav"))
    finally:
        gate.set()
        recordings.shutdown()
        await relay.close()
        caller.close()


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="wav' or 'flac"):
        Recordings(tmp_path, "mp3")
