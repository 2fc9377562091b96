"""Call setup and teardown rate of the PBX (B2BUA, media anchored), driven by SIPp.

Usage: python bench/call_rate.py [--rates 100 300 600 1000] [--seconds 10] [--callers 1000]
                                 [--callees 100] [--hold-ms 100] [--profile RATE] [--quick]

The PBX runs pinned to core 0 and SIPp to core 1, with the harness of ``harness.py``
(generated users, MD5 offered first, warnings only, SQLite in a temporary directory, a 20,000-port
RTP range below the ephemeral ports). ``--callees`` users are registered from one SIPp port,
where a SIPp UAS (``bench/sipp_scenarios/uas_answer_bench.xml``) then answers every call the
PBX forks to them. A SIPp UAC (``bench/sipp_scenarios/uac_call_bench.xml``) places the calls:
``--callers`` users in turn, each dialling the next callee, every INVITE authenticated:

    caller leg: INVITE, 401, ACK, INVITE with digest, 100, 180, 200, ACK, (hold), BYE, 200
    callee leg: INVITE, 180, 200, ACK, BYE, 200

The PBX anchors the media of every call: it opens its RTP relay (two legs, RTP and RTCP, four
sockets) and rewrites both SDPs, and writes a call record (started, answered, ended). SIPp sends
no RTP. Printed per step: completed calls per second, failed % on the caller and callee side,
retransmissions, mean setup time (first INVITE to 200), and CPU use. At the end the call
records in the PBX's database are counted by disposition.

``--profile RATE`` adds one step at RATE with ``py-spy record`` attached to the PBX.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BENCH_SCENARIOS,
    LOAD_HEADERS,
    PBX_CORE,
    SCENARIOS,
    SIPP_CORE,
    BenchPbx,
    BenchUser,
    LoadWindow,
    SippOutcome,
    SippProcess,
    StepResult,
    add_common_arguments,
    auth_keyword,
    load_columns,
    machine_description,
    make_users,
    render_table,
    require_tools,
    rss_mib,
    run_sipp,
    wait_for_quiet,
    write_injection,
)
from profiling import (
    Profiler,
    ProfileSummary,
    cprofile_args,
    render_cprofile,
    summarise_profile,
)

from tests.peers.ports import free_port, free_port_block


@dataclass
class CallStep:
    """A caller-side step plus what the callee side saw."""

    step: StepResult
    callee: SippOutcome


def register_callees(pbx: BenchPbx, callees: Sequence[BenchUser], port: int) -> None:
    """Bind every callee to SIPp's UAS port (Contact sip:EXT@127.0.0.1:port)."""
    injection = write_injection(
        pbx.workdir / "callees.csv",
        [(u.extension, auth_keyword(u.extension, u.password)) for u in callees])
    outcome = run_sipp(
        SCENARIOS / "register_auth.xml", pbx.address,
        ["-p", str(port), "-inf", str(injection), "-key", "domain", pbx.address,
         "-key", "expires", "3600", "-r", "200", "-m", str(len(callees)),
         "-timeout", "60s", "-timeout_error"],
        hard_limit=90)
    if outcome.successful != len(callees):
        raise RuntimeError(f"registering the callees failed: {outcome.successful} of "
                           f"{len(callees)} ok\n{outcome.errors}\n{pbx.log_tail()}")


def call_step(pbx: BenchPbx, injection: Path, uas_port: int, rate: float, seconds: float,
              hold_ms: int, profile: Profiler | None = None) -> CallStep:
    """One UAC run at ``rate`` calls/s for ``seconds`` against a fresh UAS."""
    calls = max(1, int(rate * seconds))
    limit = seconds * 3 + 40
    uas = SippProcess(
        BENCH_SCENARIOS / "uas_answer_bench.xml", None,
        ["-p", str(uas_port), "-mp", str(free_port_block(4)), "-m", str(calls),
         "-recv_timeout", "10000"],
        hard_limit=limit + 10).start()
    time.sleep(0.5)  # SIPp binds its socket after reading the scenario
    uac = SippProcess(
        BENCH_SCENARIOS / "uac_call_bench.xml", pbx.address,
        ["-p", str(free_port()), "-mp", str(free_port_block(4)), "-inf", str(injection),
         "-key", "domain", pbx.address, "-d", str(hold_ms), "-r", f"{rate:g}",
         "-m", str(calls), "-l", str(max(200, int(rate * 2))), "-recv_timeout", "10000",
         "-timeout", f"{int(seconds * 3 + 30)}s", "-timeout_error"],
        hard_limit=limit)
    load = LoadWindow(pbx.pid).start()
    uac.start()
    if profile is not None:
        time.sleep(min(1.0, seconds / 4))
        profile.start()
    outcome = uac.wait()
    # The UAS's own CPU is not known yet: it is counted with the others' load, then subtracted.
    load.stop(outcome.cpu)
    if profile is not None:
        profile.wait(timeout=seconds + 30)
    # The UAS exits by itself after its last call's timewait; if a call never reached it,
    # SIGUSR1 makes it write its statistics and quit.
    callee = uas.wait(limit=time.monotonic() - uas.started + 3.0)
    load.others_pct = max(0.0, load.others_pct - 100 * callee.cpu / max(outcome.elapsed, 1e-6))
    outcome.cpu += callee.cpu  # both SIPp processes share core 1
    return CallStep(StepResult(rate, outcome, load, rss_mib(pbx.pid)), callee)


