"""The asyncio side of a leg the PBX terminates: sockets for :class:`media.endpoint.LocalLeg`.

A thin adapter, like :mod:`media.udp` is for the relay. :class:`LocalMedia` binds an even RTP
port and its RTCP port (``port + 1``, RFC 3550 11) from the same
:class:`~media.relay.PortAllocator` the relay uses, latches to the phone's real address
(symmetric RTP, RFC 4961, as the relay does), hands every accepted RTP datagram to the
:class:`~media.endpoint.LocalLeg` straight from ``datagram_received`` (no task, no queue, no
log line per packet), and subscribes the leg to the engine clock
(:class:`~media.playback.PlaybackEngine`), whose tick plays out the jitter buffer and runs the
DTMF detectors. What the PBX plays to the phone (prompts, tones, an echo) goes out of the same
RTP port, so it arrives from where the phone sends: one RTP stream per leg
(:class:`~media.player.RtpStream`), whatever is played on it.

Key presses reach ``on_digit(DigitEvent)`` on the tick after they are detected, before that
tick's packets are sent, so a prompt stopped on a digit (barge-in) sends nothing more. Decoded
audio reaches the optional ``on_audio(frame)`` once per tick (an echo test, a recorder). A
callback that raises is logged once and unsubscribed by the engine.

As a media endpoint the leg also speaks RTCP (RFC 3550 6): every ``rtcp_interval`` seconds
(5 s, randomised by half either way, RFC 3550 6.2) a compound report goes to the phone's RTCP
address: a sender report once the PBX has played something (else a receiver report) with a
reception block about the phone's audio (loss, interarrival jitter, LSR/DLSR from the phone's
last SR), and an SDES CNAME; closing the leg adds an RTCP BYE.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import time
from collections.abc import Callable
from functools import partial
from types import TracebackType

import numpy as np
from numpy.typing import NDArray

from media.digits import DigitEvent
from media.endpoint import Latch, LocalLeg
from media.playback import PlaybackEngine
from media.player import FrameSource, RtpStream, SamplesSource
from media.relay import Address, PortAllocator
from media.rtcp import (
    RtcpBye,
    RtcpPacket,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpSenderReport,
    build_report,
    ntp_from_unix,
    parse_compound,
    serialize_compound,
)
from media.sockets import bind_pair, bind_udp, for_socket

#: RFC 3550 6.2: the minimum report interval, 5 s.
RTCP_INTERVAL = 5.0

__all__ = ["LocalMedia"]

# How long close() waits for the event loop to confirm that the sockets are closed.
_CLOSE_TIMEOUT = 2.0


class _Endpoint(asyncio.DatagramProtocol):
    """The RTP or RTCP socket of one :class:`LocalMedia`."""

    __slots__ = (
        "_clock",
        "_latch",
        "_leg",
        "_lost",
        "_rtcp",
        "last_sr",
        "packets",
        "transport",
        "writable",
    )

    def __init__(
        self,
        leg: LocalLeg,
        latch: Latch,
        rtcp: bool,
        clock: Callable[[], float],
        lost: asyncio.Future[None],
    ) -> None:
        self._leg = leg
        self._latch = latch
        self._rtcp = rtcp
        self._clock = clock
        self._lost = lost
        self.transport: asyncio.DatagramTransport | None = None
        self.writable = True
        #: Datagrams accepted from the phone.
        self.packets = 0
        #: The phone's last RTCP sender report: (its NTP timestamp, arrival on the clock).
        self.last_sr: tuple[int, float] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Typed as BaseTransport by asyncio; a datagram endpoint always hands a datagram one.
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if not self._latch.accept(addr, self._rtcp):
            return
        self.packets += 1
        if not self._rtcp:
            self._leg.on_rtp(data, self._clock())
            return
        # RTCP (one datagram every few seconds): only the phone's SR matters, for the LSR and
        # DLSR of our reports (RFC 3550 6.4.1).
        try:
            reports = parse_compound(data)
        except ValueError:
            return
        for report in reports:
            if isinstance(report, RtcpSenderReport):
                self.last_sr = (report.ntp_timestamp, self._clock())

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable while a phone restarts) say nothing to act on per
        # packet; a phone that is gone shows up as a SIP or RTP timeout.
        return

    def pause_writing(self) -> None:
        # RTP is real-time: when the socket buffer is full, drop rather than queue.
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable = False
        if not self._lost.done():
            self._lost.set_result(None)


class LocalMedia:
    """One terminated leg: its two UDP ports, latching, its :class:`LocalLeg` on the engine
    clock, and the RTP stream the PBX plays to the phone. Make one with :meth:`open`."""

    def __init__(
        self,
        *,
        ports: PortAllocator,
        port: int,
        family: socket.AddressFamily,
        engine: PlaybackEngine,
        leg: LocalLeg,
        latch: Latch,
        endpoints: tuple[_Endpoint, _Endpoint],
        lost: list[asyncio.Future[None]],
        on_digit: Callable[[DigitEvent], None],
        on_audio: Callable[[NDArray[np.int16]], None] | None,
        rtcp_interval: float = RTCP_INTERVAL,
        cname: str = "pbx",
    ) -> None:
        self._ports = ports
        self._port = port
        self._family = family
        self._engine = engine
        self._leg = leg
        self._latch = latch
        self._rtp, self._rtcp = endpoints
        self._lost = lost
        self._on_digit = on_digit
        self._on_audio = on_audio
        # Made now, so RTCP names the same SSRC before and after the first prompt.
        self._stream: RtpStream = RtpStream(SamplesSource(np.zeros(0, dtype=np.int16)),
                                            leg.codec)
        self._closed = False
        self._rtcp_interval = rtcp_interval
        self._next_rtcp: float | None = None
        self._cname = f"{cname}-{port}".encode()
        engine.subscribe(self, self._tick)

    @classmethod
    async def open(
        cls,
        ports: PortAllocator,
        bind_host: str,
        engine: PlaybackEngine,
        leg: LocalLeg,
        on_digit: Callable[[DigitEvent], None],
        on_audio: Callable[[NDArray[np.int16]], None] | None = None,
        *,
        rtcp_interval: float = RTCP_INTERVAL,
    ) -> LocalMedia:
        """Bind RTP and RTCP on ``bind_host`` (an IP literal) and start ticking ``leg``.

        Ports that cannot be bound (taken by another program) are skipped; raises
        :class:`~media.relay.NoPortsError` when no pair in the range can be had.
        """
        try:
            ip = ipaddress.ip_address(bind_host)
        except ValueError:
            raise ValueError(f"bind_host {bind_host!r} is not an IP address literal") from None
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        port, rtp_sock, rtcp_sock = bind_pair(ports, bind_host, partial(bind_udp, family))
        loop = asyncio.get_running_loop()
        latch = Latch()
        endpoints: list[_Endpoint] = []
        lost: list[asyncio.Future[None]] = []
        try:
            for is_rtcp, sock in ((False, rtp_sock), (True, rtcp_sock)):
                future: asyncio.Future[None] = loop.create_future()
                endpoint = _Endpoint(leg, latch, is_rtcp, loop.time, future)
                await loop.create_datagram_endpoint(_returning(endpoint), sock=sock)
                endpoints.append(endpoint)
                lost.append(future)
        except BaseException:
            for endpoint in endpoints:
                if endpoint.transport is not None:
                    endpoint.transport.close()
            rtp_sock.close()
            rtcp_sock.close()
            ports.release(port)
            raise
        return cls(
            ports=ports, port=port, family=family, engine=engine, leg=leg, latch=latch,
            endpoints=(endpoints[0], endpoints[1]), lost=lost, on_digit=on_digit,
            on_audio=on_audio, rtcp_interval=rtcp_interval, cname=f"pbx@{bind_host}",
        )

    @property
    def port(self) -> int:
        """The RTP port (put it in the SDP answer)."""
        return self._port

    @property
    def rtcp_port(self) -> int:
        """The RTCP port: always ``port + 1``."""
        return self._port + 1

    @property
    def leg(self) -> LocalLeg:
        """The sans-I/O leg (codec, DTMF mode, counters)."""
        return self._leg

    @property
    def latch(self) -> Latch:
        """Latching state and its drop counters."""
        return self._latch

    @property
    def packets(self) -> int:
        """RTP datagrams accepted from the phone."""
        return self._rtp.packets

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    @property
    def playing(self) -> bool:
        """Whether something is being played to the phone."""
        return self in self._engine

    def set_remote(self, addr: Address | None, rtcp_addr: Address | None = None) -> None:
        """Where the phone receives media, from its SDP (None while unknown). The host must be
        an IP literal. A changed address unlatches, and the next packet latches again."""
        self._latch.set_remote(
            None if addr is None else for_socket(self._family, addr, "leg"),
            None if rtcp_addr is None else for_socket(self._family, rtcp_addr, "leg"),
        )

    def send(self, data: bytes) -> bool:
        """Send one RTP packet to the phone from the RTP port (the engine's ``send``). False if
        its address is not known, the socket is full, or the leg is closed."""
        dest = self._latch.destination()
        transport = self._rtp.transport
        if dest is None or transport is None or not self._rtp.writable or self._closed:
            return False
        transport.sendto(data, dest)
        return True

    def play(self, source: FrameSource, on_done: Callable[[], None] | None = None) -> None:
        """Play ``source`` to the phone, replacing what plays now, on the leg's one RTP stream
        (same SSRC, sequence numbers and timestamps running on). ``on_done()`` runs on the tick
        at which a finite source has ended, not when it is stopped or replaced; playing the
        next prompt from it leaves no gap."""
        if self._closed:
            raise RuntimeError("LocalMedia is closed")
        stream = self._stream
        stream.set_source(source)
        self._engine.play(self, stream, self.send, on_done)

    def stop_playing(self) -> bool:
        """Stop what plays now, before its next packet (barge-in); False if nothing played."""
        return self._engine.stop(self)

    def on_info(self, content_type: str, body: bytes) -> DigitEvent | None:
        """The body of a SIP INFO request from this leg's phone. A key press it carries goes
        to ``on_digit`` at once and is returned; None if it carried none (or a duplicate)."""
        if self._closed:
            return None
        event = self._leg.on_info(content_type, body, self._engine.now())
        if event is not None:
            self._deliver()
        return event

    async def close(self) -> None:
        """Stop ticking and playing, close both sockets and give the ports back. Safe to call
        more than once."""
        if self._closed:
            return
        self._report(self._engine.now(), bye=True)
        self._closed = True
        self._engine.unsubscribe(self)
        self._engine.stop(self)
        for endpoint in (self._rtp, self._rtcp):
            if endpoint.transport is not None:
                endpoint.transport.close()
        # The ports go back only once the sockets are really closed, so they can be bound again.
        await asyncio.wait(self._lost, timeout=_CLOSE_TIMEOUT)
        self._ports.release(self._port)

    async def __aenter__(self) -> LocalMedia:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _tick(self, now: float) -> None:
        frame = self._leg.tick(now)
        if frame is not None and self._on_audio is not None:
            self._on_audio(frame)
        self._deliver()
        due = self._next_rtcp
        if due is None:
            # RFC 3550 6.2: the first report after half the interval.
            self._next_rtcp = now + self._rtcp_interval * random.uniform(0.25, 0.75)
        elif now >= due:
            self._next_rtcp = now + self._rtcp_interval * random.uniform(0.5, 1.5)
            self._report(now)

    def _report(self, now: float, *, bye: bool = False) -> None:
        """Send one compound RTCP packet (RFC 3550 6.1: a report first, then SDES CNAME)."""
        dest = self._latch.destination(rtcp=True)
        transport = self._rtcp.transport
        if dest is None or transport is None or self._closed or not self._rtcp.writable:
            return
        stream = self._stream
        blocks = []
        reception = self._leg.reception
        if reception is not None and reception[1].received:
            last_sr = self._rtcp.last_sr
            blocks.append(build_report(
                reception[1], reception[0], now=now,
                last_sr_ntp=last_sr[0] if last_sr else None,
                last_sr_arrival=last_sr[1] if last_sr else None,
            ))
        report: RtcpPacket
        if stream.packets:
            report = RtcpSenderReport(
                stream.ssrc, ntp_from_unix(time.time()), stream.timestamp,
                stream.packets & 0xFFFFFFFF, stream.octets & 0xFFFFFFFF, blocks)
        else:
            report = RtcpReceiverReport(stream.ssrc, blocks)
        packets: list[RtcpPacket] = [report, RtcpSdes.cname_packet(stream.ssrc, self._cname)]
        if bye:
            packets.append(RtcpBye([stream.ssrc]))
        transport.sendto(serialize_compound(packets), dest)

    def _deliver(self) -> None:
        for event in self._leg.digits():
            self._on_digit(event)


def _returning(endpoint: _Endpoint) -> Callable[[], _Endpoint]:
    return lambda: endpoint
