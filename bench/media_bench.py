"""The media engine at scale: relayed (and recorded) G.711 calls on one core, loss and jitter.

Usage:
    python bench/media_bench.py --calls 500 1000 1500 1800 --seconds 10 [--record DIR] [--shared]
    python bench/media_bench.py --playback 25 --seconds 20

The engine is the PBX's own code path, in this process pinned to core 0 under uvloop: for every
call ``RtpRelay.open_session`` and ``set_remote`` for both legs and, with ``--record``, the PBX's
:class:`pbx.recording.Recordings` started on the session and ticked once a second as the server
does (stereo WAV under DIR, one writer thread). ``--shared`` runs the shared-port relay
(``RtpRelay(..., shared_port=True)``, :mod:`media.shared`) instead. The phones are
``media_loadgen.LoadGen`` in a child process pinned to core 1 (sendmmsg/recvmmsg, calls spread
over the 20 ms period).

Printed per step: packets sent, loss (sent vs received after a drain), added delay (transit minus
the flow's best transit: p50/p99/max, after a warm-up second), the engine's CPU in % of its core
(whole process, and the event-loop thread alone), and the generator's own health (its CPU and
how late its sends were at p99; a late generator makes the figures pessimistic, not optimistic).

``--playback N``: N queue callers hearing music and announcements the way the PBX plays them
(``media.playback.PlaybackEngine`` + ``media.player.RtpStream`` sending through
``RelayHandle.send_rtp``, as ``pbx/calls.py`` does for music on hold); printed: the engine's CPU.
Half hear the default hold music, half an announcement playlist.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import multiprocessing.connection
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import uvloop

from bench.media_loadgen import LoadGen, LoadResult, phone_ip
from media.relay import Leg, PortAllocator
from media.udp import RelayHandle, RtpRelay
from pbx.recording import Recordings

ENGINE_CORE, GENERATOR_CORE = 0, 1


def _generator(conn: multiprocessing.connection.Connection, calls: int, groups: int,
               seconds: float, warmup: float, fifo: bool) -> None:
    """Child process: the phones."""
    _pin(GENERATOR_CORE, fifo)
    gen = LoadGen(calls, groups)
    conn.send(gen.port)
    ports = conn.recv()
    conn.send("ready")
    try:
        result = gen.run(ports, seconds, warmup=warmup)
    finally:
        gen.close()
    conn.send(asdict(result))


def _pin(core: int, fifo: bool) -> None:
    """Run on ``core`` only, at the highest normal priority: the machine may be shared, and
    other work on the same core would otherwise show up as the engine's delay (nice -20 leaves
    a nice-0 process about 1 % of the core when both want it). Needs root or CAP_SYS_NICE;
    without it the bench runs at normal priority."""
    os.sched_setaffinity(0, {core})
    if fifo:
        # A dedicated core: the engine (and the generator) preempt anything else on their
        # core at once. The kernel's real-time throttling (kernel.sched_rt_runtime_us, 95 %)
        # still leaves the rest of the machine 50 ms a second.
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -20)
    # With autogroups (kernel.sched_autogroup_enabled) nice only ranks processes within one
    # session; the session's own weight is set here (and put back by main() at the end).
    _set_autogroup_nice(-20)


def _autogroup_nice() -> int | None:
    try:
        with open("/proc/self/autogroup") as f:
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _set_autogroup_nice(nice: int) -> None:
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as f:
        f.write(str(nice))


def _recv(conn: multiprocessing.connection.Connection, timeout: float) -> Any:
    """The child's next message; an error if it sent none within ``timeout`` (it died)."""
    if not conn.poll(timeout):
        raise RuntimeError("the child process did not answer")
    return conn.recv()


def _thread_cpu() -> float:
    return time.thread_time()


def _cpu_of(pid: int) -> float:
    """utime + stime of a process (all threads), seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _all_cpu() -> dict[int, float]:
    """CPU seconds of every process on the machine, by PID."""
    out: dict[int, float] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                out[int(name)] = _cpu_of(int(name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _others(before: dict[int, float], after: dict[int, float], ours: set[int]) -> float:
    """CPU seconds the processes that are not the bench's used between two snapshots."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items() if pid not in ours)


class _Bare(asyncio.DatagramProtocol):
    """The reference: a bare uvloop relay endpoint (no latching, counters or recording)."""

    def __init__(self) -> None:
        self.peer: _Bare | None = None
        self.dest: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.sendto(data, peer.dest)


async def _open_bare(count: int, gen_port: int) -> tuple[list[tuple[int, int]], list[_Bare]]:
    loop = asyncio.get_running_loop()
    ports: list[tuple[int, int]] = []
    endpoints: list[_Bare] = []
    for c in range(count):
        pair = []
        for leg in (0, 1):
            end = _Bare()
            end.dest = (phone_ip(2 * c + leg), gen_port)
            await loop.create_datagram_endpoint(lambda e=end: e, local_addr=("127.0.0.1", 0))
            pair.append(end)
        pair[0].peer, pair[1].peer = pair[1], pair[0]
        endpoints += pair
        ports.append(tuple(e.transport.get_extra_info("sockname")[1] for e in pair))  # type: ignore[misc,union-attr]
    return ports, endpoints


