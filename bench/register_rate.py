"""Authenticated REGISTER rate of the PBX, driven by SIPp.

Usage: python bench/register_rate.py [--rates 2000 5000 10000 15000] [--seconds 10]
                                     [--users 1000] [--profile RATE] [--quick]

The real PBX (``python -m pbx run``) runs as a subprocess pinned to core 0 (``taskset -c 0``)
and SIPp to core 1, on free loopback ports, with a generated config: ``--users`` users
(``u1000`` .. with extensions ``1000`` ..), ``auth_algorithms: [MD5, SHA-256]`` (SIPp answers
only the first challenge and only MD5), logging at warning level and SQLite in a temporary
directory. Each rate step is one SIPp run of ``tests/peers/scenarios/register_auth.xml``:

    REGISTER -> 401 (digest challenge) -> REGISTER with Authorization -> 200

One "registration" is that whole exchange (two REGISTER transactions). The users are taken in
turn from an injection file, so every step refreshes the bindings of all users many times.
Printed per step: the target rate, completed registrations per second, REGISTER requests per
second (two per registration), failed %, SIPp retransmissions, the PBX's CPU use (all its
threads, from /proc/PID/stat) and memory, SIPp's CPU use, and the median response time.

``--profile RATE`` adds one more step at RATE with ``py-spy record`` attached to the PBX (pip
package ``py-spy``) and prints the top functions by self and by cumulative samples.
Every process started here is bounded in time and stopped by its PID. ``call_rate.py`` reuses
the harness below (PBX process, SIPp step, CPU sampling, profile summary).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.peers.ports import LOOPBACK, free_port  # noqa: E402

SCENARIOS = ROOT / "tests" / "peers" / "scenarios"
BENCH_SCENARIOS = Path(__file__).resolve().parent / "sipp_scenarios"
PBX_CORE = "0"
SIPP_CORE = "1"
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


# -- the machine ---------------------------------------------------------------------------------


def machine_description() -> str:
    """CPU model, core count and kernel, for the record."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (f"{model}, nproc={os.cpu_count()}, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def require_tools(profile: bool) -> None:
    """Fail early with a clear message when a needed program is missing."""
    needed = ["taskset", "sipp"] + (["py-spy"] if profile else [])
    missing = [name for name in needed if shutil.which(name) is None]
    if missing:
        raise SystemExit(f"missing programs: {', '.join(missing)} (taskset: util-linux, sipp: "
                         "apt-get install sip-tester, py-spy: pip install py-spy)")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs two cores: the PBX on core 0, SIPp on core 1")


# -- /proc sampling ------------------------------------------------------------------------------


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU seconds of a process (all its threads), or of one of its threads."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    raw = Path(path).read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    # Fields 14 and 15 of proc(5) (utime, stime); the slice starts at field 3.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * _PAGE / 2**20


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat, idle and iowait excluded)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / _TICKS


def runqueue_wait_seconds(pid: int) -> float:
    """Seconds the threads of ``pid`` spent runnable but waiting for a CPU (schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def udp_receive_drops() -> int:
    """Datagrams the kernel dropped for want of room in a receive buffer (all UDP sockets of
    the machine; /proc/net/snmp RcvbufErrors)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
             if line.startswith("Udp:")]
    if len(lines) < 2 or "RcvbufErrors" not in lines[0]:
        return 0
    return int(lines[1][lines[0].index("RcvbufErrors")])


