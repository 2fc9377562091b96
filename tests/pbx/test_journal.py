"""The call-record journal: what a killed PBX had not written is read back whole, a write cut
short by the kill ends its segment, and committed segments go."""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from datetime import datetime
from pathlib import Path

import pytest

from pbx.journal import JournalLocked, RecordJournal, read_journal
from pbx.records import CallAnswered, CallEnded, CallLeg, CallStarted

T0 = datetime(2026, 11, 21, 9, 0, 0)


def _started(cid: str) -> CallStarted:
    return CallStarted(cid, f"sip-{cid}", "inbound", "+815012345678", "Caller", "100", None,
                       "bob", T0)


def test_events_come_back_in_order_with_the_calls_open_at_any_segment(
        tmp_path: Path) -> None:
    journal = RecordJournal(tmp_path)
    journal.open(["old-1", "old-2"])
    journal.append(_started("a"))
    journal.append(CallAnswered("a", T0, "bob", 1.5))
    seq = journal.rotate(["old-1", "old-2", "a"])
    assert seq == 1
    journal.append(CallEnded("a", T0, "answered", "caller hung up", "caller", 200, 4.0, 1.5,
                             "/r/a.wav", 4.0, "12#"))
    journal.append(CallLeg("a", "a:1", "ring", "bob", None, T0, T0, None, "answered"))
    replay = read_journal(tmp_path)
    assert replay.open_calls == {"old-1", "old-2", "a"}
    assert [type(e).__name__ for e in replay.events] == [
        "CallStarted", "CallAnswered", "CallEnded", "CallLeg"]
    assert replay.events[2] == CallEnded("a", T0, "answered", "caller hung up", "caller", 200,
                                         4.0, 1.5, "/r/a.wav", 4.0, "12#")
    assert replay.segments == (1, 2) and replay.damaged == 0
    assert replay.last_written is not None


def test_a_committed_segment_is_deleted_and_the_rest_still_replays(tmp_path: Path) -> None:
    journal = RecordJournal(tmp_path)
    journal.open([])
    journal.append(_started("a"))
    seq = journal.rotate(["a"])
    assert seq is not None
    journal.append(_started("b"))
    journal.committed(seq)
    replay = read_journal(tmp_path)
    # The oldest segment left begins with the calls open then: "a" is still known as open.
    assert replay.open_calls == {"a"}
    assert [e.call_id for e in replay.events] == ["b"]


def test_nothing_written_nothing_rotated_and_a_clean_close_leaves_no_segment(
        tmp_path: Path) -> None:
    journal = RecordJournal(tmp_path)
    journal.open([])
    assert journal.rotate([]) is None
    journal.close()
    assert list(tmp_path.glob("*.journal")) == []
    assert read_journal(tmp_path).segments == ()


def test_a_frame_cut_short_by_the_kill_ends_its_segment(tmp_path: Path) -> None:
    journal = RecordJournal(tmp_path)
    journal.open([])
    journal.append(_started("a"))
    journal.append(_started("b"))
    path = next(tmp_path.iterdir())
    data = path.read_bytes()
    path.write_bytes(data[:-5])  # the kill landed in the middle of the last write
    replay = read_journal(tmp_path)
    assert [e.call_id for e in replay.events] == ["a"]
    assert replay.damaged == 1


def test_a_damaged_frame_is_counted_not_trusted(tmp_path: Path) -> None:
    journal = RecordJournal(tmp_path)
    journal.open([])
    journal.append(_started("a"))
    path = next(tmp_path.iterdir())
    with path.open("ab") as f:
        f.write(struct.pack("<II", 4, 12345) + b"junk")
    replay = read_journal(tmp_path)
    assert [e.call_id for e in replay.events] == ["a"] and replay.damaged == 1


def test_a_new_journal_continues_after_the_segments_it_finds(tmp_path: Path) -> None:
    first = RecordJournal(tmp_path)
    first.open([])
    first.append(_started("a"))
    # While the first process lives, nobody else may use its journal.
    with pytest.raises(JournalLocked, match="in use by another PBX process"):
        RecordJournal(tmp_path)
    # A kill: no close (the lock goes with the process). The next process replays these,
    # then starts after them.
    assert first._fd is not None
    os.close(first._fd)
    os.close(first._lock)
    second = RecordJournal(tmp_path)
    left = read_journal(tmp_path)
    second.open([])
    second.discard(left.segments)
    second.append(_started("b"))
    replay = read_journal(tmp_path)
    assert [e.call_id for e in replay.events] == ["b"]


def test_a_gap_left_by_a_failed_batch_still_names_every_open_call(tmp_path: Path) -> None:
    journal = RecordJournal(tmp_path)
    journal.open([])
    journal.append(_started("a"))
    kept = journal.rotate(["a"])  # its batch fails for good: the segment stays
    journal.append(_started("x"))
    done = journal.rotate(["a", "x"])
    assert kept is not None and done is not None
    journal.committed(done)
    journal.append(CallAnswered("a", T0, "bob", 1.0))
    # x started after the kept segment and has no event since: only a header names it.
    assert read_journal(tmp_path).open_calls == {"a", "x"}


def test_a_planted_frame_cannot_run_code(tmp_path: Path) -> None:
    journal = RecordJournal(tmp_path)
    journal.open([])
    journal.append(_started("a"))
    evil = pickle.dumps(os.getcwd)  # a callable: refused by the journal's reader
    path = next(tmp_path.glob("*.journal"))
    with path.open("ab") as f:
        f.write(struct.pack("<II", len(evil), zlib.crc32(evil)) + evil)
    replay = read_journal(tmp_path)
    assert [e.call_id for e in replay.events] == ["a"] and replay.damaged == 1


def test_a_journal_that_cannot_be_written_does_not_raise_and_recovers(tmp_path: Path) -> None:
    journal = RecordJournal(tmp_path)
    journal.open([])
    assert journal._fd is not None
    os.close(journal._fd)  # the descriptor goes bad under it (as a full disk would fail)
    journal.append(_started("a"))
    journal.append(_started("b"))
    assert journal.write_errors == 2
    # The next flush starts a new segment, and what comes after is journaled again.
    assert journal.rotate(["a", "b"]) is not None
    journal.append(_started("c"))
    assert journal.write_errors == 2
    assert [e.call_id for e in read_journal(tmp_path).events] == ["c"]
    journal.close()


def test_each_call_is_cut_off_when_its_own_run_stopped(tmp_path: Path) -> None:
    """A segment kept from an earlier run (its batch failed) says when that run stopped; a
    call of the last run gets the last run's time."""
    journal = RecordJournal(tmp_path)
    journal.open([])
    journal.append(_started("old"))
    old_seq = journal.rotate([])  # its batch then failed for good: the folder let it go
    assert old_seq is not None
    os.utime(tmp_path / f"{old_seq:012d}.journal", (1_000_000.0, 1_000_000.0))
    journal.append(_started("new"))
    replay = read_journal(tmp_path)
    assert replay.last_seen["old"] == 1_000_000.0
    assert replay.last_seen["new"] > 1_000_000.0
    # A call still open is named by every later segment's header: the newest one counts.
    journal.rotate(["new"])
    assert read_journal(tmp_path).last_seen["new"] >= replay.last_seen["new"]