async def relay_step(calls: int, seconds: float, record: Path | None, groups: int,
                     warmup: float, bare: bool = False, fifo: bool = True,
                     shared: bool = False) -> dict[str, Any]:
    """One step: ``calls`` relayed (and recorded) calls for ``seconds``; ``shared``: the
    shared-port relay (every leg on one port, batched) instead of a port pair per leg."""
    loop = asyncio.get_running_loop()
    lo = random.randrange(20000, 30000, 2)
    relay = RtpRelay(PortAllocator(lo, lo + 4 * calls + 400), shared_port=shared)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_generator, args=(child, calls, groups, seconds, warmup, fifo),
                          daemon=True)
    process.start()
    handles: list[RelayHandle] = []
    bare_ends: list[_Bare] = []
    recordings = Recordings(record) if record is not None else None
    ticker: asyncio.Task[None] | None = None
    try:
        gen_port = await loop.run_in_executor(None, _recv, parent, 30.0)
        if bare:
            bare_ports, bare_ends = await _open_bare(calls, gen_port)
        for c in range(calls if not bare else 0):
            handle = await relay.open_session("127.0.0.1")
            handle.set_remote(Leg.A, (phone_ip(2 * c), gen_port))
            handle.set_remote(Leg.B, (phone_ip(2 * c + 1), gen_port))
            handles.append(handle)
            if recordings is not None:
                recordings.start(f"bench-{c}", handle, loop.time())
        if recordings is not None:
            async def tick() -> None:
                while True:
                    await asyncio.sleep(1.0)
                    recordings.tick(loop.time())

            ticker = loop.create_task(tick())
        parent.send(bare_ports if bare else [(h.port(Leg.A), h.port(Leg.B)) for h in handles])
        await loop.run_in_executor(None, _recv, parent, 30.0)
        ours = {os.getpid(), process.pid or 0}
        machine = _all_cpu()
        wall, cpu, loop_cpu = time.monotonic(), _cpu_of(os.getpid()), _thread_cpu()
        ready = await loop.run_in_executor(None, parent.poll, seconds + 60)
        if not ready:
            raise RuntimeError("the load generator did not finish")
        wall, cpu, loop_cpu = (time.monotonic() - wall, _cpu_of(os.getpid()) - cpu,
                               _thread_cpu() - loop_cpu)
        others = _others(machine, _all_cpu(), ours)
        result = LoadResult(**parent.recv())
        batches = relay.shared.batches if relay.shared is not None else (0, 0)
        if ticker is not None:
            ticker.cancel()
        if recordings is not None:
            await asyncio.wrap_future(recordings.close())
            recordings.shutdown()
    finally:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
        await relay.close()
        for end in bare_ends:
            if end.transport is not None:
                end.transport.close()
    return {"calls": calls, "result": result, "cpu": cpu / wall, "loop_cpu": loop_cpu / wall,
            "others": others / wall, "batches": batches}


