"""Throughput of the RTP relay: the sans-I/O core alone, then real UDP on 127.0.0.1.

Usage: python bench/relay_bench.py [--sessions 1 10 50] [--calls 100 200] [--seconds 3]
                                   [--loop asyncio uvloop]

The UDP parts run the relay in this process and the "phones" in a child process (the two share
the machine's cores, as a PBX and its traffic generator would). For every session two phones send
172-byte RTP packets (G.711, 20 ms) to their leg's port in rounds, each phone one packet a round,
and read back what the relay forwarded.
- flat out (--sessions): rounds as fast as the phones can go; printed: packets/s the relay
  forwarded and the share of sent packets that arrived.
- paced (--calls): one round every 20 ms, i.e. real calls at 50 packets/s each way; printed: the
  share delivered and the relay's CPU use.
Every run is bounded by --seconds; all traffic stays on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import random
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media.relay import Leg, PortAllocator, RelaySession
from media.udp import RelayHandle, RtpRelay
from pbx.recording import Recordings

PAYLOAD = bytes(160)


def bench_core(calls: int = 1_000_000) -> float:
    """Nanoseconds per RelaySession.on_packet call on the forwarding path."""
    session = RelaySession()
    a, b = ("192.0.2.1", 4000), ("192.0.2.2", 6000)
    session.set_remote(Leg.A, a)
    session.set_remote(Leg.B, b)
    packet = struct.pack("!BBHII", 0x80, 0, 1, 160, 1) + PAYLOAD
    on_packet = session.on_packet
    leg_a, leg_b = Leg.A, Leg.B
    start = time.perf_counter()
    for n in range(calls // 2):
        on_packet(leg_a, packet, a, False, n)
        on_packet(leg_b, packet, b, False, n)
    elapsed = time.perf_counter() - start
    assert session.stats().a.rtp_packets == calls // 2
    return elapsed / calls * 1e9


def _phones(
    conn: multiprocessing.connection.Connection,
    ports: list[tuple[int, int]],
    seconds: float,
    interval: float | None,
) -> None:
    """Child process: two phones per session; send in rounds, count what comes back."""
    phones: list[tuple[socket.socket, tuple[str, int]]] = []
    for port_a, port_b in ports:
        for port in (port_a, port_b):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            phones.append((sock, ("127.0.0.1", port)))
    conn.send([sock.getsockname() for sock, _ in phones])
    conn.recv()  # the relay knows our addresses
    sent = received = seq = 0
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        if interval is not None:
            # Absolute schedule (start + n * ptime), like a phone's media clock.
            delay = start + seq * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        seq += 1
        header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, 1)
        for sock, relay_port in phones:
            try:
                sock.sendto(header + PAYLOAD, relay_port)
                sent += 1
            except BlockingIOError:
                pass
        # Drain, so that the next round is not sent into full buffers.
        for sock, _ in phones:
            while True:
                try:
                    sock.recv(2048)
                except BlockingIOError:
                    break
                received += 1
    time.sleep(0.2)
    for sock, _ in phones:
        while True:
            try:
                sock.recv(2048)
            except BlockingIOError:
                break
            received += 1
        sock.close()
    conn.send((sent, received))


async def bench_udp(
    sessions: int, seconds: float, interval: float | None = None, record: Path | None = None
) -> tuple[float, float, float]:
    """Forwarded packets/s, delivery ratio and relay CPU share for ``sessions`` calls.

    With ``record``, every session is also recorded to a stereo WAV under that directory, the
    way the PBX records calls (relay tap, timeline mixer, one writer thread, once a second).
    """
    lo = random.randrange(20000, 50000, 2)
    relay = RtpRelay(PortAllocator(lo, lo + 4 * sessions + 200))
    handles: list[RelayHandle] = [await relay.open_session("127.0.0.1") for _ in range(sessions)]
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    ports = [(h.port(Leg.A), h.port(Leg.B)) for h in handles]
    process = ctx.Process(target=_phones, args=(child, ports, seconds, interval), daemon=True)
    process.start()
    loop = asyncio.get_running_loop()
    try:
        addresses = await loop.run_in_executor(None, parent.recv)
        for index, handle in enumerate(handles):
            handle.set_remote(Leg.A, tuple(addresses[2 * index]))
            handle.set_remote(Leg.B, tuple(addresses[2 * index + 1]))
        recordings = Recordings(record) if record is not None else None
        ticker: asyncio.Task[None] | None = None
        if recordings is not None:
            for index, handle in enumerate(handles):
                recordings.start(f"bench-{index}", handle, loop.time())

            async def tick() -> None:
                while True:
                    await asyncio.sleep(1.0)
                    recordings.tick(loop.time())

            ticker = loop.create_task(tick())
        start, cpu_start = loop.time(), time.process_time()
        parent.send("go")
        ready = await loop.run_in_executor(None, parent.poll, seconds + 30)
        if recordings is not None and ticker is not None:
            ticker.cancel()
            await asyncio.wrap_future(recordings.close())
            recordings.shutdown()
        elapsed, cpu = loop.time() - start, time.process_time() - cpu_start
        if not ready:
            raise RuntimeError("traffic generator did not finish")
        sent, received = parent.recv()
    finally:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
        await relay.close()
    forwarded = 0
    for handle in handles:
        stats = handle.stats()
        forwarded += stats.a.rtp_packets + stats.b.rtp_packets
    return forwarded / elapsed, received / sent if sent else 0.0, cpu / elapsed


def _loop_factory(name: str) -> type[asyncio.AbstractEventLoop] | None:
    if name == "uvloop":
        import uvloop

        return uvloop.Loop
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--calls", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--loop", nargs="+", default=["asyncio", "uvloop"])
    parser.add_argument("--record", type=Path, default=None,
                        help="also record every paced call (stereo WAV) under this directory")
    args = parser.parse_args()
    print(f"core: RelaySession.on_packet {bench_core():.0f} ns/packet")
    for loop_name in args.loop:
        factory = _loop_factory(loop_name)
        for sessions in args.sessions:
            with asyncio.Runner(loop_factory=factory) as runner:
                pps, delivered, _ = runner.run(bench_udp(sessions, args.seconds))
            print(
                f"udp {loop_name:7} flat out, sessions={sessions:4}: {pps:9.0f} packets/s "
                f"forwarded, {delivered:6.1%} delivered"
            )
        for calls in args.calls:
            with asyncio.Runner(loop_factory=factory) as runner:
                pps, delivered, cpu = runner.run(
                    bench_udp(calls, args.seconds, 0.020, args.record))
            what = "paced+rec" if args.record else "paced,   "
            print(
                f"udp {loop_name:7} {what} calls={calls:4}: {pps:9.0f} packets/s "
                f"forwarded, {delivered:6.1%} delivered, relay CPU {cpu:6.1%} of one core"
            )


if __name__ == "__main__":
    main()