def call_table(steps: Sequence[CallStep]) -> str:
    rows = []
    for cs in steps:
        s, o = cs.step, cs.step.sipp
        setup_ms = o.response_time_ms()
        rows.append([
            f"{s.target:g}", f"{o.successful}", f"{s.rate:,.0f}",
            f"{o.failed} ({o.failed_pct:.2f} %)", f"{cs.callee.failed}",
            f"{o.retransmissions + cs.callee.retransmissions}",
            f"{setup_ms:.1f}" if setup_ms is not None else "-",
            *load_columns(s), f"{s.pbx_rss_mib:.0f}",
        ])
    return render_table(
        ["target/s", "calls", "calls/s", "failed (caller)", "failed (callee)", "retrans",
         "mean setup ms", *LOAD_HEADERS, "PBX RSS MiB"], rows)


def call_records(database: Path) -> dict[str, int]:
    """Call records in the PBX's database by disposition (read after the PBX stopped)."""
    with sqlite3.connect(database) as db:
        return dict(db.execute("SELECT disposition, COUNT(*) FROM calls GROUP BY disposition"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[100, 300, 600, 1000],
                        help="target calls per second, one step each")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each step")
    parser.add_argument("--callers", type=int, default=1000, help="users placing calls")
    parser.add_argument("--callees", type=int, default=100, help="users answering calls")
    parser.add_argument("--hold-ms", type=int, default=100, help="how long a call stays up")
    add_common_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="short smoke run: 2 small steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.rates, args.seconds, args.pause = [50, 100], 2.0, 1.0
        args.callers, args.callees = 50, 10
        args.patience = min(args.patience, 5.0)
        if args.profile:
            args.profile = 100
    require_tools(bool(args.profile))

    callers = make_users(1000, args.callers)
    callees = make_users(5000, args.callees)
    pbx = BenchPbx(callers + callees, python_args=cprofile_args(args.cprofile))
    injection = write_injection(
        pbx.workdir / "callers.csv",
        [(u.extension, auth_keyword(u.extension, u.password), callees[i % len(callees)].extension)
         for i, u in enumerate(callers)])
    print(f"machine: {machine_description()}")
    print(f"PBX on core {PBX_CORE}, SIPp on core {SIPP_CORE}; {args.callers} callers, "
          f"{args.callees} callees, calls held {args.hold_ms} ms; steps of {args.seconds:g} s; "
          f"RTP ports {pbx.rtp_ports[0]}-{pbx.rtp_ports[1]}")
    steps: list[CallStep] = []
    summary: ProfileSummary | None = None
    records: dict[str, int] = {}
    try:
        pbx.start()
        uas_port = free_port()
        register_callees(pbx, callees, uas_port)
        if args.profile:
            out = args.profile_out or pbx.workdir / "calls.pyspy.txt"
            profiler = Profiler(pbx.pid, args.seconds - 2, out, gil_only=not args.profile_all)
            wait_for_quiet(pbx.pid, patience=args.patience)
            cs = call_step(pbx, injection, uas_port, args.profile, args.seconds, args.hold_ms,
                           profiler)
            print("  profiled:" + cs.step.line().removeprefix(" "), flush=True)
            summary = summarise_profile(out)
            time.sleep(args.pause)
        for rate in args.rates:
            wait_for_quiet(pbx.pid, patience=args.patience)
            cs = call_step(pbx, injection, uas_port, rate, args.seconds, args.hold_ms)
            steps.append(cs)
            print(cs.step.line() + f", callee side {cs.callee.failed} failed", flush=True)
            if not pbx.alive():
                raise RuntimeError("the PBX died:\n" + pbx.log_tail())
            time.sleep(args.pause)
    finally:
        code = pbx.stop()
        if code not in (0, None):
            print(f"PBX exited with {code}:\n{pbx.log_tail()}", file=sys.stderr)
        if (pbx.workdir / "pbx.db").exists():
            records = call_records(pbx.workdir / "pbx.db")
        pbx.cleanup()
    print()
    print("Calls with media anchored (caller: INVITE/401/ACK/INVITE/100/180/200/ACK/BYE/200; "
          "callee: INVITE/180/200/ACK/BYE/200):")
    print(call_table(steps))
    total = sum(cs.step.sipp.successful for cs in steps)
    print(f"\ncall records in the database: {records} (SIPp completed {total} calls)")
    if summary is not None:
        print()
        gil = "" if args.profile_all else " (samples of the thread holding the GIL)"
        print(f"py-spy profile{gil} of the PBX at {args.profile:g} calls/s target:")
        print(summary.render())
    if args.cprofile is not None:
        print()
        print(render_cprofile(args.cprofile, sum(cs.step.sipp.successful for cs in steps),
                              "call"))
    failed = any(cs.step.sipp.failed or cs.callee.failed for cs in steps)
    return 1 if failed and args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
