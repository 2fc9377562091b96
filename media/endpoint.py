"""A call leg the PBX terminates itself (IVR, echo test, queue): audio out, digits out.

Sans-I/O. :class:`LocalLeg` takes the RTP packets the phone sends (:meth:`LocalLeg.on_rtp`) and
SIP INFO bodies (:meth:`LocalLeg.on_info`), and is ticked once per 20 ms by the engine clock
(:meth:`LocalLeg.tick`), which plays the audio out of a jitter buffer, conceals lost packets,
runs the in-band DTMF detector and the RFC 4733 timeout. Key presses from all three sources come
out of :meth:`LocalLeg.digits` as :class:`~media.digits.DigitEvent`, merged by a
:class:`~media.digits.DigitCollector` according to the leg's :class:`~media.digits.DtmfMode`.

:class:`Latch` is the symmetric-RTP latching of :mod:`media.relay` for such a leg.

Stream changes: a phone that restarts its stream (a re-INVITE to another device, a reboot)
sends a new SSRC with a new, unrelated sequence number and timestamp space (RFC 3550 8.2). The
jitter buffer and the RFC 4733 receiver start over on it at once; a few late packets of the old
SSRC that arrive just after the switch are dropped rather than taken for another switch. A jump
in the sequence numbers of the same SSRC is handled by the jitter buffer (RFC 3550 A.1: believed
once a second packet confirms it). Audio and telephone-events are tracked separately because
some gateways send events with their own SSRC.

Everything is passed ``now`` (seconds); nothing here reads a clock.
"""

from __future__ import annotations

import struct
from typing import Final

import numpy as np
from numpy.typing import NDArray

from media.digits import DEFAULT_WINDOW, DigitCollector, DigitEvent, DtmfMode
from media.dtmf import InbandDetector, Rfc4733Receiver
from media.g711 import Codec, get_codec
from media.jitter import JitterBuffer
from media.relay import Address
from media.rtp import RtpStats

__all__ = ["FRAME_SAMPLES", "Latch", "LocalLeg"]

FRAME_SAMPLES: Final = 160
"""Samples per 20 ms tick at 8 kHz (RFC 3551 4.5.14: G.711 default ptime)."""

_SEQ_TS_SSRC: Final = struct.Struct("!HII")
# Packets of the previous SSRC are taken for stragglers for this long after a switch.
_STALE_SECONDS: Final = 1.0
# Concealment fades the last good audio to silence over this many samples (80 ms): longer
# repetition of one frame sounds like a buzz; shorter makes every lost packet a click.
_FADE_SAMPLES: Final = 640
# After this many ticks without any packet the phone has stopped sending (hold, silence
# suppression): tick() returns None instead of concealed silence.
_MAX_CONCEAL_TICKS: Final = 10

Pcm = NDArray[np.int16]


class Latch:
    """Symmetric RTP for one terminated leg (RFC 4961), as :class:`media.relay.RelaySession`
    does for bridged legs: after :meth:`set_remote`, the first source seen on the RTP (and
    separately the RTCP) port is where the phone really is; other sources are ignored."""

    __slots__ = ("_expected", "_latched", "dropped_foreign", "dropped_no_remote")

    def __init__(self) -> None:
        self._expected: list[Address | None] = [None, None]
        self._latched: list[Address | None] = [None, None]
        #: Packets from a source other than the latched one.
        self.dropped_foreign = 0
        #: Packets that arrived before the phone's address was known.
        self.dropped_no_remote = 0

    def set_remote(self, addr: Address | None, rtcp_addr: Address | None = None) -> None:
        """Set the phone's RTP address from its SDP (None: unknown). ``rtcp_addr`` defaults to
        ``(host, port + 1)`` (RFC 3550 11). A changed address unlatches; the same one keeps the
        latch (a re-INVITE that only changes the direction must not open the leg)."""
        if addr is None:
            rtcp_addr = None
        else:
            _check_address(addr)
            if rtcp_addr is None:
                if addr[1] >= 65535:
                    raise ValueError(f"RTP port {addr[1]} leaves no room for RTCP at port + 1")
                rtcp_addr = (addr[0], addr[1] + 1)
            else:
                _check_address(rtcp_addr)
        for i, new in enumerate((addr, rtcp_addr)):
            if new is not None and new == self._expected[i]:
                continue
            self._expected[i] = new
            self._latched[i] = None

    def accept(self, addr: Address, rtcp: bool = False) -> bool:
        """Whether a packet from ``addr`` belongs to the phone (latching on the first one)."""
        i = 1 if rtcp else 0
        latched = self._latched[i]
        if latched is None:
            if self._expected[i] is None:
                self.dropped_no_remote += 1
                return False
            self._latched[i] = addr
            return True
        if addr != latched:
            if addr != self._expected[i]:
                self.dropped_foreign += 1
                return False
            # The phone's own SDP address takes the leg back from a stranger who latched it
            # first (RTP injection on an idle port), as in the relay.
            self._latched[i] = addr
        return True

    def destination(self, rtcp: bool = False) -> Address | None:
        """Where to send to the phone: the latched source, else the SDP address, else None."""
        i = 1 if rtcp else 0
        return self._latched[i] or self._expected[i]

    @property
    def latched(self) -> Address | None:
        """The RTP source latched to, or None."""
        return self._latched[0]