@dataclass
class LoadWindow:
    """CPU use during one step: the PBX's, its run-queue wait, and everybody else's."""

    pid: int
    started: float = 0.0
    busy0: float = 0.0
    cpu0: float = 0.0
    main0: float = 0.0
    wait0: float = 0.0
    drops0: int = 0
    udp_drops: int = 0
    """UDP datagrams dropped by full receive buffers during the step (machine-wide)."""
    pbx_cpu_s: float = 0.0
    pbx_cpu_pct: float = 0.0
    pbx_main_pct: float = 0.0
    """The main thread's share (the event loop); the rest is the database writer thread."""
    pbx_wait_pct: float = 0.0
    others_pct: float = 0.0
    """Busy time of every other process (all cores), in % of one core; SIPp excluded."""

    def start(self) -> LoadWindow:
        self.started = time.monotonic()
        self.busy0 = machine_busy_seconds()
        self.cpu0 = cpu_seconds(self.pid)
        self.main0 = cpu_seconds(self.pid, self.pid)
        self.wait0 = runqueue_wait_seconds(self.pid)
        self.drops0 = udp_receive_drops()
        return self

    def stop(self, sipp_cpu: float = 0.0) -> LoadWindow:
        wall = max(time.monotonic() - self.started, 1e-6)
        cpu = cpu_seconds(self.pid) - self.cpu0
        self.pbx_cpu_s = cpu
        self.udp_drops = udp_receive_drops() - self.drops0
        self.pbx_cpu_pct = 100 * cpu / wall
        self.pbx_main_pct = 100 * (cpu_seconds(self.pid, self.pid) - self.main0) / wall
        self.pbx_wait_pct = 100 * (runqueue_wait_seconds(self.pid) - self.wait0) / wall
        others = machine_busy_seconds() - self.busy0 - cpu - sipp_cpu
        self.others_pct = max(0.0, 100 * others / wall)
        return self


def wait_for_quiet(pid: int | None, threshold: float = 10.0, patience: float = 120.0) -> float:
    """Wait (at most ``patience`` s) until the PBX is idle (under 5 % CPU: the previous step's
    calls and timers are done) and other processes use under ``threshold`` % of a core (the
    machine may be shared, and a busy neighbour on the PBX's core would skew the figures).
    Returns the last load of the others seen (in % of one core)."""
    deadline = time.monotonic() + patience
    told = False
    while True:
        busy0, t0 = machine_busy_seconds(), time.monotonic()
        own0 = cpu_seconds(pid) if pid is not None else 0.0
        time.sleep(1.0)
        own = cpu_seconds(pid) - own0 if pid is not None else 0.0
        wall = time.monotonic() - t0
        load = 100 * (machine_busy_seconds() - busy0 - own) / wall
        if (load < threshold and own / wall < 0.05) or time.monotonic() > deadline:
            if told:
                print(f"    (other processes now use {max(load, 0):.0f} % of a core)", flush=True)
            return load
        if not told:
            print(f"    waiting for the machine to go quiet: the PBX uses {100 * own / wall:.0f} "
                  f"%, other processes {load:.0f} % of a core", flush=True)
            told = True


# -- the PBX under test --------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchUser:
    """A PBX user generated for a benchmark."""

    user_id: str
    extension: str
    password: str


def make_users(first: int, count: int) -> list[BenchUser]:
    """``count`` users with extensions ``first`` .. and ids ``u<extension>``."""
    return [BenchUser(f"u{n}", str(n), f"pw-{n}-{uuid.uuid4().hex[:8]}")
            for n in range(first, first + count)]


def config_yaml(port: int, workdir: Path, users: Sequence[BenchUser],
                rtp_ports: tuple[int, int]) -> str:
    """The PBX config for a benchmark: loopback UDP, MD5 offered first, warnings only."""
    lines = [
        "sip:",
        f'  listen: ["udp:{LOOPBACK}:{port}"]',
        "  domain: pbx.bench",
        "  auth_algorithms: [MD5, SHA-256]",
        "  ring_timeout: 5s",
        "media:",
        f"  rtp_ports: [{rtp_ports[0]}, {rtp_ports[1]}]",
        f"  address: {LOOPBACK}",
        "  rtp_timeout: 0s",
        "storage:",
        f"  database: sqlite:///{workdir}/pbx.db",
        f"  recordings: {workdir}/recordings",
        "logging:",
        "  level: warning",
        "users:",
    ]
    for u in users:
        lines += [f"  - id: {u.user_id}", f'    extension: "{u.extension}"',
                  f"    password: {u.password}", f"    name: Bench {u.extension}"]
    return "\n".join(lines) + "\n"


