"""A pyVoIP 1.6.8 softphone in its own process, plus a tiny asyncio driver.

pyVoIP is a common Python SIP client, so the PBX should serve it despite its
quirks (see /work/shared/PEERS.md): UDP only; it always registers on start;
it answers a digest challenge the RFC 2069 way (no qop/nc/cnonce), with
``uri="sip:SERVER;transport=UDP"`` instead of the Request-URI, reading the
LAST WWW-Authenticate header and always computing MD5; its authenticated
INVITE reuses the first INVITE's Via branch; it blocks forever on a 407 to
an INVITE; it ignores 180 and reports only DIALING, ANSWERED and ENDED; and
its Call-IDs and branches repeat across processes. Every blocking pyVoIP
call therefore runs in a worker thread, and the whole process ends itself
after ``--max-lifetime`` seconds.

Script: ``python -m tests.peers.pyvoip_phone --registrar HOST:PORT --user U --password P``.
Commands (JSON lines on stdin): ``register {timeout?}``, ``call {number}``,
``answer``, ``reject``, ``hangup``, ``tone {freq}``, ``silence``, ``quit``.
Events (JSON lines on stdout): ``ready {sip_port}``, ``ok``/``error``,
``registered``, ``register_failed {status}``, ``invited {call_id}``,
``incoming {from, display, call_id}``, ``state {state}``, ``established``, ``closed``,
``dtmf {digit}``, and every 0.5 s during a call ``audio {freq, rms}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from tests.peers.audio import ToneGenerator, dominant_frequency, rms
from tests.peers.eventsink import EventSink, isolate_stdout
from tests.peers.phone_driver import Event, PeerProcess
from tests.peers.ports import LOOPBACK, free_port, free_port_block

_TICK = 0.02
_REPORT_INTERVAL = 0.5
_RTP_PORTS = 10  # pyVoIP picks one RTP port per call at random in its range


class PyVoipScript:
    """The phone process: pyVoIP in worker threads, commands on the main thread."""

    def __init__(self, args: argparse.Namespace, sink: EventSink) -> None:
        """Create (but do not start) the pyVoIP phone."""
        from pyVoIP.VoIP import VoIPPhone

        self.args = args
        self.sink = sink
        self.sip_port = args.port or free_port()
        rtp_low = free_port_block(_RTP_PORTS)
        host, _, port = args.registrar.rpartition(":")
        self.phone = VoIPPhone(
            host, int(port), args.user, args.password,
            myIP=LOOPBACK, callCallback=self._on_incoming, sipPort=self.sip_port,
            rtpPortLow=rtp_low, rtpPortHigh=rtp_low + _RTP_PORTS - 1,
        )  # fmt: skip
        # pyVoIP waits 30 s per unanswered REGISTER by default.
        self.phone.sip.register_timeout = args.register_timeout
        self.call: Any = None
        self._lock = threading.Lock()
        self._tone = ToneGenerator(0.0)
        self._stop = threading.Event()
        self._started = False

    # pyVoIP calls this from its own timer thread, 1 s after sending 180.
    def _on_incoming(self, call: Any) -> None:
        with self._lock:
            if self.call is not None:
                with contextlib.suppress(Exception):
                    call.deny()
                return
            self.call = call
        sender = call.request.headers.get("From", {})
        self.sink.emit(
            "incoming",
            **{
                "from": f"sip:{sender.get('address', '')}",
                "display": str(sender.get("caller", "")),
                "call_id": str(call.call_id),
            },
        )

    def monitor(self) -> None:
        """Report registration and call state changes; pace audio both ways."""
        from pyVoIP.VoIP import CallState, PhoneStatus

        last_status = None
        last_state = None
        tracked = None
        rx: list[np.ndarray] = []
        sent = 0
        call_start = 0.0
        next_report = time.monotonic() + _REPORT_INTERVAL
        while not self._stop.wait(_TICK):
            status = self.phone.get_status()
            if status != last_status and self._started:
                if status is PhoneStatus.REGISTERED:
                    self.sink.emit("registered")
                elif status is PhoneStatus.FAILED:
                    self.sink.emit("register_failed", status=status.value)
                last_status = status
            call = self.call
            if call is not tracked:
                tracked, last_state, rx, sent = call, None, [], 0
            if call is None:
                continue
            state = call.state
            if state is not last_state:
                self.sink.emit("state", state=state.value)
                if state is CallState.ANSWERED:
                    self.sink.emit("established")
                    call_start = time.monotonic()
                elif state is CallState.ENDED:
                    self.sink.emit("closed")
                    with self._lock:
                        if self.call is call:
                            self.call = None
                last_state = state
            if state is not CallState.ANSWERED:
                continue
            with contextlib.suppress(Exception):
                # 8-bit unsigned linear PCM is pyVoIP's audio format.
                due = int((time.monotonic() - call_start + 0.06) * 8000) - sent
                if due > 0 and self._tone.freq:
                    pcm = self._tone.next(due)
                    call.write_audio(((pcm.astype(np.int32) >> 8) + 128).astype(np.uint8).tobytes())
                if due > 0:
                    sent += due
                data = call.read_audio(160, blocking=False)
                rx.append((np.frombuffer(data, dtype=np.uint8).astype(np.int16) - 128) * 256)
                digit = call.get_dtmf(1)
                if digit:
                    self.sink.emit("dtmf", digit=digit)
            now = time.monotonic()
            if now >= next_report:
                window = np.concatenate(rx) if rx else np.zeros(0, dtype=np.int16)
                rx = []
                level = rms(window)
                freq = dominant_frequency(window) if level >= 1.0 else 0.0
                self.sink.emit("audio", freq=round(freq, 1), rms=round(level, 1))
                next_report = now + _REPORT_INTERVAL

    def _in_thread(self, name: str, fn: Any, *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:
                self.sink.emit("error", cmd=name, message=f"{type(exc).__name__}: {exc}")

        threading.Thread(target=run, name=f"pyvoip-{name}", daemon=True).start()

    def handle(self, msg: dict[str, Any]) -> bool:
        """Run one command; returns False when the process should exit."""
        name = msg.get("cmd")
        if name == "quit":
            return False
        if name == "register":
            if self._started:
                raise RuntimeError("already started")
            self._started = True
            # start() binds the SIP socket and registers, blocking meanwhile.
            self._in_thread("register", self.phone.start)
        elif name == "call":
            if self.call is not None:
                raise RuntimeError("already in a call")

            def dial(number: str) -> None:
                call = self.phone.call(number)
                with self._lock:
                    self.call = call
                self.sink.emit("invited", call_id=str(call.call_id))

            self._in_thread("call", dial, str(msg["number"]))
        elif name in ("answer", "reject", "hangup"):
            call = self.call
            if call is None:
                raise RuntimeError("no call in progress")
            {"answer": call.answer, "reject": call.deny, "hangup": call.hangup}[name]()
        elif name == "tone":
            self._tone = ToneGenerator(float(msg["freq"]))
        elif name == "silence":
            self._tone = ToneGenerator(0.0)
        else:
            raise ValueError(f"unknown command {name!r}")
        return True

    def stop(self) -> None:
        """Hang up and stop pyVoIP (which de-registers), bounded in time."""
        self._stop.set()
        if self._started:
            stopper = threading.Thread(target=self.phone.stop, daemon=True)
            stopper.start()
            stopper.join(self.args.register_timeout + 2.0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the phone process."""
    parser = argparse.ArgumentParser(description="pyVoIP test phone")
    parser.add_argument("--name", default="pyvoip")
    parser.add_argument("--registrar", required=True, help="HOST:PORT of the registrar")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--port", type=int, default=0, help="local SIP port (0: free one)")
    parser.add_argument("--max-lifetime", type=float, default=60.0)
    parser.add_argument("--register-timeout", type=float, default=3.0)
    args = parser.parse_args(argv)

    # pyVoIP prints debug output; keep it out of the event stream.
    sink = isolate_stdout()

    def expire() -> None:
        sink.emit("error", message=f"max lifetime of {args.max_lifetime:g}s reached; exiting")
        os._exit(3)

    timer = threading.Timer(args.max_lifetime, expire)
    timer.daemon = True
    timer.start()
    try:
        script = PyVoipScript(args, sink)
    except Exception as exc:
        sink.emit("error", message=f"phone failed to start: {type(exc).__name__}: {exc}")
        os._exit(2)
    sink.emit("ready", sip_port=script.sip_port, pid=os.getpid(), name=args.name)
    threading.Thread(target=script.monitor, name="pyvoip-monitor", daemon=True).start()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            if not isinstance(msg, dict):
                raise ValueError("a command is a JSON object")
            keep_going = script.handle(msg)
        except Exception as exc:
            sink.emit("error", cmd=str(msg.get("cmd")) if isinstance(msg, dict) else None,
                      id=msg.get("id") if isinstance(msg, dict) else None,
                      message=f"{type(exc).__name__}: {exc}")  # fmt: skip
            continue
        sink.emit("ok", cmd=msg.get("cmd"), id=msg.get("id"))
        if not keep_going:
            break
    script.stop()
    # pyVoIP leaves non-daemon timer threads behind; end the process outright.
    os._exit(0)


