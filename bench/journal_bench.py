"""The call-record journal's cost on the event loop: one ``append`` per record event, one
``rotate`` per 200 ms flush (with the ids of the calls open), as ``pbx.server`` does.

    python bench/journal_bench.py [--events 100000] [--open 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pbx.journal import RecordJournal, read_journal
from pbx.records import CallAnswered, CallEnded, CallStarted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--open", type=int, default=1000, help="calls open at each rotation")
    args = parser.parse_args()
    now = datetime.now(UTC).replace(tzinfo=None)
    calls = max(1, args.events // 3)
    events = []
    for n in range(calls):
        cid = f"{n:08d}-0000-4000-8000-000000000000"
        events += [
            CallStarted(cid, f"{n}@10.0.0.1", "inbound", "+815012345678", "Caller Name", "5000",
                        None, "bob", now),
            CallAnswered(cid, now, "bob", 2.5),
            CallEnded(cid, now, "answered", "caller hung up", "caller", None, 60.0, 2.5,
                      f"/var/lib/pbx/recordings/2026/11/21/{cid}.wav", 60.0),
        ]
    open_ids = [f"{n:08d}-0000-4000-8000-000000000000" for n in range(args.open)]
    with tempfile.TemporaryDirectory() as tmp:
        journal = RecordJournal(Path(tmp))
        journal.open(open_ids)
        start = time.perf_counter()
        for event in events:
            journal.append(event)
        append = (time.perf_counter() - start) / len(events)
        # What a start after a kill reads back (the segment was never committed).
        size = sum(p.stat().st_size for p in Path(tmp).glob("*.journal"))
        t = time.perf_counter()
        replay = read_journal(Path(tmp))
        read = time.perf_counter() - t
        rotations = []
        for _ in range(200):
            journal.append(events[0])
            t = time.perf_counter()
            seq = journal.rotate(open_ids)
            rotations.append(time.perf_counter() - t)
            assert seq is not None
            journal.committed(seq)
        journal.close()
    per_second = 100 * 3 * append + 5 * statistics.median(rotations)
    print(f"append: {append * 1e6:.1f} µs per event ({len(events):,} events)")
    print(f"rotate with {args.open:,} calls open: median {statistics.median(rotations) * 1e3:.2f}"
          f" ms, max {max(rotations) * 1e3:.2f} ms")
    print(f"at 100 calls/s (3 events each, 5 rotations/s): {per_second * 100:.2f} % of a core")
    print(f"replay read of {len(replay.events):,} events ({size / 1e6:.1f} MB): {read:.2f} s")


if __name__ == "__main__":
    main()
