"""Hang-up to CRM: how long after a call ends its record is committed and its ``call.ended``
webhook has arrived, with the real PBX carrying calls from SIPp.

Usage: python bench/crm_push.py [--rate 100] [--seconds 30] [--hold 1 3] [--fifo]
                                [--database URL | --postgres] [--poll-ms 20] [--profile]

The real PBX (``python -m pbx run``) runs pinned to core 0 with the config of ``harness.py``
(SQLite in a temporary directory unless ``--database`` names another database or
``--postgres`` starts a throw-away PostgreSQL server with ``tests/postgres.py``) plus one
webhook subscribed to ``call.ended``. Core 1 holds SIPp and this script: a webhook receiver (a
minimal keep-alive HTTP/1.1 server on asyncio, in a thread) and a poller of the ``calls`` table
(a read-only connection, in another thread).

SIPp registers ``--callees`` users on one port, where a UAS answers every call at once; a UAC
places ``--rate`` authenticated calls per second for ``--seconds``, each held for a time drawn
uniformly from ``--hold`` seconds, so that in steady state calls END at the call rate. Per
call, against ``ended_at`` (the PBX's UTC clock at the BYE; the same machine's clock):

- hang-up to record committed: when the poller first sees the row ended, minus its
  ``ended_at``. The outbox row is committed in the same transaction, so this is also when the
  event can be sent. Late by up to one poll interval plus the query's time;
- hang-up to webhook delivered: when the receiver has read the whole POST, minus the payload's
  ``ended_at`` (ISO form in milliseconds: up to 1 ms more).

From the outbox and the delivery log: hang-up to the outbox row being written (the 200 ms
flush tick and the writer thread), from there to the POST (the commit, waking the webhook
worker, its claim in the database), and the POST. Printed: calls placed and failed, records
ended, calls starting, ending and webhooks arriving per second, webhooks received (distinct
keys, duplicates, bad signatures, records without one), p50/p95/p99/max, the PBX's CPU.
Every process started here is bounded in time and stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h
from call_rate import register_callees
from profiling import Profiler, summarise_profile
from sqlalchemy import Engine, Table, bindparam, create_engine, func, select

from crmsync.models import Call, OutboxEvent, WebhookAttempt, WebhookDelivery
from crmsync.webhooks import verify
from tests.peers.ports import LOOPBACK, free_port, free_port_block

WEBHOOK = "crm-bench"
EVENT = "call.ended"
GOAL = 1.0
"""Seconds: the p99 of hang-up to webhook delivered must stay below this."""
_calls: Table = Call.__table__  # type: ignore[assignment]
_outbox: Table = OutboxEvent.__table__  # type: ignore[assignment]
_deliveries: Table = WebhookDelivery.__table__  # type: ignore[assignment]
_attempts: Table = WebhookAttempt.__table__  # type: ignore[assignment]


def epoch(value: datetime) -> float:
    """Seconds since the epoch of a naive UTC datetime (as the PBX stores them)."""
    return value.replace(tzinfo=UTC).timestamp()


def percentiles(values: Sequence[float]) -> list[str]:
    """Count, p50, p95, p99 and max (nearest rank), in milliseconds."""
    if not values:
        return ["0", "-", "-", "-", "-"]
    ordered = sorted(values)
    pick = [ordered[max(0, math.ceil(q * len(ordered)) - 1)] for q in (0.50, 0.95, 0.99)]
    return [f"{len(ordered)}", *(f"{1000 * v:.0f}" for v in [*pick, ordered[-1]])]


def per_second(times: Sequence[float], start: float, window: slice) -> str:
    """Median, min and max of how many of ``times`` fall in each second of ``window``
    (seconds after ``start``)."""
    counts = [0] * (window.stop - window.start)
    for t in times:
        i = int(t - start) - window.start
        if 0 <= i < len(counts):
            counts[i] += 1
    if not counts:
        return "-"
    return f"median {sorted(counts)[len(counts) // 2]} (min {min(counts)}, max {max(counts)})"


# -- the webhook receiver ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrival:
    """One POST as the receiver read it (parsed after the run)."""

    arrived: float
    """time.time() once the whole request was read."""
    key: str
    timestamp: str
    signature: str
    body: bytes


class WebhookReceiver:
    """A minimal HTTP/1.1 server (keep-alive, Content-Length bodies) answering 200 to every
    request, on its own event loop in a thread. It only notes what came and when, so that it
    adds as little as it can to what it measures."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="receiver",
                                        daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> WebhookReceiver:
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, LOOPBACK, 0, limit=1 << 20))
        self.port = self._server.sockets[0].getsockname()[1]
        self._thread.start()
        return self

    def keys(self) -> set[str]:
        return {a.key for a in list(self.arrivals)}

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.close()
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers: dict[str, str] = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.arrivals.append(Arrival(
                    time.time(), headers.get("x-pbx-idempotency-key", ""),
                    headers.get("x-pbx-timestamp", ""), headers.get("x-pbx-signature", ""), body))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


