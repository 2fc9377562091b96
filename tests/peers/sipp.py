"""Run SIPp scenarios against a target and read back what happened.

A run gets its own working directory (CSV, traces, statistics), its own free
SIP and media ports on 127.0.0.1, and is always bounded by ``-m`` and
``-timeout`` plus a hard wall-clock limit after which the process is killed
by PID. Scenario files live in ``tests/peers/scenarios``; their headers list
the ``-s`` and ``-key`` values each one expects.

Digest credentials travel in an injection CSV, one line per user::

    SEQUENTIAL
    alice;[authentication username=alice password=secret];

SIPp cannot expand a CSV field inside the ``[authentication]`` keyword, so the
second column carries the whole keyword. SIPp 3.6 answers MD5 challenges only;
given several WWW-Authenticate headers it reads them as one comma-joined value
and takes the first ``algorithm=`` it finds, so a 401 whose first challenge is
SHA-256 makes it abort (``authentication must use MD5 or AKAv1-MD5``).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tests.peers.ports import LOOPBACK, free_port, free_port_block

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
"""Folder holding the project's SIPp scenarios."""

_TRACE_TAIL = 200_000  # bytes of each trace kept in a result: enough to debug, bounded for load

# SIPp's documented exit codes (sipp -h, "Exit codes").
EXIT_MEANINGS = {
    0: "all calls successful",
    1: "at least one call failed",
    97: "exit on internal command",
    99: "normal exit without calls processed",
    253: "RTP validation failure",
    254: "fatal error binding a socket",
    255: "fatal error",
}


def sipp_binary() -> str:
    """Path of the ``sipp`` executable; fails loudly when it is missing."""
    path = shutil.which("sipp")
    if path is None:
        raise FileNotFoundError(
            "sipp is not installed: apt-get install sip-tester (the CI script installs it)"
        )
    return path


def scenario_path(name: str | Path) -> Path:
    """Resolve a scenario by bare file name (``"uac_busy.xml"``) or by path."""
    path = Path(name)
    if not path.is_absolute() and not path.exists():
        path = SCENARIOS / path
    if not path.is_file():
        raise FileNotFoundError(f"SIPp scenario not found: {name}")
    return path


def _check_credential(what: str, value: str) -> None:
    # A CSV field ends at ';' and the keyword at ']' or whitespace: such
    # characters would silently change what SIPp sends.
    bad = set(';[]\r\n\t "')
    if not value or any(ch in bad for ch in value):
        raise ValueError(f"{what} {value!r} cannot travel in a SIPp injection file")


def write_users_csv(path: Path, users: Sequence[tuple[str, str]]) -> Path:
    """Write an injection file: field0 = user, field1 = the authentication keyword."""
    if not users:
        raise ValueError("users must not be empty")
    lines = ["SEQUENTIAL"]
    for user, password in users:
        _check_credential("user", user)
        _check_credential("password", password)
        lines.append(f"{user};[authentication username={user} password={password}];")
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


@dataclass(frozen=True)
class SippResult:
    """What one SIPp run did."""

    command: list[str]
    """The exact command line."""
    returncode: int
    """SIPp's exit status (see :data:`EXIT_MEANINGS`); -9 if it had to be killed."""
    successful: int
    """Calls that reached the end of the scenario."""
    failed: int
    """Calls that failed (unexpected message, timeout, ...)."""
    elapsed: float
    """Wall-clock seconds the process ran."""
    stdout: str = ""
    stderr: str = ""
    errors: str = ""
    """The error trace (``-trace_err``): unexpected messages and aborts."""
    messages: str = ""
    """The message trace (``-trace_msg``), when enabled; its tail for long runs."""
    logs: str = ""
    """Output of the scenario's ``<log>`` actions."""
    stats: dict[str, str] = field(default_factory=dict)
    """The last row of the ``-trace_stat`` file, column name to value."""

    @property
    def ok(self) -> bool:
        """True when SIPp exited 0 and no call failed."""
        return self.returncode == 0 and self.failed == 0

    def describe(self) -> str:
        """A multi-line account for assertion messages."""
        meaning = EXIT_MEANINGS.get(self.returncode, "unknown")
        parts = [
            f"sipp exit {self.returncode} ({meaning}), successful={self.successful} "
            f"failed={self.failed}, {self.elapsed:.1f}s",
            "command: " + " ".join(self.command),
        ]
        for title, text in (
            ("errors", self.errors),
            ("stderr", self.stderr),
            ("logs", self.logs),
            ("messages (tail)", self.messages[-6000:]),
        ):
            if text.strip():
                parts.append(f"--- {title} ---\n{text.strip()}")
        return "\n".join(parts)


