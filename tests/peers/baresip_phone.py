"""One scripted softphone (baresip-python) driven by JSON lines.

Run as ``python -m tests.peers.baresip_phone --name alice [--port N]``. The
stack allows one runtime per process, so every phone is its own process.

Commands arrive on stdin, one JSON object per line, ``{"cmd": NAME, ...}``
with an optional ``"id"`` echoed in the acknowledgement:

* ``register {registrar, user, password, domain?, transport?, expires?, timeout?}``
* ``unregister``
* ``dial {uri}`` / ``answer`` / ``reject`` (486) / ``hangup`` / ``hold`` / ``resume``
* ``tone {freq, amplitude?}`` (a continuous sine as the microphone) / ``silence``
* ``dtmf {digits}`` (RFC 4733 telephone-events)
* ``ping`` / ``quit {unregister?}``

Events go to stdout, one JSON object per line, ``{"event": NAME, "t": SECONDS, ...}``:
``ready {sip_port, pid}``, ``ok {cmd, id}``, ``error {message, cmd?, id?}``,
``registered {user}``, ``register_failed {code, reason}``, ``unregistered``,
``incoming {from, display, to, call_id, headers}``, ``ringing``, ``progress``,
``established``, ``closed {reason}``, ``dtmf {digit, duration_ms}``,
``remote_hold``, ``remote_resume``, and every 0.5 s during a call
``audio {freq, rms, samples}`` describing the audio RECEIVED in that half
second. Anything the native stack prints goes to stderr, never to the
event stream. The process exits by itself after ``--max-lifetime`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from tests.peers.audio import ToneGenerator, dominant_frequency, pcm_to_samples, rms
from tests.peers.eventsink import EventSink, isolate_stdout
from tests.peers.ports import LOOPBACK, free_port

log = logging.getLogger("phone")

_REPORT_INTERVAL = 0.5  # seconds of received audio per "audio" event
_TICK = 0.02  # one 20 ms packet time (RFC 3551 section 4.2 default ptime)
_TX_LEAD = 0.06  # keep this much transmit audio queued ahead of the stack
_MIN_SAMPLES = 0.2  # below this share of a window, report the window as silent
_EXPOSED_HEADERS = ("From", "To", "P-Asserted-Identity", "Diversion", "Alert-Info")
_DISPLAY = re.compile(r'^\s*"((?:[^"\\]|\\.)*)"|^\s*([^<"]+?)\s*<')


def _display_name(header: str | None) -> str:
    """The display-name of a From/To value (RFC 3261 section 20.10), or ''."""
    if not header:
        return ""
    match = _DISPLAY.match(header)
    if match is None:
        return ""
    return (match.group(1) or match.group(2) or "").strip()


class Phone:
    """The phone's state: one runtime, a direct-call agent, a registered agent, one call."""

    def __init__(self, args: argparse.Namespace, sink: EventSink) -> None:
        """Keep the options; :meth:`start` brings the stack up."""
        self.args = args
        self.sink = sink
        self.sip_port: int = args.port or free_port()
        self.runtime: Any = None
        self.direct_ua: Any = None
        self.reg_ua: Any = None
        self.call: Any = None
        # The call put on hold while consulting a transfer target (attended transfer).
        self.parked: Any = None
        self._adopted: set[int] = set()
        self._pending_events: dict[int, list[Any]] = {}
        self._dtmf_pressed: tuple[str, float] | None = None
        self._tone = ToneGenerator(0.0)
        self._rx: list[np.ndarray] = []
        self._rx_count = 0
        self._quit = asyncio.Event()
        self.exit_code = 0

    # -- life cycle -------------------------------------------------------

    async def start(self) -> None:
        """Start the stack bound to 127.0.0.1 and the chosen SIP port."""
        import baresip

        config = baresip.Config(
            net_interface=LOOPBACK,
            # Listening on one chosen port (UDP and TCP) is what lets a test
            # dial this phone directly, and keeps it off 5060.
            # TLS is left out: it would also take the next port up.
            extra_config_text=f"sip_listen {LOOPBACK}:{self.sip_port}\nsip_transports udp,tcp\n",
            max_concurrent_calls=self.args.max_calls,
            native_log_level=self.args.native_log_level,
            sip_trace=self.args.sip_trace,
            # Caller identity for "incoming" events; the stack reports only
            # the peer URI unless the headers are allowlisted.
            expose_headers=_EXPOSED_HEADERS,
        )
        self.runtime = baresip.Runtime()
        await self.runtime.start(config)
        # Subscribed before any agent exists, so it runs before the library's
        # own per-call listeners and sees every call event (see _on_stack_event).
        self.runtime.subscribe(self._on_stack_event)
        # The stack matches an incoming request to an agent by transport as
        # well as user (a mismatch is answered 404), so direct calls need one
        # agent per transport.
        for transport in ("udp", "tcp"):
            account = baresip.Account(
                user=self.args.user or self.args.name,
                domain=f"{LOOPBACK}:{self.sip_port}",
                password="",
                reg_interval=0,
                transport=transport,
            )
            ua = await baresip.UserAgent.create(self.runtime, account)
            ua.on_incoming(self._on_incoming)
            if self.direct_ua is None:
                self.direct_ua = ua

    async def close(self, *, unregister: bool) -> None:
        """Hang up, optionally unregister, and stop the stack (each step bounded)."""
        if self.call is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.call.hangup(), 2.0)
        if unregister and self.reg_ua is not None:
            with contextlib.suppress(Exception):
                await self.reg_ua.unregister(timeout=2.0)
        if self.runtime is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.runtime.close(), 6.0)

    # -- stack events -----------------------------------------------------

    def _on_stack_event(self, event: Any) -> None:
        from baresip import Event

        if event.event is Event.CALL_INCOMING:
            return  # the agent's on_incoming callback adopts the call
        if event.event is Event.REGISTER_FAIL and self.reg_ua is not None:
            if event.ua == self.reg_ua.handle:
                self._registration_lost(event)
            return
        if not event.call:
            return
        if event.call in self._adopted:
            self._call_event(event)
        else:
            # dial() returns only after its command completes, and events for
            # the new call can be dispatched before that: keep them.
            self._pending_events.setdefault(event.call, []).append(event)

    def _registration_lost(self, event: Any) -> None:
        from baresip.errors import split_status

        code, reason = split_status(event.text or "")
        self.sink.emit("register_failed", code=code, reason=reason)

    def _adopt(self, call: Any) -> None:
        self.call = call
        self._adopted.add(call.handle)
        self._rx.clear()
        self._rx_count = 0
        for event in self._pending_events.pop(call.handle, []):
            self._call_event(event)

    def _call_event(self, event: Any) -> None:
        from baresip import Event

        kind = event.event
        if kind is Event.CALL_RINGING:
            self.sink.emit("ringing")
        elif kind is Event.CALL_PROGRESS:
            self.sink.emit("progress")
        elif kind is Event.CALL_ESTABLISHED:
            self.sink.emit("established", peer=event.peer or "")
        elif kind is Event.CALL_HOLD:
            self.sink.emit("remote_hold")
        elif kind is Event.CALL_RESUME:
            self.sink.emit("remote_resume")
        elif kind is Event.CALL_TRANSFER:
            self.sink.emit("transfer_request", target=event.text or "")
        elif kind is Event.CALL_DTMF_START and event.text:
            self._flush_digit()
            self._dtmf_pressed = (event.text, time.monotonic())
        elif kind is Event.CALL_DTMF_END:
            self._flush_digit()
        elif kind is Event.CALL_CLOSED:
            self._flush_digit()
            if self.parked is not None and self.parked.handle == event.call:
                self.parked = None
                self.sink.emit("closed", reason=event.text or "", parked=True)
                return
            if self.call is not None and self.call.handle == event.call:
                self.call = None
            self.sink.emit("closed", reason=event.text or "")

    def _flush_digit(self) -> None:
        # RFC 4733 section 2.5: a digit is complete at its end packet; the
        # stack reports start and end separately, so pair them here.
        if self._dtmf_pressed is None:
            return
        digit, started = self._dtmf_pressed
        self._dtmf_pressed = None
        self.sink.emit("dtmf", digit=digit, duration_ms=int((time.monotonic() - started) * 1000))

    def _on_incoming(self, call: Any) -> None:
        if self.call is not None:
            # One call at a time: a second caller hears busy (RFC 3261 21.4.24).
            asyncio.get_running_loop().create_task(self._reject_quietly(call))
            self.sink.emit("rejected_busy", **{"from": call.peer or ""})
            return
        headers = dict(call.headers)
        self._adopt(call)
        self.sink.emit(
            "incoming",
            **{
                "from": call.peer or "",
                "display": _display_name(headers.get("From")),
                "to": headers.get("To", ""),
                "call_id": call.call_id or "",
                "headers": headers,
            },
        )

    async def _reject_quietly(self, call: Any) -> None:
        with contextlib.suppress(Exception):
            await call.reject()

    # -- commands ---------------------------------------------------------

    def _need_call(self) -> Any:
        if self.call is None:
            raise RuntimeError("no call in progress")
        return self.call

    async def cmd_register(self, msg: dict[str, Any]) -> None:
        import baresip
        from baresip.errors import RegistrationError

        registrar = str(msg["registrar"])
        transport = str(msg.get("transport", "udp"))
        domain = str(msg.get("domain") or registrar)
        outbound = None
        if domain != registrar or transport != "udp":
            outbound = registrar if transport == "udp" else f"{registrar};transport={transport}"
        account = baresip.Account(
            user=str(msg["user"]),
            domain=domain,
            password=str(msg.get("password", "")),
            registrar=outbound,
            reg_interval=int(msg.get("expires", 600)),
            transport=transport,  # type: ignore[arg-type]
        )
        if self.reg_ua is not None:
            raise RuntimeError("already registered; unregister first")
        ua = await baresip.UserAgent.create(self.runtime, account)
        ua.on_incoming(self._on_incoming)
        try:
            await ua.register(timeout=float(msg.get("timeout", 10.0)))
        except RegistrationError as exc:
            self.sink.emit("register_failed", code=exc.status, reason=exc.reason or str(exc))
            return
        self.reg_ua = ua
        self.sink.emit("registered", user=account.user, domain=domain)

    async def cmd_unregister(self, msg: dict[str, Any]) -> None:
        if self.reg_ua is None:
            raise RuntimeError("not registered")
        await self.reg_ua.unregister(timeout=float(msg.get("timeout", 5.0)))
        self.reg_ua = None
        self.sink.emit("unregistered")

    async def cmd_dial(self, msg: dict[str, Any]) -> None:
        if self.call is not None:
            raise RuntimeError("already in a call")
        ua = self.reg_ua or self.direct_ua
        headers = msg.get("headers") or None
        call = await ua.dial(str(msg["uri"]), headers=headers)
        self._adopt(call)

    async def cmd_answer(self, msg: dict[str, Any]) -> None:
        await self._need_call().answer()

    async def cmd_reject(self, msg: dict[str, Any]) -> None:
        await self._need_call().reject()

    async def cmd_hangup(self, msg: dict[str, Any]) -> None:
        from baresip.errors import StaleHandleError

        with contextlib.suppress(StaleHandleError):  # the far end hung up first
            await self._need_call().hangup()

    async def cmd_hold(self, msg: dict[str, Any]) -> None:
        await self._need_call().hold()

    async def cmd_resume(self, msg: dict[str, Any]) -> None:
        await self._need_call().resume()

    async def cmd_transfer(self, msg: dict[str, Any]) -> None:
        """Blind transfer (REFER) of the current call to ``uri``, on hold first as desk
        phones do; emits ``transferred`` or ``transfer_failed``."""
        from baresip.errors import TransferFailed

        call = self._need_call()
        if msg.get("hold", True):
            await call.hold()
        try:
            await call.transfer(str(msg["uri"]), timeout=float(msg.get("timeout", 20.0)))
        except TransferFailed as exc:
            self.sink.emit("transfer_failed", reason=str(exc))
            return
        self.sink.emit("transferred")

    async def cmd_consult(self, msg: dict[str, Any]) -> None:
        """Hold the current call and dial ``uri`` (the consultation of an attended transfer)."""
        call = self._need_call()
        if self.parked is not None:
            raise RuntimeError("already consulting")
        await call.hold()
        self.parked, self.call = call, None
        ua = self.reg_ua or self.direct_ua
        self._adopt(await ua.dial(str(msg["uri"])))

    async def cmd_attended_transfer(self, msg: dict[str, Any]) -> None:
        """Hand the held call's peer over to the consultation call's peer (REFER with
        Replaces); emits ``transferred`` or ``transfer_failed``."""
        from baresip.errors import TransferFailed

        if self.parked is None:
            raise RuntimeError("no held call to transfer")
        try:
            await self.parked.attended_transfer(
                self._need_call(), timeout=float(msg.get("timeout", 20.0)))
        except TransferFailed as exc:
            self.sink.emit("transfer_failed", reason=str(exc))
            return
        self.sink.emit("transferred")

    async def cmd_tone(self, msg: dict[str, Any]) -> None:
        freq = float(msg["freq"])
        if not 0 <= freq < 4000:
            raise ValueError(f"freq must be within 0..4000 Hz for 8 kHz audio, got {freq}")
        amplitude = float(msg.get("amplitude", 8000.0))
        self._tone = ToneGenerator(freq, rate=self._tone.rate, amplitude=amplitude)

    async def cmd_silence(self, msg: dict[str, Any]) -> None:
        self._tone = ToneGenerator(0.0, rate=self._tone.rate)

    async def cmd_dtmf(self, msg: dict[str, Any]) -> None:
        await self._need_call().send_dtmf(str(msg["digits"]))

    async def cmd_ping(self, msg: dict[str, Any]) -> None:
        self.sink.emit("pong")

    async def cmd_quit(self, msg: dict[str, Any]) -> None:
        self._unregister_on_quit = bool(msg.get("unregister", True))
        self._quit.set()

    _unregister_on_quit = True

    async def handle(self, line: str) -> None:
        """Run one command line; acknowledge it with ``ok`` or ``error``."""
        try:
            msg = json.loads(line)
            if not isinstance(msg, dict) or not isinstance(msg.get("cmd"), str):
                raise ValueError("a command is a JSON object with a string 'cmd'")
        except ValueError as exc:
            self.sink.emit("error", message=f"bad command line {line!r}: {exc}")
            return
        name, ident = msg["cmd"], msg.get("id")
        handler = getattr(self, f"cmd_{name}", None)
        if handler is None:
            self.sink.emit("error", cmd=name, id=ident, message=f"unknown command {name!r}")
            return
        try:
            await handler(msg)
        except Exception as exc:  # reported to the driver, which fails the test
            log.exception("command %s failed", name)
            self.sink.emit("error", cmd=name, id=ident, message=f"{type(exc).__name__}: {exc}")
            return
        self.sink.emit("ok", cmd=name, id=ident)

    # -- audio --------------------------------------------------------------

    def _pump_audio(self) -> None:
        """Feed the tone and collect received audio for the current call."""
        from baresip.errors import AudioNotActive, AudioRestarted

        call = self.call
        if call is None:
            return
        try:
            info = call.audio.info()
            if info.tx_ready and info.tx_sample_rate:
                if self._tone.rate != info.tx_sample_rate:
                    self._tone = ToneGenerator(
                        self._tone.freq, info.tx_sample_rate, self._tone.amplitude
                    )
                if self._tone.freq:
                    lead = int(_TX_LEAD * info.tx_sample_rate) * info.tx_channels * 2
                    need = (lead - info.tx_buffered) // (2 * info.tx_channels)
                    if need > 0:
                        mono = self._tone.next(need)
                        frames = np.repeat(mono, info.tx_channels) if info.tx_channels > 1 else mono
                        call.audio.write(frames.tobytes())
            if info.rx_ready:
                data = call.audio.read(65536)
                if data:
                    samples = pcm_to_samples(data)
                    if info.rx_channels > 1:
                        samples = samples[:: info.rx_channels]
                    self._rx.append(samples)
                    self._rx_count += samples.size
                    self._rx_rate = info.rx_sample_rate or 8000
        except (AudioNotActive, AudioRestarted):
            return

    _rx_rate = 8000

    def _report_audio(self) -> None:
        if self.call is None:
            return
        window = np.concatenate(self._rx) if self._rx else np.zeros(0, dtype=np.int16)
        self._rx.clear()
        if window.size < _MIN_SAMPLES * _REPORT_INTERVAL * self._rx_rate:
            self.sink.emit("audio", freq=0.0, rms=0.0, samples=int(window.size))
            return
        level = rms(window)
        freq = dominant_frequency(window, self._rx_rate) if level >= 1.0 else 0.0
        self.sink.emit("audio", freq=round(freq, 1), rms=round(level, 1), samples=int(window.size))

    async def audio_loop(self) -> None:
        """Pace audio every 20 ms and report what was received every 0.5 s."""
        next_report = time.monotonic() + _REPORT_INTERVAL
        while not self._quit.is_set():
            self._pump_audio()
            now = time.monotonic()
            if now >= next_report:
                self._report_audio()
                next_report = now + _REPORT_INTERVAL
            await asyncio.sleep(_TICK)

    # -- command input --------------------------------------------------------

    async def command_loop(self) -> None:
        """Read commands from stdin until ``quit`` or end of input."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while not self._quit.is_set():
            line = await reader.readline()
            if not line:
                # The driver is gone: leave without waiting on the network.
                self._unregister_on_quit = False
                self._quit.set()
                return
            text = line.decode("utf-8", "replace").strip()
            if text:
                await self.handle(text)

    async def run(self) -> None:
        """Serve commands until told to quit."""
        tasks = [
            asyncio.create_task(self.command_loop()),
            asyncio.create_task(self.audio_loop()),
        ]
        try:
            await self._quit.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _main(args: argparse.Namespace, sink: EventSink) -> int:
    phone = Phone(args, sink)
    try:
        await phone.start()
    except Exception as exc:
        sink.emit("error", message=f"phone failed to start: {type(exc).__name__}: {exc}")
        await phone.close(unregister=False)
        return 2
    sink.emit("ready", sip_port=phone.sip_port, pid=os.getpid(), name=args.name)
    code = 0
    unregister = True
    try:
        await asyncio.wait_for(phone.run(), args.max_lifetime)
        unregister = phone._unregister_on_quit
    except TimeoutError:
        sink.emit("error", message=f"max lifetime of {args.max_lifetime:g}s reached; exiting")
        code, unregister = 3, False
    await phone.close(unregister=unregister)
    return code


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the phone process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="phone", help="label used in logs and events")
    parser.add_argument("--user", default=None, help="user part for direct calls (default: name)")
    parser.add_argument("--port", type=int, default=0, help="local SIP port (0: pick a free one)")
    parser.add_argument("--max-lifetime", type=float, default=60.0, help="seconds before exit")
    parser.add_argument("--max-calls", type=int, default=1, help="further callers get 486")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--sip-trace", action="store_true", help="log SIP messages to stderr")
    parser.add_argument(
        "--native-log-level", default="warning", choices=("debug", "info", "warning", "error")
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: isolate the event stream, then run the phone."""
    args = parse_args(argv)
    sink = isolate_stdout()
    logging.basicConfig(
        level=logging.DEBUG if args.sip_trace else logging.WARNING,
        stream=sys.stderr,
        format=f"%(asctime)s {args.name} %(name)s %(levelname)s %(message)s",
    )
    if args.loop == "uvloop":
        import uvloop

        return uvloop.run(_main(args, sink))
    return asyncio.run(_main(args, sink))


if __name__ == "__main__":
    sys.exit(main())