def pick_rtp_range(width: int = 20000) -> tuple[int, int]:
    """A random ``width``-port window below the kernel's ephemeral range (32768 up), so the
    relay's ports do not collide with client sockets of other programs."""
    lo = random.randrange(10000, 32700 - width, 2)
    return lo, lo + width - 1


def _options_probe(port: int, timeout: float) -> bool:
    """Whether the PBX answers an OPTIONS on ``port`` within ``timeout`` seconds."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(0.2)
        me = sock.getsockname()[1]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            branch = "z9hG4bK" + uuid.uuid4().hex
            msg = (f"OPTIONS sip:{LOOPBACK}:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {LOOPBACK}:{me};branch={branch}\r\n"
                   f"From: <sip:probe@{LOOPBACK}>;tag={uuid.uuid4().hex[:8]}\r\n"
                   f"To: <sip:{LOOPBACK}:{port}>\r\nCall-ID: {uuid.uuid4().hex}\r\n"
                   "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            sock.sendto(msg.encode(), (LOOPBACK, port))
            try:
                data = sock.recv(65535)
            except (TimeoutError, ConnectionRefusedError):
                time.sleep(0.1)
                continue
            if data.startswith(b"SIP/2.0 200"):
                return True
    return False


class BenchPbx:
    """The real PBX in a subprocess pinned to :data:`PBX_CORE`; stop it with :meth:`stop`."""

    def __init__(self, users: Sequence[BenchUser], *, rtp_width: int = 20000,
                 python_args: Sequence[str] = ()) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="pbx-bench-"))
        self.port = free_port()
        self.rtp_ports = pick_rtp_range(rtp_width)
        self.config_path = self.workdir / "pbx.yaml"
        self.config_path.write_text(config_yaml(self.port, self.workdir, users, self.rtp_ports))
        self.log_path = self.workdir / "pbx.log"
        self._python_args = list(python_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the PBX's UDP socket."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        """The PBX's process id (taskset execs python, so it is the child's own pid)."""
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> BenchPbx:
        """Start the PBX and wait until it answers OPTIONS."""
        cmd = ["taskset", "-c", PBX_CORE, sys.executable, *self._python_args,
               "-m", "pbx", "run", "--config", str(self.config_path)]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        if not _options_probe(self.port, timeout):
            self.stop()
            raise RuntimeError(f"the PBX did not answer OPTIONS on {self.address}:\n"
                               + self.log_tail())
        return self

    def log_tail(self, size: int = 4000) -> str:
        """The end of the PBX's log."""
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def alive(self) -> bool:
        """Whether the PBX process is still running."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def cleanup(self) -> None:
        """Remove the working directory (database, config, log)."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> BenchPbx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- SIPp ----------------------------------------------------------------------------------------