@dataclass
class SippRun:
    """The parameters of one SIPp run; :meth:`command` renders them."""

    scenario: str | Path
    target: str | None = None
    """``host:port`` to send to; None for a UAS that only waits."""
    calls: int = 1
    """``-m``: stop after this many calls."""
    timeout: float = 30.0
    """``-timeout`` in seconds (a run reaching it counts as failed)."""
    transport: Literal["udp", "tcp"] = "udp"
    local_ip: str = LOOPBACK
    """``-i``: the address SIPp sends from (another loopback address plays a carrier)."""
    local_port: int = 0
    """``-p``; 0 picks a free port."""
    media_port: int = 0
    """``-mp``; 0 picks a free block of four."""
    service: str | None = None
    """``-s``: the user part of the Request-URI (the extension dialled)."""
    keys: Mapping[str, str] = field(default_factory=dict)
    """``-key NAME VALUE`` pairs, see each scenario's header."""
    users: Sequence[tuple[str, str]] | None = None
    """``(user, password)`` pairs written to the injection CSV."""
    inject: Path | None = None
    """A ready-made injection CSV (instead of ``users``)."""
    duration_ms: int | None = None
    """``-d``: the length of a bare ``<pause/>``."""
    rate: float | None = None
    """``-r``: calls per second."""
    limit: int | None = None
    """``-l``: simultaneous calls."""
    trace_msg: bool = True
    auto_answer: bool = True
    """``-aa``: answer INFO, NOTIFY, OPTIONS and UPDATE with 200 automatically."""
    extra_args: Sequence[str] = ()

    def command(self, workdir: Path) -> list[str]:
        """The command line, with ports fixed and files placed in ``workdir``."""
        if self.calls < 1:
            raise ValueError(f"calls must be >= 1, got {self.calls}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        if self.users is not None and self.inject is not None:
            raise ValueError("give users or inject, not both")
        if self.local_port == 0:
            self.local_port = free_port()
        if self.media_port == 0:
            self.media_port = free_port_block(4)
        cmd = [sipp_binary()]
        if self.target is not None:
            cmd.append(self.target)
        cmd += [
            "-sf", str(scenario_path(self.scenario)),
            "-i", self.local_ip,
            "-p", str(self.local_port),
            "-mp", str(self.media_port),
            "-t", "t1" if self.transport == "tcp" else "u1",
            "-m", str(self.calls),
            "-timeout", f"{self.timeout:g}s",
            "-timeout_error",
            "-nostdin",
            "-trace_err", "-error_file", str(workdir / "errors.log"),
            "-trace_stat", "-stf", str(workdir / "stats.csv"), "-fd", "1",
            "-trace_screen", "-screen_file", str(workdir / "screen.log"),
            "-trace_logs", "-log_file", str(workdir / "logs.log"),
        ]  # fmt: skip
        if self.trace_msg:
            cmd += ["-trace_msg", "-message_file", str(workdir / "messages.log")]
        if self.auto_answer:
            cmd.append("-aa")
        if self.service is not None:
            cmd += ["-s", self.service]
        if self.duration_ms is not None:
            cmd += ["-d", str(self.duration_ms)]
        if self.rate is not None:
            cmd += ["-r", f"{self.rate:g}"]
        if self.limit is not None:
            cmd += ["-l", str(self.limit)]
        for name, value in self.keys.items():
            if not name or any(ch.isspace() for ch in name) or any(ch in "\r\n" for ch in value):
                raise ValueError(f"bad -key {name!r} {value!r}")
            cmd += ["-key", name, value]
        if self.users is not None:
            cmd += ["-inf", str(write_users_csv(workdir / "users.csv", self.users))]
        elif self.inject is not None:
            cmd += ["-inf", str(self.inject)]
        cmd += list(self.extra_args)
        return cmd


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - _TRACE_TAIL))
            return fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def parse_stats(path: Path) -> dict[str, str]:
    """The last row of a ``-trace_stat`` CSV as a column-to-value map ({} if absent)."""
    try:
        raw = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    rows = [row for row in csv.reader(raw.splitlines(), delimiter=";") if row]
    if len(rows) < 2 or "SuccessfulCall(C)" not in rows[0]:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def parse_screen_counts(screen: str) -> tuple[int, int]:
    """(successful, failed) from the last statistics screen, -1 when not found."""
    successful = failed = -1
    for line in screen.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 3:
            continue
        name = cells[0].lower()
        # Columns: name | periodic | cumulative; the cumulative one counts.
        if name.startswith("successful call") and cells[2].isdigit():
            successful = int(cells[2])
        elif name.startswith("failed call") and cells[2].isdigit():
            failed = int(cells[2])
    return successful, failed


