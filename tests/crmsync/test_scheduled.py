"""Scheduled calls on a real SQLite file and a throw-away PostgreSQL server: create, list,
complete, reschedule, cancel, the refusals, and reminders going out once at their time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from crmsync.contacts import create_contact
from crmsync.models import Base
from crmsync.scheduled import (
    ReminderLoop,
    ScheduledCalls,
    ScheduledCallView,
    ScheduledConflict,
    ScheduledError,
    ScheduledNotFound,
)
from pbx.db import open_engine


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def test_lifecycle(engine: Engine) -> None:
    store = ScheduledCalls(engine, "JP")
    with Session(engine) as s, s.begin():
        contact = create_contact(s, first_name="Hanako", region="JP")
    start = now() + timedelta(hours=2)
    # A time with a zone is kept in UTC.
    tokyo = timezone(timedelta(hours=9))
    call = store.create({"subject": "Renewal", "number": "03-1234-5678", "owner": "alice",
                         "start_at": (start + timedelta(hours=9)).replace(tzinfo=tokyo),
                         "reminder_at": start - timedelta(minutes=15),
                         "record_kind": "contact", "record_id": contact})
    assert (call.number, call.status, call.start_at, call.direction) == \
        ("+81312345678", "scheduled", start, "outbound")
    assert call.reminder_at == start - timedelta(minutes=15) and call.reminded_at is None
    other = store.create({"number": "+81 90 1234 5678", "owner": "bob",
                          "start_at": start + timedelta(days=1), "direction": "inbound"})
    assert store.get(call.id) == call

    assert [c.id for c in store.find()] == [call.id, other.id]
    assert [c.id for c in store.find(owner="bob")] == [other.id]
    assert [c.id for c in store.find(start_from=start + timedelta(hours=1))] == [other.id]
    assert [c.id for c in store.find(start_to=start + timedelta(hours=1))] == [call.id]

    later = store.reschedule(call.id, start + timedelta(days=2), start + timedelta(days=2))
    assert later.start_at == start + timedelta(days=2) and later.status == "scheduled"
    done = store.complete(call.id, "renewed for a year")
    assert (done.status, done.result) == ("completed", "renewed for a year")
    assert [c.id for c in store.find(status="completed")] == [call.id]
    with pytest.raises(ScheduledConflict, match="the call is completed: it cannot be cancelled"):
        store.cancel(call.id, "")
    cancelled = store.cancel(other.id, "customer asked")
    assert (cancelled.status, cancelled.result) == ("cancelled", "customer asked")
    with pytest.raises(ScheduledConflict, match="cancelled"):
        store.reschedule(other.id, start + timedelta(days=3), None)
    with pytest.raises(ScheduledNotFound, match="no scheduled call with id 'nope'"):
        store.complete("nope", "")


@pytest.mark.parametrize(("change", "reason"), [
    ({"start_at": datetime(2020, 1, 1)}, "start_at must be in the future"),
    ({"reminder_at": "after"}, "reminder_at (.*) must not be after start_at"),
    ({"number": "12-34"}, "'12-34' is not a valid phone number in region JP"),
    ({"owner": " "}, "owner must name the agent"),
    ({"direction": "sideways"}, "direction must be outbound or inbound"),
    ({"subject": "a\r\nb"}, "subject must not contain control characters or line breaks"),
    ({"record_kind": "contact", "record_id": "gone"}, "no contact with id 'gone'"),
    ({"record_kind": "deal", "record_id": "x"}, "record_kind \\(contact or lead\\)"),
])
def test_refusals_write_nothing(engine: Engine, change: dict[str, object], reason: str) -> None:
    store = ScheduledCalls(engine, "JP")
    start = now() + timedelta(hours=1)
    values: dict[str, object] = {"number": "0312345678", "owner": "alice", "start_at": start}
    values.update(change)
    if values.get("reminder_at") == "after":
        values["reminder_at"] = start + timedelta(minutes=1)
    with pytest.raises(ScheduledError, match=reason) as raised:
        store.create(values)
    assert raised.value.status_code == 422
    assert store.find() == []


def test_reschedule_checks_times(engine: Engine) -> None:
    store = ScheduledCalls(engine, "JP")
    call = store.create({"number": "0312345678", "owner": "alice",
                         "start_at": now() + timedelta(hours=1)})
    with pytest.raises(ScheduledError, match="start_at must be in the future"):
        store.reschedule(call.id, now() - timedelta(minutes=1), None)
    assert store.get(call.id).start_at == call.start_at


def test_due_reminders_go_out_once(engine: Engine) -> None:
    store = ScheduledCalls(engine, "JP")
    t = now()
    first = store.create({"number": "0312345678", "owner": "alice",
                          "start_at": t + timedelta(minutes=30),
                          "reminder_at": t + timedelta(minutes=10)})
    second = store.create({"number": "0312345679", "owner": "bob",
                           "start_at": t + timedelta(minutes=40),
                           "reminder_at": t + timedelta(minutes=20)})
    cancelled = store.create({"number": "0312345670", "owner": "bob",
                              "start_at": t + timedelta(minutes=40),
                              "reminder_at": t + timedelta(minutes=5)})
    store.create({"number": "0312345671", "owner": "bob", "start_at": t + timedelta(hours=1)})
    store.cancel(cancelled.id, "")
    assert store.due_reminders(t + timedelta(minutes=9)) == []
    due = store.due_reminders(t + timedelta(minutes=25))
    assert [c.id for c in due] == [first.id, second.id]
    assert store.mark_reminded([first.id], t + timedelta(minutes=25)) == 1
    assert store.mark_reminded([first.id], t + timedelta(minutes=26)) == 0
    assert [c.id for c in store.due_reminders(t + timedelta(minutes=25))] == [second.id]
    # A rescheduled call is reminded again at its new time.
    store.reschedule(first.id, t + timedelta(hours=3), t + timedelta(hours=2))
    assert [c.id for c in store.due_reminders(t + timedelta(hours=2))] == [second.id, first.id]


@pytest.mark.asyncio
async def test_reminder_loop_calls_back_once_per_reminder(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'pbx.db'}")
    Base.metadata.create_all(engine)
    store = ScheduledCalls(engine, "JP")
    clock = [now()]
    ids = [store.create({"number": f"031234567{i}", "owner": "alice",
                         "start_at": clock[0] + timedelta(minutes=30),
                         "reminder_at": clock[0] + timedelta(minutes=i)}).id for i in range(5)]
    seen: list[ScheduledCallView] = []
    arrived = asyncio.Event()

    async def on_reminder(row: ScheduledCallView) -> None:
        seen.append(row)
        if len(seen) == 3:
            arrived.set()
        if row.id == ids[2]:
            raise RuntimeError("the event stream is down")  # logged; the others still go out

    loop = ReminderLoop(store, on_reminder, interval=0.02, batch=2, clock=lambda: clock[0])
    loop.start()
    try:
        clock[0] += timedelta(minutes=2, seconds=30)
        await asyncio.wait_for(arrived.wait(), 5.0)
        await asyncio.sleep(0.1)  # more polls send nothing again
        assert [row.id for row in seen] == ids[:3]
        clock[0] += timedelta(minutes=10)
        async with asyncio.timeout(5.0):
            while len(seen) < 5:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert [row.id for row in seen] == ids
        assert store.due_reminders(clock[0]) == []
    finally:
        await loop.stop()
        engine.dispose()