def write_injection(path: Path, rows: Sequence[Sequence[str]]) -> Path:
    """A SIPp injection file read in order; the caller builds each row's fields."""
    lines = ["SEQUENTIAL"] + [";".join(row) + ";" for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def auth_keyword(user: str, password: str) -> str:
    """The ``[authentication ...]`` keyword as a CSV field (SIPp cannot expand a field inside
    the keyword, so the column carries all of it)."""
    return f"[authentication username={user} password={password}]"


@dataclass
class SippOutcome:
    """What one SIPp run did."""

    returncode: int
    successful: int
    failed: int
    retransmissions: int
    elapsed: float
    """Seconds from the first call to the last (SIPp's ElapsedTime), else wall-clock."""
    cpu: float
    """SIPp's own CPU seconds."""
    stats: dict[str, str] = field(default_factory=dict)
    errors: str = ""
    unexpected: Counter[str] = field(default_factory=Counter)
    """What SIPp's error log says it got instead of the scenario's next message."""

    @property
    def total(self) -> int:
        return self.successful + self.failed

    @property
    def failed_pct(self) -> float:
        return 100.0 * self.failed / self.total if self.total else 0.0

    def failure_causes(self) -> str:
        """The non-zero ``Failed*`` counters, e.g. ``FailedMaxUDPRetrans=3``, and the most
        common unexpected messages."""
        parts = [f"{k.removesuffix('(C)')}={v}" for k, v in self.stats.items()
                 if k.startswith("Failed") and k.endswith("(C)") and k != "FailedCall(C)"
                 and v.strip() not in ("", "0")]
        parts += [f"{what}: {n}" for what, n in self.unexpected.most_common(3)]
        return ", ".join(parts)

    def response_time_ms(self) -> float | None:
        """Mean of SIPp's ResponseTime1 (from the call's start to the message marked
        ``rtd="true"``) in milliseconds."""
        raw = self.stats.get("ResponseTime1(C)")
        return _duration_seconds(raw) * 1000 if raw else None

    def call_length_ms(self) -> float | None:
        """Mean length of a successful call (scenario start to end) in milliseconds."""
        raw = self.stats.get("CallLength(C)")
        return _duration_seconds(raw) * 1000 if raw else None


def _epoch(stamp: str | None) -> float | None:
    # SIPp writes "DATE\tTIME\tEPOCH" for StartTime and CurrentTime.
    if not stamp:
        return None
    try:
        return float(stamp.split("\t")[-1])
    except ValueError:
        return None


def _duration_seconds(text: str) -> float:
    # SIPp writes durations as HH:MM:SS:microseconds ("00:00:10:003123").
    parts = text.strip().split(":")
    try:
        if len(parts) in (3, 4):
            values = [float(p) for p in parts]
            micros = values[3] / 1e6 if len(values) == 4 else 0.0
            return values[0] * 3600 + values[1] * 60 + values[2] + micros
    except ValueError:
        pass
    return 0.0


_UNEXPECTED = re.compile(r"while expecting '([^']*)'[^\n]*?received '(SIP/2\.0 (\d{3})|[A-Z]+)")


def unexpected_messages(error_log: str) -> Counter[str]:
    """Counts of "expecting X, got Y" in a SIPp error log (retransmissions of a request the
    scenario has passed, early final responses, ...)."""
    found: Counter[str] = Counter()
    for m in _UNEXPECTED.finditer(error_log):
        got = m.group(3) or m.group(2)
        found[f"expected {m.group(1)}, got {got}"] += 1
    return found


def _last_stats(path: Path) -> dict[str, str]:
    try:
        raw = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    rows = [row for row in csv.reader(raw.splitlines(), delimiter=";") if row]
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def _int(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


class SippProcess:
    """One SIPp run pinned to :data:`SIPP_CORE`, with its files in a fresh directory."""

    def __init__(self, scenario: Path, target: str | None, args: Sequence[str],
                 hard_limit: float) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="sipp-bench-"))
        self.command = ["taskset", "-c", SIPP_CORE, "sipp"]
        if target is not None:
            self.command.append(target)
        self.command += [
            "-sf", str(scenario), "-i", LOOPBACK, "-t", "u1", "-nostdin",
            "-trace_stat", "-stf", str(self.workdir / "stats.csv"), "-fd", "1",
            "-trace_err", "-error_file", str(self.workdir / "errors.log"),
            "-max_log_size", "2000000",
            "-buff_size", "4194304", "-max_recv_loops", "10000", "-max_sched_loops", "10000",
            *args,
        ]
        self.hard_limit = hard_limit
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self._outcome: SippOutcome | None = None

    def start(self) -> SippProcess:
        with (self.workdir / "stdout.log").open("wb") as out:
            self.proc = subprocess.Popen(self.command, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.started = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _reap(self, deadline: float) -> tuple[int, float] | None:
        """Wait until ``deadline`` for SIPp to exit: (exit status, CPU seconds), or None."""
        while True:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                return status, usage.ru_utime + usage.ru_stime
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def wait(self, limit: float | None = None) -> SippOutcome:
        """Wait for SIPp to exit, at most ``limit`` seconds from its start (default: the hard
        limit); then SIGUSR1 (quit once the open calls end, writing the final statistics) and, 12 s
        later, SIGKILL."""
        if self._outcome is not None:
            return self._outcome
        assert self.proc is not None
        reaped = self._reap(self.started + (self.hard_limit if limit is None else limit))
        for sig in (signal.SIGUSR1, signal.SIGKILL):
            if reaped is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            reaped = self._reap(time.monotonic() + 12.0)
        if reaped is None:  # not even SIGKILL: give up on it, it is not our child any more
            reaped = (0, 0.0)
        status, cpu = reaped
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self._outcome = self._collect(self.proc.returncode, time.monotonic() - self.started, cpu)
        return self._outcome

    def stop(self) -> SippOutcome:
        """Ask SIPp to quit now (SIGUSR1: no new calls, the final statistics written), then
        collect; SIGKILL 12 s later."""
        return self.wait(limit=0.0)

    def _collect(self, returncode: int, wall: float, cpu: float) -> SippOutcome:
        stats = _last_stats(self.workdir / "stats.csv")
        start, end = _epoch(stats.get("StartTime")), _epoch(stats.get("CurrentTime"))
        elapsed = end - start if start is not None and end is not None and end > start else wall
        errors = ""
        with contextlib.suppress(OSError):
            errors = (self.workdir / "errors.log").read_text(errors="replace")
        unexpected = unexpected_messages(errors)
        errors = errors[-4000:]
        if not stats:
            with contextlib.suppress(OSError):
                errors += (self.workdir / "stdout.log").read_text(errors="replace")[-4000:]
        outcome = SippOutcome(
            returncode=returncode, successful=_int(stats.get("SuccessfulCall(C)")),
            failed=_int(stats.get("FailedCall(C)")),
            retransmissions=_int(stats.get("Retransmissions(C)")), elapsed=elapsed, cpu=cpu,
            stats=stats, errors=errors, unexpected=unexpected,
        )
        shutil.rmtree(self.workdir, ignore_errors=True)
        return outcome


def run_sipp(scenario: Path, target: str | None, args: Sequence[str],
             hard_limit: float) -> SippOutcome:
    """Run SIPp to the end (bounded by ``hard_limit`` seconds)."""
    return SippProcess(scenario, target, args, hard_limit).start().wait()


# -- profiling -----------------------------------------------------------------------------------


class Profiler:
    """``py-spy record`` attached to a PID, writing collapsed stacks (one thread per root)."""

    def __init__(self, pid: int, seconds: float, out: Path, rate: int = 200,
                 gil_only: bool = False) -> None:
        self.out = out
        # py-spy runs on the load generator's core so the PBX's core only pays for the pauses.
        self.command = ["taskset", "-c", SIPP_CORE, "py-spy", "record", "--pid", str(pid),
                        "--duration", str(max(1, int(seconds))), "--rate", str(rate),
                        "--format", "raw", "--threads", "--function", "--output", str(out)]
        if gil_only:
            # Only samples of the thread holding the GIL: where the interpreter's time goes,
            # without threads that merely wait for the GIL (or in C code that released it).
            self.command.append("--gil")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Profiler:
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        return self

    def wait(self, timeout: float) -> None:
        assert self.proc is not None
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if self.proc.returncode != 0 or not self.out.exists():
            raise RuntimeError(f"py-spy failed ({self.proc.returncode}): "
                               f"{err.decode(errors='replace')[-2000:]}")


@dataclass
class ProfileSummary:
    """Samples per function: self (the leaf) and cumulative (anywhere on the stack)."""

    total: int
    by_thread: Counter[str]
    self_samples: Counter[str]
    cumulative: Counter[str]

    def render(self, top: int = 15) -> str:
        """Tables of threads, top self and top cumulative functions, as percentages."""
        out = [f"{self.total} samples"]
        out.append("by thread: " + ", ".join(
            f"{name} {100 * n / self.total:.1f}%" for name, n in self.by_thread.most_common()))
        for title, counts in (("self", self.self_samples), ("cumulative", self.cumulative)):
            out.append(f"\ntop {top} by {title} time:")
            out.append(f"{'%':>6}  function")
            ranked = [(name, n) for name, n in counts.most_common()
                      if title == "self" or not _is_entry(name.split(" (")[0],
                                                          name.split(" (")[-1].rstrip(")"))]
            for name, n in ranked[:top]:
                out.append(f"{100 * n / self.total:6.1f}  {name}")
        return "\n".join(out)


def _short(frame: str) -> str:
    # "handle (pbx/sipapp.py)" or "handle (/abs/path/pbx/sipapp.py)": keep the repo-relative path.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    root = str(ROOT) + "/"
    if where.startswith(root):
        where = where[len(root):]
    elif "/lib/python" in where:
        where = where[where.index("/lib/python") + 1:]
        where = where.split("/", 1)[1] if "/" in where else where
        where = where.removeprefix("site-packages/")
    return f"{name} ({where})" if where else name


def summarise_profile(path: Path) -> ProfileSummary:
    """Read py-spy's ``--format raw`` output: ``thread;frame;...;leaf count`` per line."""
    total = 0
    by_thread: Counter[str] = Counter()
    self_samples: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread, frames = frames[0], [_short(f) for f in frames[1:]]
        total += count
        by_thread[thread.split(" ")[-1].strip('"') if thread else "?"] += count
        if frames:
            self_samples[frames[-1]] += count
        for name in set(frames):
            cumulative[name] += count
    return ProfileSummary(total, by_thread, self_samples, cumulative)


def cprofile_args(out: Path | None) -> list[str]:
    """Interpreter arguments running the PBX under cProfile (dumped when it stops)."""
    return [] if out is None else ["-m", "cProfile", "-o", str(out.resolve())]


def render_cprofile(path: Path, operations: int, what: str, top: int = 15) -> str:
    """Top functions of a cProfile dump of the PBX's main thread (the event loop), in
    microseconds per ``operation`` (a registration, a call), by own and by cumulative time.

    Functions called fewer than once per 20 operations, start-up work (reading the config)
    and the loop's own run call (which also counts idle waiting) are left out. cProfile
    roughly doubles the cost of Python calls, so read the figures relative to each other.
    """
    import pstats

    raw = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    ops = max(operations, 1)
    rows = [((file, line, name), ncalls, tt, ct)
            for (file, line, name), (_, ncalls, tt, ct, _) in raw.items()
            if ncalls * 20 >= ops and not _is_entry(name, file) and not _is_startup(name, file)]
    out = [f"cProfile of the PBX's main thread, per {what} ({operations} {what}s):"]
    for title, index in (("own", 2), ("cumulative", 3)):
        out.append(f"\ntop {top} by {title} time:")
        out.append(f"{'us/' + what:>12} {'calls/' + what:>12}  function")
        for (file, line, name), ncalls, tt, ct in sorted(
                rows, key=lambda r: r[index], reverse=True)[:top]:
            value = tt if index == 2 else ct
            out.append(f"{1e6 * value / ops:12.1f} {ncalls / ops:12.1f}  "
                       f"{_short(f'{name} ({file}:{line})')}")
    return "\n".join(out)


def _is_startup(name: str, file: str) -> bool:
    # Reading a config of a thousand users makes many calls once: not the per-message path.
    return (any(part in file for part in ("/ruamel/", "/pydantic", "/re/", "importlib",
                                          "<frozen", "/typing", "/enum.py"))
            # Built-ins (len, isinstance, __build_class__, ...) mix start-up and message work.
            or name.startswith(("<built-in method builtins.", "<built-in method marshal.")))


_ENTRY_NAMES = ("_bootstrap", "_bootstrap_inner", "_run_module_as_main", "_run_code", "<module>",
                "run", "main", "_run", "Runner.run", "Thread.run", "WriteBehind._run",
                "<built-in method builtins.exec>", "runctx", "serve", "_run_once")


def _is_entry(name: str, file: str) -> bool:
    # Frames every sample passes through (thread and interpreter start-up, the CLI, the loop's
    # run call) say nothing about where the time goes: leave them out of cumulative tables.
    return name in _ENTRY_NAMES or file.endswith(("runpy.py", "cProfile.py", "threading.py"))


# -- output --------------------------------------------------------------------------------------


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (readable as plain text too)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
             for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# -- the REGISTER benchmark ----------------------------------------------------------------------


@dataclass
class StepResult:
    """One rate step of a benchmark."""

    target: float
    sipp: SippOutcome
    load: LoadWindow
    pbx_rss_mib: float

    @property
    def rate(self) -> float:
        return self.sipp.successful / self.sipp.elapsed if self.sipp.elapsed else 0.0

    @property
    def cpu_per_op_us(self) -> float:
        """The PBX's CPU time per completed call or registration, in microseconds."""
        return 1e6 * self.load.pbx_cpu_s / self.sipp.successful if self.sipp.successful else 0.0

    @property
    def sipp_cpu_pct(self) -> float:
        return 100 * self.sipp.cpu / self.sipp.elapsed if self.sipp.elapsed else 0.0

    def line(self) -> str:
        """A progress line for the console."""
        o = self.sipp
        text = (f"  {self.target:g}/s: {o.successful} ok, {o.failed} failed, {self.rate:,.0f}/s, "
                f"PBX CPU {self.load.pbx_cpu_pct:.0f} %, others {self.load.others_pct:.0f} %")
        if o.failed and o.failure_causes():
            text += f"\n    causes: {o.failure_causes()}"
        return text


def load_columns(step: StepResult) -> list[str]:
    """The CPU columns shared by both benchmarks' tables."""
    load = step.load
    return [f"{step.cpu_per_op_us:,.0f}", f"{load.pbx_cpu_pct:.0f} % ({load.pbx_main_pct:.0f}/"
            f"{load.pbx_cpu_pct - load.pbx_main_pct:.0f})", f"{load.pbx_wait_pct:.0f} %",
            f"{step.sipp_cpu_pct:.0f} %", f"{step.load.others_pct:.0f} %", f"{load.udp_drops}"]


LOAD_HEADERS = ["PBX CPU µs each", "PBX CPU (loop/db)", "PBX runq wait", "SIPp CPU", "others",
                "UDP drops"]


def register_step(pbx: BenchPbx, injection: Path, rate: float, seconds: float,
                  profile: Profiler | None = None) -> StepResult:
    """One SIPp run of REGISTER+401+REGISTER+200 at ``rate`` for ``seconds``."""
    calls = max(1, int(rate * seconds))
    args = [
        "-inf", str(injection), "-key", "domain", pbx.address, "-key", "expires", "3600",
        "-r", f"{rate:g}", "-m", str(calls), "-l", str(max(100, int(rate * 2))),
        "-recv_timeout", "10000", "-timeout", f"{int(seconds * 3 + 30)}s", "-timeout_error",
    ]
    proc = SippProcess(SCENARIOS / "register_auth.xml", pbx.address, args,
                       hard_limit=seconds * 3 + 40)
    load = LoadWindow(pbx.pid).start()
    proc.start()
    if profile is not None:
        time.sleep(min(1.0, seconds / 4))
        profile.start()
    outcome = proc.wait()
    load.stop(outcome.cpu)
    if profile is not None:
        profile.wait(timeout=seconds + 30)
    return StepResult(rate, outcome, load, rss_mib(pbx.pid))


def register_table(steps: Sequence[StepResult]) -> str:
    rows = []
    for s in steps:
        o = s.sipp
        length = o.call_length_ms()
        rows.append([
            f"{s.target:g}", f"{o.successful}", f"{s.rate:,.0f}", f"{2 * s.rate:,.0f}",
            f"{o.failed} ({o.failed_pct:.2f} %)", f"{o.retransmissions}",
            f"{length:.1f}" if length is not None else "-", *load_columns(s),
            f"{s.pbx_rss_mib:.0f}",
        ])
    return render_table(
        ["target/s", "registrations", "registrations/s", "REGISTER req/s", "failed",
         "retrans", "mean ms", *LOAD_HEADERS, "PBX RSS MiB"], rows)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options both benchmarks take (profiling, pacing)."""
    parser.add_argument("--profile", type=float, metavar="RATE",
                        help="first run one step at RATE under py-spy (not in the table) and "
                             "print the top functions")
    parser.add_argument("--profile-all", action="store_true",
                        help="sample every thread that py-spy sees as active, not only the one "
                             "holding the GIL (counts waits in C code as busy)")
    parser.add_argument("--profile-out", type=Path, help="keep py-spy's raw stacks here")
    parser.add_argument("--cprofile", type=Path, metavar="FILE",
                        help="run the PBX under cProfile, dump to FILE, print the top functions")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between steps")
    parser.add_argument("--patience", type=float, default=120.0,
                        help="longest wait for the PBX and other processes to go quiet before "
                             "a step")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[2000, 5000, 10000, 15000],
                        help="target registrations per second, one step each")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each step")
    parser.add_argument("--users", type=int, default=1000, help="users registering in turn")
    add_common_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="short smoke run: 2 small steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.rates, args.seconds, args.users, args.pause = [200, 1000], 2.0, 100, 1.0
        args.patience = min(args.patience, 5.0)
        if args.profile:
            args.profile = 1000
    require_tools(bool(args.profile))

    users = make_users(1000, args.users)
    pbx = BenchPbx(users, python_args=cprofile_args(args.cprofile))
    injection = write_injection(
        pbx.workdir / "users.csv",
        [(u.extension, auth_keyword(u.extension, u.password)) for u in users])
    print(f"machine: {machine_description()}")
    print(f"PBX on core {PBX_CORE}, SIPp on core {SIPP_CORE}; {args.users} users; "
          f"steps of {args.seconds:g} s")
    steps: list[StepResult] = []
    summary: ProfileSummary | None = None
    try:
        pbx.start()
        if args.profile:
            out = args.profile_out or pbx.workdir / "register.pyspy.txt"
            profiler = Profiler(pbx.pid, args.seconds - 2, out, gil_only=not args.profile_all)
            wait_for_quiet(pbx.pid, patience=args.patience)
            step = register_step(pbx, injection, args.profile, args.seconds, profiler)
            print("  profiled:" + step.line().removeprefix(" "), flush=True)
            summary = summarise_profile(out)
            time.sleep(args.pause)
        for rate in args.rates:
            wait_for_quiet(pbx.pid, patience=args.patience)
            step = register_step(pbx, injection, rate, args.seconds)
            steps.append(step)
            print(step.line(), flush=True)
            if not pbx.alive():
                raise RuntimeError("the PBX died:\n" + pbx.log_tail())
            time.sleep(args.pause)
    finally:
        code = pbx.stop()
        if code not in (0, None):
            print(f"PBX exited with {code}:\n{pbx.log_tail()}", file=sys.stderr)
        pbx.cleanup()
    print()
    print("Authenticated REGISTER (REGISTER, 401, REGISTER with digest, 200):")
    print(register_table(steps))
    if summary is not None:
        print()
        gil = "" if args.profile_all else " (samples of the thread holding the GIL)"
        print(f"py-spy profile{gil} of the PBX at {args.profile:g}/s target:")
        print(summary.render())
    if args.cprofile is not None:
        print()
        print(render_cprofile(args.cprofile, sum(s.sipp.successful for s in steps),
                              "registration"))
    failed = any(s.sipp.failed for s in steps)
    return 1 if failed and args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
