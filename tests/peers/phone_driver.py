"""Drive a scripted softphone process (:mod:`tests.peers.baresip_phone`) from asyncio tests.

Example::

    async with Phone.start(name="alice") as alice, Phone.start(name="bob") as bob:
        await alice.dial(bob.direct_uri())
        await bob.wait_for("incoming")
        await bob.answer()
        await alice.wait_for("established")
        await alice.tone(600)
        assert abs(await bob.received_frequency(expect=600) - 600) <= 20

Every wait is bounded; when one expires the assertion message carries the
phone's recent events and the tail of its stderr. The process is killed by
PID when the ``async with`` block ends, whatever happened inside it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Self

from tests.peers.ports import LOOPBACK

REPO_ROOT = Path(__file__).resolve().parents[2]

Event = dict[str, Any]


class PhoneError(AssertionError):
    """A phone did not do what the test expected (an assertion, with context)."""


class PeerProcess:
    """A peer process that takes JSON-line commands and reports JSON-line events.

    Subclasses name the module to run and add typed actions; this class owns
    the process, the event log, the bounded waits and the clean-up.
    """

    module = ""
    """The ``python -m`` module of the peer script."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        """Wrap a started process; use the subclass's ``start`` instead."""
        self.name = name
        self.proc = proc
        self.events: list[Event] = []
        """Every event received so far, in order."""
        self.sip_port = 0
        """The local SIP port (UDP and TCP) the phone listens on."""
        self.user = name
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)
        self._changed = asyncio.Event()
        self._cursors: dict[str, int] = {}
        self._next_id = 0
        self._eof = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int:
        """The phone process's PID."""
        return self.proc.pid

    # -- life cycle -----------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(
        cls, name: str, args: list[str], *, start_timeout: float = 20.0, attempts: int = 1
    ) -> AsyncIterator[Self]:
        """Spawn ``python -m <module> <args>``, wait for ``ready``, kill by PID on exit.

        With ``attempts`` > 1, a process that could not bind its port (another
        process took the free port first) is replaced by a fresh one.
        """
        for attempt in range(1, attempts + 1):
            peer = await cls._spawn(name, args)
            try:
                ready = await peer.wait_for("ready", timeout=start_timeout)
            except PhoneError:
                await peer._shutdown()
                lost_race = any("in use" in str(e.get("message", "")) for e in peer.events)
                if lost_race and attempt < attempts:
                    continue
                raise
            break
        peer.sip_port = int(ready["sip_port"])
        try:
            yield peer
        finally:
            await peer._shutdown()

    @classmethod
    async def _spawn(cls, name: str, args: list[str]) -> Self:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", cls.module, *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
        )  # fmt: skip
        peer = cls(name, proc)
        peer._tasks = [
            asyncio.create_task(peer._read_events()),
            asyncio.create_task(peer._read_stderr()),
        ]
        return peer

    async def _shutdown(self) -> None:
        if self.proc.returncode is None and not self._eof:
            with contextlib.suppress(Exception):
                await self._write({"cmd": "quit", "unregister": True})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 8.0)
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def quit(self, *, unregister: bool = True, timeout: float = 10.0) -> int:
        """Ask the phone to hang up, unregister and exit; returns its exit code."""
        await self._write({"cmd": "quit", "unregister": unregister})
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise self._failure(f"did not exit within {timeout:g}s of quit") from None

    # -- plumbing ---------------------------------------------------------------

    async def _read_events(self) -> None:
        assert self.proc.stdout is not None
        try:
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    break
                try:
                    event = json.loads(line)
                except ValueError:
                    self._stderr.append(f"[unparsable event line] {line!r}")
                    continue
                if isinstance(event, dict):
                    event["at"] = time.monotonic()
                    self.events.append(event)
                    self._notify()
        finally:
            self._eof = True
            self._notify()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                return
            self._stderr.append(line.decode("utf-8", "replace").rstrip())

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _write(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        await self.proc.stdin.drain()

    def describe(self, last: int = 25) -> str:
        """Recent events and stderr, for failure messages."""
        lines = [f"phone {self.name!r} pid={self.proc.pid} sip_port={self.sip_port}"]
        if self.proc.returncode is not None:
            lines.append(f"process exited with code {self.proc.returncode}")
        lines.append(f"--- last {last} events ---")
        for event in self.events[-last:]:
            shown = {k: v for k, v in event.items() if k != "at"}
            lines.append(json.dumps(shown))
        lines.append("--- stderr (tail) ---")
        lines.extend(list(self._stderr)[-40:])
        return "\n".join(lines)

    def _failure(self, what: str) -> PhoneError:
        return PhoneError(f"{self.name}: {what}\n{self.describe()}")

    async def _until(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        """Wait until ``check()`` returns something truthy; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if self._eof:
                # Give a final event already in flight a moment, then fail.
                raise self._failure(f"{what}: phone process ended")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._failure(f"{what}: not seen within {timeout:g}s")
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    async def command(self, cmd: str, ack_timeout: float = 10.0, **params: Any) -> Event:
        """Send a command and wait for its acknowledgement; fail on ``error``."""
        self._next_id += 1
        ident = self._next_id
        start = len(self.events)
        try:
            await self._write({"cmd": cmd, "id": ident, **params})
        except (ConnectionError, RuntimeError) as exc:
            raise self._failure(f"cannot send {cmd!r}: {exc}") from None

        def ack() -> Event | None:
            for event in self.events[start:]:
                if event.get("id") == ident and event.get("event") in ("ok", "error"):
                    return event
            return None

        event: Event = await self._until(ack, ack_timeout, f"acknowledgement of {cmd!r}")
        if event["event"] == "error":
            raise self._failure(f"command {cmd!r} failed: {event.get('message')}")
        return event

    # -- waiting on events -----------------------------------------------------

    async def wait_for(
        self,
        name: str,
        timeout: float = 10.0,
        predicate: Callable[[Event], bool] | None = None,
    ) -> Event:
        """Return the next not-yet-consumed event called ``name`` (matching ``predicate``).

        Each name has its own cursor: an event already received counts, and
        each one is returned once, so two calls in a row return two events.
        """

        def find() -> Event | None:
            start = self._cursors.get(name, 0)
            for index in range(start, len(self.events)):
                event = self.events[index]
                if event.get("event") == name and (predicate is None or predicate(event)):
                    self._cursors[name] = index + 1
                    return event
            return None

        event: Event = await self._until(find, timeout, f"event {name!r}")
        return event

    def seen(self, name: str) -> list[Event]:
        """All events called ``name`` received so far."""
        return [e for e in self.events if e.get("event") == name]

    async def received_frequency(
        self,
        timeout: float = 5.0,
        *,
        expect: float | None = None,
        tolerance: float = 20.0,
        min_rms: float = 200.0,
    ) -> float:
        """Dominant frequency of the audio this phone hears, from fresh reports.

        Only ``audio`` reports produced after this call count. Without
        ``expect``, returns the first audible report's frequency; with it,
        waits for a report within ``tolerance`` Hz of ``expect``.
        """
        start = len(self.events)

        def heard() -> float | None:
            for event in self.events[start:]:
                if event.get("event") != "audio" or float(event.get("rms", 0.0)) < min_rms:
                    continue
                freq = float(event["freq"])
                if expect is None or abs(freq - expect) <= tolerance:
                    return freq
            return None

        what = "audible tone" if expect is None else f"tone of {expect:g}±{tolerance:g} Hz"
        result: float = await self._until(heard, timeout, what)
        return result

    async def received_digits(self, n: int, timeout: float = 10.0) -> str:
        """The next ``n`` DTMF digits this phone receives (consumed in order)."""
        digits: list[str] = []
        deadline = time.monotonic() + timeout
        while len(digits) < n:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                event = await self.wait_for("dtmf", timeout=remaining)
            except PhoneError as exc:
                raise PhoneError(
                    f"received only {''.join(digits)!r} of {n} digits; {exc}"
                ) from None
            digits.append(str(event["digit"]))
        return "".join(digits)

    # -- actions -----------------------------------------------------------------


class Phone(PeerProcess):
    """A baresip-python softphone in its own process (:mod:`tests.peers.baresip_phone`)."""

    module = "tests.peers.baresip_phone"

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls,
        name: str = "phone",
        *,
        port: int = 0,
        user: str | None = None,
        max_lifetime: float = 60.0,
        loop: str = "asyncio",
        max_calls: int = 1,
        sip_trace: bool = False,
        start_timeout: float = 20.0,
    ) -> AsyncIterator[Phone]:
        """Spawn a phone process and wait until it is ready.

        Args:
            name: Label for messages; also the user part for direct calls.
            port: Local SIP port; 0 lets the phone pick a free one.
            user: User part for direct calls, if different from ``name``.
            max_lifetime: Seconds after which the process exits by itself.
            loop: Event loop inside the phone process: "asyncio" or "uvloop".
            max_calls: Simultaneous calls; further callers are answered 486.
            sip_trace: Log every SIP message to the phone's stderr.
            start_timeout: Seconds to wait for the ``ready`` event.
        """
        args = [
            "--name", name, "--port", str(port), "--max-lifetime", f"{max_lifetime:g}",
            "--loop", loop, "--max-calls", str(max_calls),
        ]  # fmt: skip
        if user is not None:
            args += ["--user", user]
        if sip_trace:
            args.append("--sip-trace")
        attempts = 3 if port == 0 else 1
        async with cls.launch(name, args, start_timeout=start_timeout, attempts=attempts) as phone:
            phone.user = user or name
            yield phone

    def direct_uri(self, transport: str = "udp") -> str:
        """A SIP URI that reaches this phone directly (no registrar)."""
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"sip:{self.user}@{LOOPBACK}:{self.sip_port}{suffix}"

    async def register(
        self,
        registrar: str,
        user: str,
        password: str,
        *,
        domain: str | None = None,
        transport: str = "udp",
        expires: int = 600,
        timeout: float = 10.0,
    ) -> Event:
        """Register and return the ``registered`` event; fails on ``register_failed``."""
        event = await self.try_register(
            registrar, user, password, domain=domain, transport=transport,
            expires=expires, timeout=timeout,
        )  # fmt: skip
        if event["event"] != "registered":
            raise self._failure(
                f"registration of {user} at {registrar} failed: "
                f"{event.get('code')} {event.get('reason')}"
            )
        return event

    async def try_register(
        self,
        registrar: str,
        user: str,
        password: str,
        *,
        domain: str | None = None,
        transport: str = "udp",
        expires: int = 600,
        timeout: float = 10.0,
    ) -> Event:
        """Register and return the outcome event, ``registered`` or ``register_failed``."""
        start = len(self.events)
        params: dict[str, Any] = {
            "registrar": registrar, "user": user, "password": password,
            "transport": transport, "expires": expires, "timeout": timeout,
        }  # fmt: skip
        if domain is not None:
            params["domain"] = domain
        await self.command("register", ack_timeout=timeout + 5.0, **params)

        def outcome() -> Event | None:
            for event in self.events[start:]:
                if event.get("event") in ("registered", "register_failed"):
                    return event
            return None

        event: Event = await self._until(outcome, 2.0, "registration outcome")
        return event

    async def unregister(self, timeout: float = 5.0) -> None:
        """Remove the registration (REGISTER with Expires 0)."""
        await self.command("unregister", ack_timeout=timeout + 5.0, timeout=timeout)

    async def dial(self, uri: str, headers: dict[str, str] | None = None) -> None:
        """Start a call; follow it with ``wait_for("ringing"/"established"/"closed")``."""
        await self.command("dial", uri=uri, headers=headers or {})

    async def answer(self) -> None:
        """Answer the ringing incoming call (200 OK)."""
        await self.command("answer")

    async def reject(self) -> None:
        """Refuse the ringing incoming call with 486 Busy Here."""
        await self.command("reject")

    async def hangup(self) -> None:
        """End the current call (BYE, or CANCEL while it is still ringing)."""
        await self.command("hangup")

    async def hold(self) -> None:
        """Put the call on hold (re-INVITE)."""
        await self.command("hold")

    async def resume(self) -> None:
        """Take the call off hold."""
        await self.command("resume")

    async def transfer(self, uri: str, *, hold: bool = True, timeout: float = 20.0) -> None:
        """Blind-transfer the call to ``uri`` (REFER); returns once the outcome is known:
        a ``transferred`` or ``transfer_failed`` event."""
        await self.command("transfer", ack_timeout=timeout + 10.0, uri=uri, hold=hold,
                           timeout=timeout)

    async def consult(self, uri: str) -> None:
        """Hold the current call and dial ``uri`` for an attended transfer."""
        await self.command("consult", ack_timeout=15.0, uri=uri)

    async def attended_transfer(self, timeout: float = 20.0) -> None:
        """Join the held call's peer with the consultation call's peer (REFER + Replaces)."""
        await self.command("attended_transfer", ack_timeout=timeout + 10.0, timeout=timeout)

    async def tone(self, freq: float, amplitude: float = 8000.0) -> None:
        """Send a continuous sine of ``freq`` Hz as this phone's microphone."""
        await self.command("tone", freq=freq, amplitude=amplitude)

    async def silence(self) -> None:
        """Stop sending a tone."""
        await self.command("silence")

    async def send_dtmf(self, digits: str, timeout: float = 15.0) -> None:
        """Send DTMF digits as RFC 4733 telephone-events; returns once all are sent."""
        await self.command("dtmf", ack_timeout=timeout, digits=digits)