@dataclass
class Received:
    """The arrivals, parsed: per call its first arrival and the payload's ``ended_at``."""

    first: dict[str, tuple[float, float]] = field(default_factory=dict)
    posts: int = 0
    duplicates: int = 0
    bad_signatures: int = 0
    unreadable: int = 0


def parse_arrivals(arrivals: Sequence[Arrival], secret: str) -> Received:
    out = Received(posts=len(arrivals))
    for a in arrivals:
        if not verify(secret, a.timestamp, a.body, a.signature, now=a.arrived):
            out.bad_signatures += 1
        try:
            payload = json.loads(a.body)
            call_id = payload["call"]["id"]
            ended = datetime.fromisoformat(payload["call"]["ended_at"]).timestamp()
        except (ValueError, KeyError, TypeError):
            out.unreadable += 1
            continue
        if a.key != f"{call_id}:{EVENT}" or payload.get("id") != a.key:
            out.unreadable += 1
        if call_id in out.first:
            out.duplicates += 1
        else:
            out.first[call_id] = (a.arrived, ended)
    return out


# -- the database side ---------------------------------------------------------------------------


def reader_engine(url: str) -> Engine:
    """A read-only engine on the PBX's database."""
    if url.startswith("sqlite:///"):
        return create_engine(f"sqlite:///file:{url.removeprefix('sqlite:///')}?mode=ro&uri=true")
    return create_engine(url, connect_args={"options": "-c default_transaction_read_only=on"})


class RecordPoller:
    """Every ``interval`` seconds: which calls have an ended row committed, and since when.

    It asks only for rows ended after the latest ``ended_at`` seen (less a second: rows are
    committed in the order the calls ended, one flush after another) among calls started in
    the last minutes (``started_at`` is indexed, ``ended_at`` is not)."""

    def __init__(self, engine: Engine, interval: float, since: datetime) -> None:
        self.first_seen: dict[str, tuple[float, float]] = {}
        """call id -> (first seen, ended_at), both time.time() seconds."""
        self.queries = 0
        self.query_seconds = 0.0
        self.errors: Counter[str] = Counter()
        self._engine = engine
        self._interval = interval
        self._since = since
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="poller", daemon=True)
        self._query = select(_calls.c.id, _calls.c.ended_at).where(
            _calls.c.started_at > bindparam("lo"), _calls.c.ended_at > bindparam("since"))

    def start(self) -> RecordPoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            next_at = time.monotonic()
            while not self._stop.is_set():
                next_at += self._interval
                t0 = time.time()
                try:
                    rows = conn.execute(self._query, {
                        "lo": self._since - timedelta(minutes=5),
                        "since": self._since - timedelta(seconds=1)}).all()
                except Exception as e:  # a locked file, a lost connection: again next time
                    self.errors[type(e).__name__] += 1
                    rows = []
                # When the query returned: a row committed during it counts as seen at its end.
                seen = time.time()
                self.queries += 1
                self.query_seconds += seen - t0
                for call_id, ended in rows:
                    if call_id not in self.first_seen:
                        self.first_seen[call_id] = (seen, epoch(ended))
                        self._since = max(self._since, ended)
                self._stop.wait(max(0.0, next_at - time.monotonic()))