def _int(value: str | None) -> int:
    try:
        return int(value) if value is not None else -1
    except ValueError:
        return -1


def _collect(command: list[str], workdir: Path, returncode: int, elapsed: float) -> SippResult:
    stats = parse_stats(workdir / "stats.csv")
    successful = _int(stats.get("SuccessfulCall(C)"))
    failed = _int(stats.get("FailedCall(C)"))
    if successful < 0 or failed < 0:
        successful, failed = parse_screen_counts(_tail(workdir / "screen.log"))
    return SippResult(
        command=command,
        returncode=returncode,
        successful=max(successful, 0),
        failed=max(failed, 0),
        elapsed=elapsed,
        stdout=_tail(workdir / "stdout.log")[-8000:],
        stderr=_tail(workdir / "stderr.log")[-8000:],
        errors=_tail(workdir / "errors.log"),
        messages=_tail(workdir / "messages.log"),
        logs=_tail(workdir / "logs.log"),
        stats=stats,
    )


class SippProcess:
    """A SIPp process started in the background (for UAS roles).

    Use as ``async with`` to guarantee it is stopped (by PID) on exit.
    """

    def __init__(self, run: SippRun, *, hard_limit: float | None = None) -> None:
        """Prepare (but do not start) a process for ``run``."""
        self.run = run
        self._hard_limit = hard_limit if hard_limit is not None else run.timeout + 15.0
        self._workdir = Path(tempfile.mkdtemp(prefix="sipp-"))
        self.command = run.command(self._workdir)
        self._proc: asyncio.subprocess.Process | None = None
        self._started = 0.0
        self._result: SippResult | None = None

    @property
    def local_port(self) -> int:
        """The SIP port SIPp listens on."""
        return self.run.local_port

    @property
    def pid(self) -> int | None:
        """The process id once started."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> SippProcess:
        """Launch SIPp; returns once the process exists (not once it has bound)."""
        with (
            (self._workdir / "stdout.log").open("wb") as out,
            (self._workdir / "stderr.log").open("wb") as err,
        ):
            self._proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self._workdir,
                start_new_session=True,
            )
        self._started = time.monotonic()
        return self

    async def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to finish (killing it after ``timeout`` or the hard limit)."""
        if self._result is not None:
            return self._result
        if self._proc is None:
            raise RuntimeError("SIPp was not started")
        if timeout is None:
            remaining = max(0.0, self._started + self._hard_limit - time.monotonic())
        else:
            remaining = timeout
        try:
            returncode = await asyncio.wait_for(self._proc.wait(), remaining)
        except TimeoutError:
            self._kill()
            await self._proc.wait()
            returncode = -9
        elapsed = time.monotonic() - self._started
        self._result = _collect(self.command, self._workdir, returncode, elapsed)
        shutil.rmtree(self._workdir, ignore_errors=True)
        return self._result

    def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGKILL)

    async def stop(self) -> SippResult:
        """Stop SIPp now (SIGTERM, then SIGKILL) and return what it did."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 3.0)
            self._kill()
        return await self.wait(timeout=5.0)

    async def __aenter__(self) -> SippProcess:
        if self._proc is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._result is None:
            await self.stop()


async def start_sipp(run: SippRun | None = None, /, **kwargs: object) -> SippProcess:
    """Start SIPp in the background; give a :class:`SippRun` or its fields."""
    spec = run if run is not None else SippRun(**kwargs)  # type: ignore[arg-type]
    process = SippProcess(spec)
    await process.start()
    # SIPp binds its sockets right after parsing the scenario; a UAS must be
    # listening before anything is sent to it.
    await asyncio.sleep(0.3)
    return process


async def run_sipp(run: SippRun | None = None, /, **kwargs: object) -> SippResult:
    """Run SIPp to completion; give a :class:`SippRun` or its fields."""
    spec = run if run is not None else SippRun(**kwargs)  # type: ignore[arg-type]
    process = SippProcess(spec)
    await process.start()
    return await process.wait()


def run_sipp_sync(run: SippRun | None = None, /, **kwargs: object) -> SippResult:
    """Blocking variant of :func:`run_sipp` for synchronous tests."""
    spec = run if run is not None else SippRun(**kwargs)  # type: ignore[arg-type]
    workdir = Path(tempfile.mkdtemp(prefix="sipp-"))
    command = spec.command(workdir)
    started = time.monotonic()
    with (workdir / "stdout.log").open("wb") as out, (workdir / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=workdir,
            start_new_session=True,
        )  # fmt: skip
        try:
            returncode = proc.wait(timeout=spec.timeout + 15.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            returncode = -9
    result = _collect(command, workdir, returncode, time.monotonic() - started)
    shutil.rmtree(workdir, ignore_errors=True)
    return result


@contextlib.asynccontextmanager
async def registered_callee(
    target: str,
    user: str,
    password: str,
    *,
    scenario: str = "uas_answer.xml",
    calls: int = 1,
    timeout: float = 30.0,
    domain: str | None = None,
    expires: int = 3600,
    transport: Literal["udp", "tcp"] = "udp",
) -> AsyncIterator[SippProcess]:
    """Register ``user`` from a fresh port, then serve calls there with a UAS scenario.

    SIPp cannot register and then act as a UAS in one scenario (incoming
    INVITEs carry a new Call-ID), so this runs ``register_auth.xml`` from a
    chosen port, and then the UAS scenario on that same port: the Contact
    bound at the registrar points at the UAS. The UAS process is stopped on
    exit; read its result with ``await callee.wait()`` inside the block.
    """
    port = free_port()
    reg = await run_sipp(
        SippRun(
            "register_auth.xml", target, local_port=port, transport=transport,
            users=[(user, password)], timeout=min(timeout, 15.0),
            keys={"domain": domain or target, "expires": str(expires)},
        )
    )  # fmt: skip
    if not reg.ok:
        raise AssertionError(f"registering {user} from port {port} failed:\n{reg.describe()}")
    callee = await start_sipp(
        SippRun(scenario, None, local_port=port, calls=calls, timeout=timeout, transport=transport)
    )
    try:
        yield callee
    finally:
        await callee.stop()
