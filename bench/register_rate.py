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
Every process started here is bounded in time and stopped by its PID. The harness (PBX process,
SIPp step, CPU sampling) is in ``harness.py`` and the profile summaries in ``profiling.py``,
shared with ``call_rate.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    LOAD_HEADERS,
    PBX_CORE,
    SCENARIOS,
    SIPP_CORE,
    BenchPbx,
    LoadWindow,
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