@dataclass
class Stored:
    """What the database says after the run (the PBX's clock): per call when its outbox row
    was written (in the writer's transaction) and when its first POST started."""

    starts: list[float] = field(default_factory=list)
    written: dict[str, float] = field(default_factory=dict)
    posted: dict[str, float] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    retried: int = 0


def read_stored(engine: Engine, since: datetime) -> Stored:
    out = Stored()
    first_post = (select(_attempts.c.delivery_id, func.min(_attempts.c.at).label("at"),
                         func.count().label("n"))
                  .group_by(_attempts.c.delivery_id).subquery())
    query = (select(_outbox.c.call_id, _outbox.c.created_at, _deliveries.c.status,
                    first_post.c.at, first_post.c.n)
             .join_from(_outbox, _deliveries, _deliveries.c.outbox_id == _outbox.c.id)
             .outerjoin(first_post, first_post.c.delivery_id == _deliveries.c.id)
             .where(_outbox.c.event == EVENT, _deliveries.c.webhook == WEBHOOK,
                    _outbox.c.created_at >= since))
    with engine.connect() as conn:
        out.starts = [epoch(t) for t in conn.execute(
            select(_calls.c.started_at).where(_calls.c.started_at >= since)).scalars()]
        for call_id, written, status, posted, attempts in conn.execute(query):
            out.written[call_id] = epoch(written)
            out.statuses[status] += 1
            if posted is not None:
                out.posted[call_id] = epoch(posted)
            out.retried += (attempts or 0) > 1
    return out


# -- processes -----------------------------------------------------------------------------------