class PyVoipPhone(PeerProcess):
    """Driver for the pyVoIP phone process."""

    module = "tests.peers.pyvoip_phone"

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls,
        registrar: str,
        user: str,
        password: str,
        *,
        name: str = "pyvoip",
        port: int = 0,
        max_lifetime: float = 60.0,
        register_timeout: float = 3.0,
    ) -> AsyncIterator[PyVoipPhone]:
        """Spawn the process (it does not register until :meth:`register`)."""
        args = [
            "--name", name, "--registrar", registrar, "--user", user,
            "--password", password, "--port", str(port),
            "--max-lifetime", f"{max_lifetime:g}", "--register-timeout", f"{register_timeout:g}",
        ]  # fmt: skip
        async with cls.launch(name, args) as phone:
            phone.user = user
            yield phone

    async def register(self, timeout: float = 10.0) -> Event:
        """Bind and register; returns ``registered`` or fails with the phone's context."""
        start = len(self.events)
        await self.command("register")

        def outcome() -> Event | None:
            for event in self.events[start:]:
                if event.get("event") in ("registered", "register_failed", "error"):
                    return event
            return None

        event: Event = await self._until(outcome, timeout, "registration outcome")
        if event["event"] != "registered":
            raise self._failure(f"registration failed: {event}")
        return event

    async def call(self, number: str) -> None:
        """Call ``number`` at the registrar; follow with ``wait_for("established")``."""
        await self.command("call", number=number)

    async def answer(self) -> None:
        """Answer the incoming call."""
        await self.command("answer")

    async def reject(self) -> None:
        """Refuse the incoming call (486)."""
        await self.command("reject")

    async def hangup(self) -> None:
        """Hang up an answered call (pyVoIP cannot cancel a ringing one)."""
        await self.command("hangup")

    async def tone(self, freq: float) -> None:
        """Send a continuous sine of ``freq`` Hz."""
        await self.command("tone", freq=freq)


if __name__ == "__main__":
    sys.exit(main())
