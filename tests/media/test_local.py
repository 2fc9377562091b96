"""LocalMedia over real loopback sockets, paced by the real 20 ms engine clock: SIPp's RFC 4733
captures, in-band keys, hold music and speech that must not look like keys, prompt chains."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from media.digits import DigitEvent
from media.endpoint import LocalLeg
from media.g711 import PCMU
from media.local import LocalMedia
from media.playback import PlaybackEngine
from media.player import FrameQueue, SamplesSource, silence_source
from media.relay import NoPortsError, PortAllocator
from media.rtp import RtpPacket
from media.sources import default_hold_music, load_audio
from media.tts import TextToSpeech
from tests.media.dtmf_signals import SIPP_PCAPS, Pcm, dual_tone, pcap_udp_payloads
from tests.peers.ports import free_port_block

HOST = "127.0.0.1"
TE = 101


class _Phone(asyncio.DatagramProtocol):
    """A UDP socket standing in for a phone: records what it receives, with arrival times."""

    def __init__(self) -> None:
        self.received: list[tuple[float, bytes]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((asyncio.get_running_loop().time(), data))

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        name: tuple[str, int] = self.transport.get_extra_info("sockname")
        return name

    def send(self, data: bytes, dest: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, dest)


async def _phone() -> _Phone:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(_Phone, local_addr=(HOST, 0))
    return proto


class _Rig:
    """An engine, a port range, and the LocalMedia legs opened on them (closed at the end)."""

    def __init__(self) -> None:
        base = free_port_block(8)
        self.ports = PortAllocator(base, base + 7)
        self.engine = PlaybackEngine()
        self.media: list[LocalMedia] = []
        self.phones: list[_Phone] = []

    async def leg(
        self,
        mode: str = "auto",
        te: int | None = None,
        on_audio: Callable[[Pcm], None] | None = None,
    ) -> tuple[LocalMedia, list[DigitEvent]]:
        events: list[DigitEvent] = []
        media = await LocalMedia.open(self.ports, HOST, self.engine, LocalLeg(PCMU, te, mode),
                                      events.append, on_audio)
        self.media.append(media)
        return media, events

    async def phone(self) -> _Phone:
        phone = await _phone()
        self.phones.append(phone)
        return phone

    async def pair(self, mode: str = "auto", te: int | None = None,
                   on_audio: Callable[[Pcm], None] | None = None,
                   ) -> tuple[LocalMedia, LocalMedia, list[DigitEvent]]:
        """A sending leg (the 'phone', playing through the engine) wired to a receiving leg."""
        sender, _ = await self.leg()
        receiver, events = await self.leg(mode, te, on_audio)
        sender.set_remote((HOST, receiver.port))
        receiver.set_remote((HOST, sender.port))
        return sender, receiver, events

    async def close(self) -> None:
        for media in self.media:
            await media.close()
        for phone in self.phones:
            if phone.transport is not None:
                phone.transport.close()
        self.engine.close()


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[_Rig]:
    r = _Rig()
    try:
        yield r
    finally:
        await r.close()


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) until ``condition()`` holds: a loaded machine may run ticks late."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _play_to_end(media: LocalMedia, source: SamplesSource, timeout: float) -> None:
    done = asyncio.get_running_loop().create_future()
    media.play(source, on_done=lambda: done.set_result(None))
    await asyncio.wait_for(done, timeout)


def _silence(ms: int) -> Pcm:
    return np.zeros(ms * 8, dtype=np.int16)


# ---------------------------------------------------------------------------------------------
# (a) RFC 4733: SIPp's captures replayed at their own (20 ms) pacing


async def _replay(phone: _Phone, packets: list[tuple[float, bytes]], dest: tuple[str, int],
                  copies: int = 1) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    first = packets[0][0]
    for captured, data in packets:
        delay = start + (captured - first) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        for _ in range(copies):
            phone.send(data, dest)


@pytest.mark.asyncio
@pytest.mark.parametrize("name", [str(n) for n in range(10)] + ["star", "pound"])
async def test_sipp_capture_over_udp_gives_its_digit_once(rig: _Rig, name: str) -> None:
    path = SIPP_PCAPS / f"dtmf_2833_{name}.pcap"
    if not path.exists():
        pytest.fail("SIPp's pcaps are missing: apt-get install sip-tester")
    packets = pcap_udp_payloads(path)
    assert len(packets) == 10 and all(p[1] & 0x7F == TE for _, p in packets)
    media, events = await rig.leg("auto", TE)
    phone = await rig.phone()
    media.set_remote(phone.addr)
    # A network that duplicates every packet must not turn one press into two.
    await _replay(phone, packets, (HOST, media.port), copies=2 if name == "5" else 1)
    await asyncio.sleep(0.8)  # beyond the RFC 4733 receiver's 0.5 s timeout
    expected = {"star": "*", "pound": "#"}.get(name, name)
    assert [(e.digit, e.source, e.duration_ms) for e in events] == [(expected, "rfc4733", 280)]
    assert media.packets == 10 * (2 if name == "5" else 1)


@pytest.mark.asyncio
async def test_capture_from_a_foreign_source_is_ignored(rig: _Rig) -> None:
    media, events = await rig.leg("auto", TE)
    phone, intruder = await rig.phone(), await rig.phone()
    media.set_remote(phone.addr)
    phone.send(bytes(RtpPacket(payload_type=0, payload=b"\xff" * 160)), (HOST, media.port))
    await asyncio.sleep(0.05)
    assert media.latch.latched == phone.addr
    await _replay(intruder, pcap_udp_payloads(SIPP_PCAPS / "dtmf_2833_1.pcap"),
                  (HOST, media.port))
    await asyncio.sleep(0.7)
    assert events == [] and media.latch.dropped_foreign == 10


# ---------------------------------------------------------------------------------------------
# (b) In-band keys in a µ-law stream, (c) music and speech that must give none


@pytest.mark.asyncio
async def test_inband_keys_in_a_ulaw_stream_are_detected(rig: _Rig) -> None:
    sender, _, events = await rig.pair("auto", None)
    audio = np.concatenate([_silence(200), dual_tone("7", 100), _silence(150),
                            dual_tone("#", 60), _silence(150), dual_tone("#", 200),
                            _silence(300)])
    await _play_to_end(sender, SamplesSource(audio), 5.0)
    await _until(lambda: len(events) >= 3)
    await asyncio.sleep(0.2)
    assert [(e.digit, e.source) for e in events] == [("7", "inband"), ("#", "inband"),
                                                     ("#", "inband")]


def _hold_music(seconds: float) -> Pcm:
    source = default_hold_music()
    return np.concatenate([source.next_frame() for _ in range(round(seconds * 50))])


@pytest.mark.asyncio
async def test_hold_music_and_speech_give_no_digits_but_a_real_key_after_them(
    rig: _Rig, tmp_path: Path
) -> None:
    wav = await asyncio.to_thread(
        TextToSpeech(tmp_path).render,
        "Thank you for calling. Please hold, the next agent will be with you shortly.",
    )
    speech = await asyncio.to_thread(load_audio, wav)
    assert len(speech) > 3 * 8000
    music = await asyncio.to_thread(_hold_music, 5.0)
    heard: dict[str, int] = {"music": 0, "speech": 0}

    def counter(name: str) -> Callable[[Pcm], None]:
        def count(frame: Pcm) -> None:
            heard[name] += int(np.abs(frame).max() > 200)
        return count

    legs = {}
    for name in heard:
        legs[name] = await rig.pair("inband", TE, on_audio=counter(name))
    key = np.concatenate([_silence(300), dual_tone("5", 120), _silence(300)])
    await asyncio.gather(
        _play_to_end(legs["music"][0], SamplesSource(np.concatenate([music, key])), 15.0),
        _play_to_end(legs["speech"][0], SamplesSource(np.concatenate([speech, key])), 15.0),
    )
    await asyncio.sleep(0.2)
    for name, (_, receiver, events) in legs.items():
        # Only the key pressed after the music or speech, once, from the audio.
        assert [(e.digit, e.source) for e in events] == [("5", "inband")], name
        assert receiver.leg.collector.ignored == 0
    # The audio really went through (frames with signal reached on_audio).
    assert heard["music"] > 250 * 0.8  # 5 s of music
    assert heard["speech"] > len(speech) / 160 * 0.5


# ---------------------------------------------------------------------------------------------
# (d) Prompt chains, barge-in, lifecycle


@pytest.mark.asyncio
async def test_prompt_chain_arrives_as_one_continuous_rtp_stream(rig: _Rig) -> None:
    media, _ = await rig.leg()
    phone = await rig.phone()
    media.set_remote(phone.addr)
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    done: list[str] = []
    prompts = [SamplesSource(dual_tone("1", 200)), silence_source(0.1),
               SamplesSource(dual_tone("2", 300))]

    def after(i: int) -> None:
        done.append(f"prompt {i}")
        if i + 1 < len(prompts):
            media.play(prompts[i + 1], on_done=lambda: after(i + 1))
        else:
            finished.set_result(loop.time())

    media.play(prompts[0], on_done=lambda: after(0))
    assert media.playing
    await asyncio.wait_for(finished, 5.0)
    await _until(lambda: len(phone.received) >= 30)
    assert done == ["prompt 0", "prompt 1", "prompt 2"] and not media.playing
    pkts = [RtpPacket.parse(data) for _, data in phone.received]
    assert len(pkts) == 10 + 5 + 15
    assert len({p.ssrc for p in pkts}) == 1 and {p.payload_type for p in pkts} == {0}
    seq0, ts0 = pkts[0].sequence_number, pkts[0].timestamp
    assert [(p.sequence_number - seq0) & 0xFFFF for p in pkts] == list(range(30))
    steps = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in pairwise(pkts)]
    if rig.engine.late_ticks == 0:
        # No gap between prompts: every packet 20 ms after the previous, one talkspurt.
        assert steps == [160] * 29
        assert [p.marker for p in pkts] == [True] + [False] * 29
    else:
        # The loop was blocked for over 10 ticks and the engine skipped them: the stream says
        # so with a timestamp jump and the marker bit, never by bunching packets.
        assert all(st == 160 or (st > 160 and p.marker)
                   for st, p in zip(steps, pkts[1:], strict=True))

    # A later prompt on the same leg continues the stream after the silence (RFC 3551 4.1).
    await asyncio.sleep(0.3)
    await _play_to_end(media, SamplesSource(dual_tone("3", 40)), 5.0)
    await _until(lambda: len(phone.received) >= 32)
    later = [RtpPacket.parse(data) for _, data in phone.received[30:]]
    assert len(later) == 2 and later[0].marker
    assert later[0].ssrc == pkts[0].ssrc and later[0].sequence_number == (seq0 + 30) & 0xFFFF
    assert (later[0].timestamp - ts0) & 0xFFFFFFFF >= 160 * (30 + 15)


@pytest.mark.asyncio
async def test_a_digit_stops_the_prompt_at_once(rig: _Rig) -> None:
    events: list[DigitEvent] = []
    legs: list[LocalMedia] = []
    stopped: list[bool] = []

    def on_digit(event: DigitEvent) -> None:
        events.append(event)
        stopped.append(legs[0].stop_playing())  # barge-in

    media = await LocalMedia.open(rig.ports, HOST, rig.engine, LocalLeg(PCMU), on_digit)
    rig.media.append(media)
    legs.append(media)
    phone = await rig.phone()
    media.set_remote(phone.addr)
    media.play(SamplesSource(dual_tone("0", 5000)), on_done=lambda: events.clear())
    await _until(lambda: len(phone.received) >= 10)
    media.on_info("application/dtmf-relay", b"Signal=9\r\nDuration=100\r\n")
    sent_before_the_digit = rig.engine.sent
    await asyncio.sleep(0.2)
    assert [(e.digit, e.source) for e in events] == [("9", "info")] and stopped == [True]
    # Nothing was sent after the digit, and everything sent before it arrived.
    assert rig.engine.sent == sent_before_the_digit == len(phone.received)
    assert not media.playing


@pytest.mark.asyncio
async def test_audio_reaches_on_audio_and_close_releases_the_ports(rig: _Rig) -> None:
    frames: list[Pcm] = []
    sender, receiver, _ = await rig.pair(on_audio=frames.append)
    tone = dual_tone("A", 400)
    await _play_to_end(sender, SamplesSource(tone), 5.0)
    await _until(lambda: len(frames) >= 21)
    assert all(f.dtype == np.int16 and len(f) == 160 for f in frames)
    # The frames the sender played come out of on_audio unchanged and in order (a loaded
    # machine may cost a few of them).
    sent = [f.tobytes() for f in tone.reshape(-1, 160)]  # 400 ms: 20 whole frames
    got = [sent.index(f.tobytes()) for f in frames if f.tobytes() in sent]
    assert len(got) >= 18 and got == sorted(got)
    if rig.engine.late_ticks == 0:
        assert got == list(range(20))
    assert rig.ports.in_use == 2
    port = receiver.port
    await receiver.close()
    await receiver.close()
    assert receiver.closed and rig.ports.in_use == 1 and rig.engine.subscribers == 1
    assert receiver.on_info("application/dtmf", b"1") is None
    with pytest.raises(RuntimeError, match="closed"):
        receiver.play(silence_source(0.1))
    for p in (port, port + 1):  # the ports can be bound again
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, p))
        sock.close()


@pytest.mark.asyncio
async def test_no_ports_and_bad_addresses_are_clear_errors() -> None:
    base = free_port_block(2)
    ports = PortAllocator(base, base + 1)
    engine = PlaybackEngine()
    media = await LocalMedia.open(ports, HOST, engine, LocalLeg(PCMU), lambda _e: None)
    try:
        with pytest.raises(NoPortsError):
            await LocalMedia.open(ports, HOST, engine, LocalLeg(PCMU), lambda _e: None)
        with pytest.raises(ValueError, match="IP address literal"):
            await LocalMedia.open(ports, "localhost", engine, LocalLeg(PCMU), lambda _e: None)
        with pytest.raises(ValueError, match="not an IP address literal"):
            media.set_remote(("phone.example", 4000))
        with pytest.raises(ValueError, match="IPv6 but the leg is bound to IPv4"):
            media.set_remote(("2001:db8::1", 4000))
        assert not media.send(b"x" * 12)  # no remote yet
    finally:
        await media.close()
        engine.close()
    assert ports.in_use == 0


@pytest.mark.asyncio
async def test_echo_test_plays_back_what_the_caller_sent(rig: _Rig) -> None:
    # The caller's phone is a leg of its own that plays a tone and records what comes back.
    echoed: list[Pcm] = []
    phone, _ = await rig.leg(on_audio=echoed.append)
    queue = FrameQueue()
    echo, _ = await rig.leg(on_audio=queue.push)
    phone.set_remote((HOST, echo.port))
    echo.set_remote((HOST, phone.port))
    echo.play(queue)
    tone = dual_tone("B", 400)
    await _play_to_end(phone, SamplesSource(tone), 5.0)
    sent = [f.tobytes() for f in tone.reshape(-1, 160)]
    await _until(lambda: sum(f.tobytes() in sent for f in echoed) >= 18)
    await asyncio.sleep(0.2)  # the rest of the echo
    got = [sent.index(f.tobytes()) for f in echoed if f.tobytes() in sent]
    assert got == sorted(got) and len(got) >= 18
    if rig.engine.late_ticks == 0:
        assert got == list(range(20))