def realtime(pid: int) -> None:
    """SCHED_FIFO (priority 10) for every thread of ``pid``; what it starts later inherits it.
    The kernel's real-time throttling (kernel.sched_rt_runtime_us, 95 %) still leaves the rest
    of the machine 50 ms a second."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setscheduler(int(task.name), os.SCHED_FIFO, os.sched_param(10))
        except PermissionError:
            raise SystemExit("--fifo needs root (or CAP_SYS_NICE)") from None
        except (OSError, ValueError):
            pass  # a thread that has just ended


def tree_cpu_seconds(pid: int | None) -> float:
    """CPU seconds of a process and its children, live or reaped (a PostgreSQL server: the
    postmaster and its backends)."""
    if pid is None:
        return 0.0
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = stat.read_text()
            fields = raw[raw.rindex(")") + 2:].split()
            # proc(5): ppid is field 4, utime/stime 14/15, cutime/cstime 16/17.
            if int(stat.parent.name) == pid:
                ticks += sum(int(f) for f in fields[11:15])
            elif int(fields[1]) == pid:
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def database(args: argparse.Namespace) -> Iterator[tuple[str | None, int | None]]:
    """The database to run on: None (SQLite in the PBX's directory), ``--database``, or a
    fresh database on a throw-away PostgreSQL server (``--postgres``); and the server's PID."""
    if not args.postgres:
        yield args.database, None
        return
    from tests.postgres import postgres_server
    try:
        with postgres_server() as server:
            print(f"PostgreSQL on {server.host}:{server.port} (pid {server.pid})", flush=True)
            yield server.create_database("crm_push"), server.pid
    except BaseException as e:
        if type(e).__module__.startswith("_pytest"):  # pytest.fail/skip: no server to use
            raise SystemExit(str(e)) from None
        raise


def bench_config(pbx: h.BenchPbx, users: Sequence[h.BenchUser], database_url: str | None,
                 receiver_port: int, secret: str) -> str:
    """The harness's config, on ``database_url`` if given, with the webhook."""
    text = h.config_yaml(pbx.port, pbx.workdir, users, pbx.rtp_ports)
    if database_url is not None:
        text = text.replace(f"  database: sqlite:///{pbx.workdir}/pbx.db",
                            f"  database: {database_url}", 1)
    return text + (f"crm:\n  webhooks:\n    - name: {WEBHOOK}\n"
                   f"      url: http://{LOOPBACK}:{receiver_port}/hooks/calls\n"
                   f"      secret: {secret}\n      events: [{EVENT}]\n      timeout: 5s\n")


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything one run measured."""

    caller: h.SippOutcome
    callee: h.SippOutcome
    load: h.LoadWindow
    rss: float
    own_cpu: float
    server_cpu: float
    started: float
    seen: dict[str, tuple[float, float]]
    poll_ms: float
    poll_errors: Counter[str]
    got: Received
    stored: Stored
    profile: str | None


def drive(args: argparse.Namespace, url: str | None, server_pid: int | None) -> Run:
    """Start the PBX, the receiver and the poller, place the calls, wait for the last
    webhooks, stop everything."""
    callers, callees = h.make_users(1000, args.callers), h.make_users(5000, args.callees)
    secret = secrets.token_hex(16)
    receiver = WebhookReceiver().start()
    pbx = h.BenchPbx(callers + callees)
    pbx.config_path.write_text(bench_config(pbx, callers + callees, url, receiver.port, secret))
    db_url = url or f"sqlite:///{pbx.workdir}/pbx.db"
    rng = random.Random(args.seed)
    lo, hi = (int(1000 * s) for s in args.hold)
    injection = h.write_injection(pbx.workdir / "callers.csv", [
        (u.extension, h.auth_keyword(u.extension, u.password),
         callees[i % len(callees)].extension, str(rng.randint(lo, hi)))
        for i, u in enumerate(callers)])
    calls = max(1, int(args.rate * args.seconds))
    limit = args.seconds * 3 + args.hold[1] + 40
    print(f"PBX on core {h.PBX_CORE}; SIPp, the receiver and the poller on core {h.SIPP_CORE}"
          f"{' (SCHED_FIFO)' if args.fifo else ''}; {calls} calls at {args.rate:g}/s over "
          f"{args.seconds:g} s, held {args.hold[0]:g}-{args.hold[1]:g} s; database "
          f"{db_url.split(':', 1)[0]}; poll every {args.poll_ms:g} ms", flush=True)
    poller: RecordPoller | None = None
    profiler: Profiler | None = None
    sipps: list[h.SippProcess] = []
    try:
        pbx.start()
        uas_port = free_port()
        register_callees(pbx, callees, uas_port)
        h.wait_for_quiet(pbx.pid, patience=args.patience)
        reader = reader_engine(db_url)
        since = datetime.now(UTC).replace(tzinfo=None)
        poller = RecordPoller(reader, args.poll_ms / 1000, since).start()
        uas = h.SippProcess(
            h.BENCH_SCENARIOS / "uas_answer_bench.xml", None,
            ["-p", str(uas_port), "-mp", str(free_port_block(4)), "-m", str(calls),
             "-recv_timeout", str(int(1000 * args.hold[1]) + 10000)],
            hard_limit=limit + 10).start()
        sipps.append(uas)
        time.sleep(0.5)  # SIPp binds its socket after reading the scenario
        uac = h.SippProcess(
            h.BENCH_SCENARIOS / "uac_call_hold.xml", pbx.address,
            ["-p", str(free_port()), "-mp", str(free_port_block(4)), "-inf", str(injection),
             "-key", "domain", pbx.address, "-r", f"{args.rate:g}", "-m", str(calls),
             "-l", str(int(args.rate * (args.hold[1] + 6)) + 50),
             "-recv_timeout", "10000", "-timeout", f"{int(limit - 10)}s", "-timeout_error"],
            hard_limit=limit)
        sipps.append(uac)
        load = h.LoadWindow(pbx.pid).start()
        own0, server0 = time.process_time(), tree_cpu_seconds(server_pid)
        started = time.time()
        uac.start()
        if args.profile:
            time.sleep(min(3.0, args.seconds / 4))
            profiler = Profiler(pbx.pid, max(1.0, args.seconds - 4), pbx.workdir / "pyspy.txt",
                                gil_only=True).start()
        caller = uac.wait()
        own, server = time.process_time() - own0, tree_cpu_seconds(server_pid) - server0
        # This script (receiver, poller) and the PostgreSQL server are not "others".
        load.stop(caller.cpu + own + server)
        rss = h.rss_mib(pbx.pid)
        callee = uas.wait(limit=time.monotonic() - uas.started + 3.0)
        load.others_pct = max(0.0, load.others_pct - 100 * callee.cpu / max(caller.elapsed, 1e-6))
        # The last webhooks: until every ended record has one and none ended for a second.
        deadline, stable_since, last = time.monotonic() + args.drain, time.monotonic(), -1
        while time.monotonic() < deadline:
            ended = set(poller.first_seen)
            if len(ended) != last:
                stable_since, last = time.monotonic(), len(ended)
            keys = receiver.keys()
            if time.monotonic() - stable_since > 1.0 \
                    and all(f"{cid}:{EVENT}" in keys for cid in ended):
                break
            time.sleep(0.2)
        poller.stop()
        stored = read_stored(reader, since)
        reader.dispose()
        profile = None
        if profiler is not None:
            profiler.wait(timeout=args.seconds + 30)
            profile = summarise_profile(profiler.out).render()
        if not pbx.alive():
            raise RuntimeError("the PBX died:\n" + pbx.log_tail())
    finally:
        if profiler is not None and profiler.proc is not None and profiler.proc.poll() is None:
            profiler.proc.kill()  # py-spy stops by itself after its duration; here sooner
            profiler.proc.wait(5)
        for sipp in sipps:
            sipp.stop()
        if poller is not None:
            poller.stop()
        receiver.stop()
        code = pbx.stop()
        if code not in (0, None):
            print(f"PBX exited with {code}:\n{pbx.log_tail()}", file=sys.stderr)
        pbx.cleanup()
    assert poller is not None
    return Run(caller, callee, load, rss, own, server, started, poller.first_seen,
               1000 * poller.query_seconds / max(poller.queries, 1), poller.errors,
               parse_arrivals(receiver.arrivals, secret), stored, profile)


def report(args: argparse.Namespace, r: Run, postgres: bool) -> bool:
    """Print the figures; whether every call went through and was delivered once."""
    o, c, load, got, st, seen = r.caller, r.callee, r.load, r.got, r.stored, r.seen
    committed = [first - ended for first, ended in seen.values()]
    delivered = [arrived - ended for arrived, ended in got.first.values()]
    written = [st.written[k] - seen[k][1] for k in seen if k in st.written]
    to_post = [st.posted[k] - st.written[k] for k in st.posted if k in st.written]
    post = [got.first[k][0] - st.posted[k] for k in st.posted if k in got.first]
    missing = [k for k in seen if k not in got.first]
    foreign = [k for k in got.first if k not in seen]
    # Steady state: calls ending at the rate they start (too short a run has none).
    window = slice(int(args.hold[1]) + 2, max(int(args.hold[1]) + 2, int(args.seconds)))
    wall = max(o.elapsed, 1e-6)
    print()
    print(f"calls placed: {o.total} ({o.successful} completed, {o.failed} failed on the caller "
          f"side, {c.failed} on the callee side, {o.retransmissions + c.retransmissions} "
          f"retransmissions; mean setup {o.response_time_ms() or 0:.1f} ms)")
    if o.failed and o.failure_causes():
        print(f"  caller failures: {o.failure_causes()}")
    print(f"records ended: {len(seen)} of {len(st.starts)} started; per second from "
          f"{window.start} s to {window.stop} s: calls starting "
          f"{per_second(st.starts, r.started, window)}, ending "
          f"{per_second([e for _f, e in seen.values()], r.started, window)}, webhooks arriving "
          f"{per_second([a for a, _e in got.first.values()], r.started, window)}")
    print(f"webhooks received: {got.posts} POSTs, {len(got.first)} distinct calls, "
          f"{got.duplicates} duplicates, {got.bad_signatures} bad signatures, {got.unreadable} "
          f"unreadable, {len(foreign)} for calls not seen ended, {len(missing)} ended records "
          f"without one; deliveries {dict(st.statuses)}, {st.retried} retried")
    print(f"PBX CPU while calls were placed: {load.pbx_cpu_pct:.0f} % of a core (event loop "
          f"{load.pbx_main_pct:.0f} %, other threads {load.pbx_cpu_pct - load.pbx_main_pct:.0f} "
          f"%), {1e6 * load.pbx_cpu_s / max(o.successful, 1):,.0f} µs per call; run-queue wait "
          f"{load.pbx_wait_pct:.0f} %; RSS {r.rss:.0f} MiB; UDP drops {load.udp_drops}; SIPp "
          f"{100 * (o.cpu + c.cpu) / wall:.0f} %, receiver and poller {100 * r.own_cpu / wall:.0f}"
          f" %, " + (f"PostgreSQL {100 * r.server_cpu / wall:.0f} %, " if postgres else "")
          + f"others {load.others_pct:.0f} %")
    if r.poll_errors:
        print(f"poller errors: {dict(r.poll_errors)}")
    print()
    print(h.render_table(["hang-up to", "calls", "p50 ms", "p95 ms", "p99 ms", "max ms"], [
        [f"record committed (polled every {args.poll_ms:g} ms, query {r.poll_ms:.1f} ms)",
         *percentiles(committed)],
        ["webhook delivered", *percentiles(delivered)],
    ]))
    print()
    print("where the webhook's time goes (outbox and delivery log, the PBX's clock):")
    print(h.render_table(["step", "calls", "p50 ms", "p95 ms", "p99 ms", "max ms"], [
        ["hang-up to outbox row written (flush tick, writer thread)", *percentiles(written)],
        ["outbox row written to POST sent (commit, wake-up, claim)", *percentiles(to_post)],
        ["POST sent to received", *percentiles(post)],
    ]))
    p99 = sorted(delivered)[max(0, math.ceil(0.99 * len(delivered)) - 1)] if delivered else 0
    verdict = "met" if delivered and not missing and p99 < GOAL else "NOT met"
    print(f"\ngoal (p99 hang-up to webhook delivered under {GOAL:g} s): {verdict}")
    if r.profile is not None:
        print()
        print("py-spy profile of the PBX (samples of the thread holding the GIL):")
        print(r.profile)
    return not o.failed and not missing and not got.bad_signatures and len(seen) == o.successful


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=100.0, help="calls placed per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long calls are placed")
    parser.add_argument("--hold", type=float, nargs=2, default=[1.0, 3.0], metavar=("MIN", "MAX"),
                        help="each call stays up a time drawn uniformly from MIN to MAX seconds")
    parser.add_argument("--callers", type=int, default=1000, help="users placing calls")
    parser.add_argument("--callees", type=int, default=100, help="users answering calls")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--database", metavar="URL",
                       help="the PBX's database (SQLAlchemy URL, e.g. postgresql+psycopg://...); "
                            "default: SQLite in a temporary directory")
    where.add_argument("--postgres", action="store_true",
                       help="start a throw-away PostgreSQL server (tests/postgres.py) and use it")
    parser.add_argument("--poll-ms", type=float, default=20.0,
                        help="how often the poller looks for ended records")
    parser.add_argument("--drain", type=float, default=30.0,
                        help="longest wait for the last webhooks after the last call")
    parser.add_argument("--fifo", action="store_true",
                        help="run the PBX, SIPp, PostgreSQL and this script under SCHED_FIFO "
                             "(root): on a shared machine other work then cannot delay them")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy on the PBX for the middle of the run")
    parser.add_argument("--patience", type=float, default=60.0,
                        help="longest wait for the machine to go quiet before the run")
    parser.add_argument("--seed", type=int, default=1, help="seed of the hold times")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 calls/s for 5 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.rate, args.seconds, args.callers, args.callees = 20.0, 5.0, 50, 10
        args.patience = min(args.patience, 5.0)
    if not 0 < args.hold[0] <= args.hold[1] <= 600:
        parser.error("--hold MIN MAX: 0 < MIN <= MAX <= 600 seconds")
    if args.rate <= 0 or args.seconds <= 0 or args.poll_ms <= 0:
        parser.error("--rate, --seconds and --poll-ms must be positive")
    h.require_tools(args.profile)
    print(f"machine: {h.machine_description()}")
    # The receiver and the poller share core 1 with SIPp: core 0 is the PBX's alone.
    os.sched_setaffinity(0, {int(h.SIPP_CORE)})
    if args.fifo:
        realtime(os.getpid())  # the PBX, SIPp and PostgreSQL started below inherit it
    with database(args) as (url, server_pid):
        run = drive(args, url, server_pid)
    return 0 if report(args, run, server_pid is not None) else 1


if __name__ == "__main__":
    sys.exit(main())