def _sink(conn: multiprocessing.connection.Connection, seconds: float) -> None:
    """Child process for --playback: one socket that counts what the PBX plays.

    Like the load generator it reads its socket once a millisecond instead of sleeping on it:
    on loopback a sleeping receiver is woken from inside the sender's ``sendto``, which would
    charge the phones' wake-ups to the engine.
    """
    _pin(GENERATOR_CORE, False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    conn.send(sock.getsockname())
    conn.recv()
    count = 0
    end = time.monotonic() + seconds + 1.0
    while time.monotonic() < end:
        for _ in range(10_000):
            try:
                sock.recv(2048)
            except BlockingIOError:
                break
            count += 1
        time.sleep(0.001)
    conn.send(count)


async def playback_step(callers: int, seconds: float) -> dict[str, Any]:
    """``callers`` queue callers hearing music or announcements for ``seconds``."""
    from media.g711 import get_codec
    from media.playback import PlaybackEngine
    from media.player import RtpStream
    from media.sources import PlaylistSource, default_hold_music
    from media.tones import SAMPLE_RATE

    loop = asyncio.get_running_loop()
    lo = random.randrange(30000, 40000, 2)
    relay = RtpRelay(PortAllocator(lo, lo + 4 * callers + 40))
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_sink, args=(child, seconds), daemon=True)
    process.start()
    engine = PlaybackEngine()
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    announcement = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    codec = get_codec("PCMU")
    await asyncio.to_thread(default_hold_music)
    try:
        sink = tuple(await loop.run_in_executor(None, _recv, parent, 30.0))
        handles = [await relay.open_session("127.0.0.1") for _ in range(callers)]
        idle_cpu = _cpu_of(os.getpid())
        await asyncio.sleep(2.0)
        idle = (_cpu_of(os.getpid()) - idle_cpu) / 2.0
        for n, handle in enumerate(handles):
            handle.set_remote(Leg.A, sink)  # type: ignore[arg-type]
            source = (default_hold_music() if n % 2 == 0
                      else PlaylistSource([announcement, announcement], loop=True))
            engine.play(n, RtpStream(source, codec),
                        lambda data, h=handle: h.send_rtp(Leg.A, data))
        parent.send("go")
        wall, cpu = time.monotonic(), _cpu_of(os.getpid())
        await asyncio.sleep(seconds)
        wall, cpu = time.monotonic() - wall, _cpu_of(os.getpid()) - cpu
        sent = engine.sent
        engine.close()
        received = await loop.run_in_executor(None, _recv, parent, 30.0)
    finally:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
        await relay.close()
    return {"callers": callers, "cpu": cpu / wall, "idle": idle, "sent": sent,
            "received": received, "late": engine.late_ticks,
            "expected": callers * int(seconds / 0.02)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, nargs="*", default=[500, 1000, 1500, 1800])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--record", type=Path, default=None,
                        help="record every call (stereo WAV) in a new directory under DIR, "
                        "removed after each step")
    parser.add_argument("--groups", type=int, default=20,
                        help="phase groups the calls are spread over in the 20 ms period")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds at the start left out of the delay figures")
    parser.add_argument("--no-fifo", dest="fifo", action="store_false",
                        help="run at normal priority instead of SCHED_FIFO (root)")
    parser.add_argument("--shared", action="store_true",
                        help="the shared-port relay (RtpRelay(shared_port=True): every leg on "
                        "one port, recvmmsg/sendmmsg batches) instead of a port pair per leg")
    parser.add_argument("--bare", action="store_true",
                        help="instead of the PBX's relay, a bare uvloop relay (the reference)")
    parser.add_argument("--playback", type=int, default=0,
                        help="instead: N queue callers hearing music and announcements")
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs two cores (engine on core 0, generator on core 1)")
    session_nice = _autogroup_nice()
    try:
        _run(args)
    finally:
        if session_nice is not None:
            _set_autogroup_nice(session_nice)


def _run(args: argparse.Namespace) -> None:
    _pin(ENGINE_CORE, args.fifo)
    # The collector settings of the PBX (pbx/server.py, after start-up): with the defaults a
    # young collection runs every 700 allocations, and each datagram allocates its address
    # tuple.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 1_000)
    if args.playback:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            r = runner.run(playback_step(args.playback, args.seconds))
        print(f"playback: {r['callers']} callers, {args.seconds:.0f} s: "
              f"engine CPU {r['cpu']:.2%} of a core (idle engine {r['idle']:.2%}), "
              f"packets sent {r['sent']}/{r['expected']}, received {r['received']}, "
              f"late ticks {r['late']}")
        return
    what = "bare uvloop relay" if args.bare else (
        "relayed+recorded" if args.record else "relayed")
    if args.shared and not args.bare:
        what += " (shared port)"
    print(f"{what}, uvloop, engine on core {ENGINE_CORE}, generator on core {GENERATOR_CORE}, "
          f"{args.seconds:.0f} s per step, {args.groups} phase groups")
    print("| calls | packets sent | loss | added delay p50 / p99 / max ms | engine CPU "
          "(loop) | generator CPU, late p99 ms | others |")
    print("|---|---|---|---|---|---|---|")
    for calls in args.calls:
        step_dir: Path | None = None
        if args.record is not None:
            # A fresh directory per step inside DIR; only it is removed afterwards.
            args.record.mkdir(parents=True, exist_ok=True)
            step_dir = Path(tempfile.mkdtemp(prefix=f"calls{calls}-", dir=args.record))
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            step = runner.run(relay_step(calls, args.seconds, step_dir, args.groups,
                                         args.warmup, args.bare, args.fifo, args.shared))
        res: LoadResult = step["result"]
        print(f"| {calls} | {res.sent:,} | {res.loss:.3%} ({res.lost_flows} flows) | "
              f"{res.delay_p50_ms:.2f} / {res.delay_p99_ms:.2f} / {res.delay_max_ms:.1f} | "
              f"{step['cpu']:.0%} ({step['loop_cpu']:.0%}) | "
              f"{res.gen_cpu:.0%}, {res.gen_late_p99_ms:.2f} | {step['others']:.0%} |",
              flush=True)
        if step["batches"][0]:
            print(f"  (shared port: {step['batches'][0]:,} batches, "
                  f"{step['batches'][1] / step['batches'][0]:.1f} datagrams each)", flush=True)
        if step_dir is not None:
            shutil.rmtree(step_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