class LocalLeg:
    """One leg terminated by the PBX: RTP and INFO in, 20 ms audio frames and digits out.

    ``codec`` is the negotiated audio codec (a :mod:`media.g711` codec, its name or static
    payload type); ``telephone_event_pt`` the payload type negotiated for ``telephone-event``
    (RFC 4733 7.1.1), or None; ``mode`` the DTMF mode of the user or trunk.
    """

    def __init__(
        self,
        codec: Codec | int | str,
        telephone_event_pt: int | None = None,
        mode: DtmfMode | str = DtmfMode.AUTO,
        *,
        jitter_capacity: int = 16,
        prefetch: int = 2,
        dedupe_window: float = DEFAULT_WINDOW,
    ) -> None:
        self.codec = codec if isinstance(codec, Codec) else get_codec(codec)
        self._audio_pt = self.codec.payload_type
        self._event_pt = -1
        self._collector = DigitCollector(mode, False, window=dedupe_window)
        self.set_telephone_event(telephone_event_pt)
        self._jitter = JitterBuffer(jitter_capacity, prefetch)
        self._receiver = Rfc4733Receiver(self.codec.clock_rate)
        self._detector = InbandDetector(self.codec.clock_rate)
        self._audio_ssrc: int | None = None
        self._stats = RtpStats()
        self._clock_rate = self.codec.clock_rate
        self._old_audio_ssrc: int | None = None
        self._event_ssrc: int | None = None
        self._old_event_ssrc: int | None = None
        self._audio_switched = 0.0
        self._event_switched = 0.0
        # Decoded samples not yet played (packets that are not 20 ms long).
        self._fifo: list[Pcm] = []
        self._fifo_samples = 0
        self._packet_samples = FRAME_SAMPLES
        self._last_good: Pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._gain = 0.0  # of the concealment: 1.0 right after good audio, fading to 0
        self._idle_ticks = _MAX_CONCEAL_TICKS
        self._silence: Pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        #: RTP packets taken (audio and telephone-events).
        self.packets = 0
        #: Packets of another payload type (comfort noise, video, RTCP multiplexed, ...).
        self.ignored = 0
        #: Datagrams that were not RTP (too short, wrong version, inconsistent lengths).
        self.malformed = 0
        #: Late packets of a previous SSRC, dropped.
        self.stale = 0
        #: Times the phone switched its audio to a new SSRC.
        self.ssrc_changes = 0
        #: Frames (or parts) the leg made up for lost packets.
        self.concealed = 0

    @property
    def mode(self) -> DtmfMode:
        """The DTMF mode."""
        return self._collector.mode

    @property
    def telephone_event_pt(self) -> int | None:
        """The telephone-event payload type, or None when not negotiated."""
        return None if self._event_pt < 0 else self._event_pt

    @property
    def jitter(self) -> JitterBuffer:
        """The jitter buffer (its counters: late, duplicates, missing, resyncs, ...)."""
        return self._jitter

    @property
    def collector(self) -> DigitCollector:
        """The digit collector (its counters: duplicates, ignored)."""
        return self._collector

    def set_telephone_event(self, payload_type: int | None) -> None:
        """A new SDP answer (re-INVITE) negotiated telephone-event on ``payload_type``, or
        dropped it (None). In ``auto`` mode this switches between RFC 4733 and in-band."""
        if payload_type is not None:
            if not 0 <= payload_type <= 127 or isinstance(payload_type, bool):
                raise ValueError(f"telephone-event payload type {payload_type!r} not in 0-127")
            if payload_type == self._audio_pt:
                raise ValueError(
                    f"telephone-event payload type {payload_type} is the audio codec's"
                )
        self._event_pt = -1 if payload_type is None else payload_type
        self._collector.set_telephone_event(payload_type is not None)

    def on_rtp(self, packet: bytes, now: float) -> None:
        """One datagram from the phone's RTP port. Anything that is not usable RTP of the
        negotiated payload types is counted and ignored; nothing here raises on bad input."""
        size = len(packet)
        if size < 12:
            self.malformed += 1
            return
        first = packet[0]
        if first & 0xC0 != 0x80:  # RFC 3550 5.1: version 2
            self.malformed += 1
            return
        pt = packet[1] & 0x7F
        start = 12 + 4 * (first & 0x0F)  # CSRC list
        if first & 0x10:  # RFC 3550 5.3.1: header extension, length in 32-bit words
            if start + 4 > size:
                self.malformed += 1
                return
            start += 4 + 4 * ((packet[start + 2] << 8) | packet[start + 3])
        end = size
        if first & 0x20:  # RFC 3550 5.1: padding, the last octet counts it
            end -= packet[-1]
        if start > end or (first & 0x20 and packet[-1] == 0):
            self.malformed += 1
            return
        seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(packet, 2)
        if pt == self._audio_pt:
            if ssrc != self._audio_ssrc and not self._new_audio_ssrc(ssrc, now):
                return
            self.packets += 1
            self._stats.update(seq, ts, now, self._clock_rate)
            self._jitter.add(seq, ts, packet[start:end])
        elif pt == self._event_pt:
            if ssrc != self._event_ssrc and not self._new_event_ssrc(ssrc, now):
                return
            self.packets += 1
            collector = self._collector
            if collector.listens("rfc4733"):
                marker = bool(packet[1] & 0x80)
                for digit in self._receiver.feed(ts, marker, packet[start:end], now):
                    collector.offer(digit, now)
        else:
            self.ignored += 1

    def on_info(self, content_type: str, body: bytes, now: float) -> DigitEvent | None:
        """The body of a SIP INFO request. Returns the key press it adds (also in
        :meth:`digits`), or None: no DTMF in it, INFO not listened to, or a duplicate."""
        return self._collector.offer_info(content_type, body, now)

    def tick(self, now: float) -> Pcm | None:
        """Called once per 20 ms on the engine clock: the next 160 samples the phone sent
        (lost packets concealed), or None while there is no audio (not started yet, or the
        phone stopped sending). Also runs the in-band detector and the RFC 4733 timeout."""
        frame = self._play()
        collector = self._collector
        if collector.listens("inband"):
            detector = self._detector
            if frame is not None:
                found = detector.feed(frame)
            elif detector.active:
                found = detector.feed(self._silence)  # the stream stopped: end the tone
            else:
                found = []
            for digit in found:
                collector.offer(digit, now)
        timer = self._receiver.get_timer()
        if timer is not None and now >= timer:
            for digit in self._receiver.poll(now):
                collector.offer(digit, now)
        return frame

    @property
    def reception(self) -> tuple[int, RtpStats] | None:
        """The phone's audio SSRC and its reception statistics (RFC 3550 A.1, A.3, A.8: loss,
        interarrival jitter), for RTCP reports and call quality; None before any audio."""
        ssrc = self._audio_ssrc
        return None if ssrc is None else (ssrc, self._stats)

    def digits(self) -> list[DigitEvent]:
        """The key presses detected since the last call, oldest first (drains)."""
        return self._collector.drain()

    # -- audio ----------------------------------------------------------------------------

    def _play(self) -> Pcm | None:
        jitter = self._jitter
        codec = self.codec
        while self._fifo_samples < FRAME_SAMPLES:
            frame = jitter.pop()
            if frame is None:
                break
            if frame.missing:
                samples = self._conceal(self._packet_samples)
                self.concealed += 1
            else:
                samples = codec.decode(frame.payload)
                if not len(samples):
                    continue
                self._packet_samples = len(samples)
                self._remember(samples)
            if self._fifo_samples == 0 and len(samples) == FRAME_SAMPLES:
                self._idle_ticks = 0
                return samples  # the common case: one 20 ms packet per tick
            self._fifo.append(samples)
            self._fifo_samples += len(samples)
        if self._fifo_samples >= FRAME_SAMPLES:
            self._idle_ticks = 0
            return self._take()
        # Underrun: nothing (or not enough) buffered for this tick.
        self._idle_ticks += 1
        if self._idle_ticks > _MAX_CONCEAL_TICKS:
            self._fifo.clear()
            self._fifo_samples = 0
            return None
        missing = FRAME_SAMPLES - self._fifo_samples
        self._fifo.append(self._conceal(missing))
        self._fifo_samples += missing
        self.concealed += 1
        return self._take()

    def _take(self) -> Pcm:
        data = self._fifo[0] if len(self._fifo) == 1 else np.concatenate(self._fifo)
        rest = data[FRAME_SAMPLES:]
        self._fifo = [rest] if len(rest) else []
        self._fifo_samples = len(rest)
        out: Pcm = data[:FRAME_SAMPLES]
        return out

    def _remember(self, samples: Pcm) -> None:
        self._gain = 1.0
        if len(samples) >= FRAME_SAMPLES:
            self._last_good = samples[-FRAME_SAMPLES:]
        else:
            self._last_good = np.concatenate([self._last_good, samples])[-FRAME_SAMPLES:]

    def _conceal(self, count: int) -> Pcm:
        # Packet loss concealment: repeat the last 20 ms of good audio, fading to silence so a
        # burst of losses does not buzz (the idea of ITU-T G.711 Appendix I, without its pitch
        # search, which the detectors and prompts here do not need).
        start = self._gain
        if start <= 0.0:
            return np.zeros(count, dtype=np.int16)
        stop = max(0.0, start - count / _FADE_SAMPLES)
        self._gain = stop
        gain = np.linspace(start, stop, count, endpoint=False)
        out: Pcm = (np.resize(self._last_good, count) * gain).astype(np.int16)
        return out

    # -- stream changes ---------------------------------------------------------------------

    def _new_audio_ssrc(self, ssrc: int, now: float) -> bool:
        if ssrc == self._old_audio_ssrc and now - self._audio_switched < _STALE_SECONDS:
            self.stale += 1
            return False
        if self._audio_ssrc is not None:
            # RFC 3550 8.2: a new SSRC is a new sequence number space; start the buffer over.
            self.ssrc_changes += 1
            self._jitter.reset()
            self._detector.reset()
        self._old_audio_ssrc = self._audio_ssrc
        self._audio_ssrc = ssrc
        self._audio_switched = now
        self._stats = RtpStats()  # RFC 3550 A.1: statistics are per source
        return True

    def _new_event_ssrc(self, ssrc: int, now: float) -> bool:
        if ssrc == self._old_event_ssrc and now - self._event_switched < _STALE_SECONDS:
            self.stale += 1
            return False
        if self._event_ssrc is not None:
            # An event cut off by the restart was still a key press (RFC 4733 2.5.2.1).
            for digit in self._receiver.flush():
                self._collector.offer(digit, now)
        self._old_event_ssrc = self._event_ssrc
        self._event_ssrc = ssrc
        self._event_switched = now
        return True


def _check_address(addr: Address) -> None:
    if (
        not isinstance(addr, tuple)
        or len(addr) < 2
        or not isinstance(addr[0], str)
        or not addr[0]
        or not isinstance(addr[1], int)
        or not 1 <= addr[1] <= 65535
    ):
        raise ValueError(f"bad remote address {addr!r}: expected (host, port) with port 1..65535")
