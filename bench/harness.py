"""The harness shared by the SIPp benchmarks: the PBX as a pinned subprocess, SIPp steps, CPU
and drop accounting, profiles and tables. ``register_rate.py`` and ``call_rate.py`` use it.
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
        "http:",
        "  enabled: false",
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
