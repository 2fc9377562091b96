"""Call-record events folded into one row per call and written in batches."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from crmsync.models import Base, Call
from crmsync.writer import CallRecordFolder
from pbx.records import CallAnswered, CallEnded, CallQueued, CallStarted

T0 = datetime(2026, 11, 21, 9, 0, 0)


def _started(cid: str) -> CallStarted:
    return CallStarted(cid, f"sip-{cid}", "internal", "101", "Alice", "102", "alice", "bob", T0)


def _apply(engine: Engine, folder: CallRecordFolder) -> int:
    job = folder.flush()
    if job is None:
        return 0
    with Session(engine) as s, s.begin():
        job(s)
    return 1


def test_events_fold_into_one_row_across_flushes() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    folder = CallRecordFolder()
    folder.add(_started("c1"))
    assert _apply(engine, folder) == 1
    folder.add(CallAnswered("c1", T0 + timedelta(seconds=4), "bob", 4.0))
    folder.add(CallEnded("c1", T0 + timedelta(seconds=64), "answered", "caller hung up",
                         "caller", None, 60.0, 4.0))
    # A call that starts and ends between two flushes is one row write.
    folder.add(_started("c2"))
    folder.add(CallEnded("c2", T0 + timedelta(seconds=9), "no_answer", "no answer", "system",
                         480, 0.0, 9.0))
    assert _apply(engine, folder) == 1
    assert len(folder) == 0  # ended calls are forgotten once written
    assert _apply(engine, folder) == 0
    with Session(engine) as s:
        rows = {c.id: c for c in s.scalars(select(Call))}
    assert rows["c1"].disposition == "answered" and rows["c1"].duration == 60.0
    assert rows["c1"].answered_by == "bob" and rows["c1"].ring_seconds == 4.0
    assert rows["c2"].disposition == "no_answer" and rows["c2"].sip_code == 480
    assert rows["c2"].answered_at is None
    # The Calls-module fields, worked out as the events came.
    assert (rows["c1"].call_type, rows["c1"].status, rows["c1"].owner, rows["c1"].subject) == (
        "internal", "completed", "bob", "Internal call 101 → 102")
    assert (rows["c2"].call_type, rows["c2"].owner, rows["c2"].subject, rows["c2"].revision) \
        == ("missed", "bob", "Missed call from Alice", 1)


def test_events_after_the_final_write_update_the_row() -> None:
    """A queue's result can come after the caller's hang-up was written: it updates the row
    (and an event of a call this process never started updates nothing)."""
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    folder = CallRecordFolder()
    folder.add(CallStarted("c1", "sip-1", "inbound", "+81312345678", "", "5000", None, None,
                           T0))
    folder.add(CallEnded("c1", T0, "no_answer", "caller hung up", "caller", None, 0.0, 9.0))
    _apply(engine, folder)
    folder.add(CallQueued("c1", "support", "abandoned", 8.5))
    folder.add(CallAnswered("nope", T0, "bob", 1.0))
    assert _apply(engine, folder) == 1
    with Session(engine) as s:
        rows = {c.id: c for c in s.scalars(select(Call))}
    assert set(rows) == {"c1"}
    assert rows["c1"].queue == "support" and rows["c1"].queue_result == "abandoned"
    assert rows["c1"].queue_wait == 8.5 and rows["c1"].disposition == "no_answer"
    # A change after the row was final is a new revision of the record.
    assert rows["c1"].revision == 2 and rows["c1"].call_type == "missed"
