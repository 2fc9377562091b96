"""The outbox on a real SQLite file: events written with their call rows in one transaction,
claims and leases, retry bookkeeping, replay, pruning, and the migration that makes the tables.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select, update
from sqlalchemy.orm import Session

from crmsync.models import Base, Call, OutboxEvent, WebhookAttempt, WebhookDelivery
from crmsync.outbox import (
    Claim,
    Due,
    OutboxStore,
    Outcome,
    PendingEvent,
    RetryPolicy,
    enqueue,
    retry_delay,
    utcnow,
)
from crmsync.writer import CallRecordFolder
from pbx import schema
from pbx.config_crm import Webhook
from pbx.db import WriteBehind, open_engine
from pbx.records import CallAnswered, CallEnded, CallQueued, CallStarted

T0 = datetime(2026, 11, 21, 9, 0, 0)
SECRET = "0123456789abcdef0123"





def _hook(name: str, *events: str, enabled: bool = True) -> Webhook:
    return Webhook(name=name, url=f"https://{name}.example/hook", secret=SECRET,
                   events=events or Webhook.model_fields["events"].default, enabled=enabled)


def _started(cid: str, direction: str = "inbound", at: datetime = T0) -> CallStarted:
    return CallStarted(cid, f"sip-{cid}", direction, "+81312345678", "Caller", "5000", None,
                       "bob", at)


def _ended(cid: str, disposition: str, seconds: float, *, recording: str | None = None,
           duration: float = 0.0) -> CallEnded:
    return CallEnded(cid, T0 + timedelta(seconds=seconds), disposition, "caller hung up",
                     "caller", None, duration, seconds, recording, 12.5 if recording else None)


def _apply(engine: Engine, folder: CallRecordFolder) -> None:
    job = folder.flush()
    assert job is not None
    with Session(engine) as s, s.begin():
        job(s)


def _outbox(engine: Engine) -> dict[str, dict[str, Any]]:
    with Session(engine) as s:
        return {row.idempotency_key: json.loads(row.payload)
                for row in s.scalars(select(OutboxEvent))}


def _deliveries(engine: Engine) -> set[tuple[str, str]]:
    with Session(engine) as s:
        rows = s.execute(select(OutboxEvent.idempotency_key, WebhookDelivery.webhook)
                         .join(WebhookDelivery, WebhookDelivery.outbox_id == OutboxEvent.id))
        return {(key, hook) for key, hook in rows}


def test_each_event_is_written_once_with_the_call_as_it_was(engine: Engine) -> None:
    folder = CallRecordFolder()
    folder.set_webhooks([_hook("crm"), _hook("bi", "call.ended", "call.missed"),
                         _hook("off", enabled=False)])
    folder.add(_started("c1"))
    _apply(engine, folder)
    folder.add(CallAnswered("c1", T0 + timedelta(seconds=3), "bob", 3.0))
    folder.add(_ended("c1", "answered", 63.0, recording="/var/rec/c1.flac", duration=60.0))
    # Each of these starts and ends between two flushes.
    folder.add(_started("c2"))
    folder.add(_ended("c2", "no_answer", 20.0))
    folder.add(_started("c3", "outbound"))
    folder.add(_ended("c3", "no_answer", 30.0))
    folder.add(_started("c4", "internal"))
    folder.add(_ended("c4", "cancelled", 4.0))
    folder.add(_started("c5"))
    folder.add(CallQueued("c5", "support", "abandoned", 40.0))
    folder.add(_ended("c5", "no_answer", 41.0))
    _apply(engine, folder)
    assert folder.flush() is None

    events = _outbox(engine)
    assert set(events) == {
        "c1:call.started", "c1:call.answered", "c1:call.ended", "c1:recording.ready",
        "c2:call.started", "c2:call.ended", "c2:call.missed",
        "c3:call.started", "c3:call.ended",  # nobody at the PBX missed an outbound call
        "c4:call.started", "c4:call.ended", "c4:call.missed",
        "c5:call.started", "c5:call.ended", "c5:call.missed",
    }
    started = events["c1:call.started"]
    assert started["event"] == "call.started" and started["id"] == "c1:call.started"
    assert started["occurred_at"] == "2026-11-21T09:00:00.000Z"
    assert started["call"]["disposition"] == "in_progress"
    assert started["call"]["answered_at"] is None
    answered = events["c1:call.answered"]
    assert answered["occurred_at"] == "2026-11-21T09:00:03.000Z"
    assert answered["call"]["answered_by"] == "bob" and answered["call"]["ended_at"] is None
    ended = events["c1:call.ended"]["call"]
    with Session(engine) as s:
        row = s.get(Call, "c1")
        assert row is not None
        columns = {c.key for c in Call.__table__.columns}
        # The ended event carries the full record, exactly as stored.
        assert set(ended) == columns
        assert ended["duration"] == row.duration == 60.0
        assert ended["ended_at"] == "2026-11-21T09:01:03.000Z"
    assert events["c1:recording.ready"]["call"]["recording_path"] == "/var/rec/c1.flac"
    assert events["c5:call.missed"]["call"]["queue"] == "support"

    deliveries = _deliveries(engine)
    assert {key for key, hook in deliveries if hook == "crm"} == set(events)
    assert {key for key, hook in deliveries if hook == "bi"} == {
        key for key in events if key.endswith((":call.ended", ":call.missed"))
    }
    # A disabled webhook's deliveries are stored too: they wait until it is enabled again.
    assert {key for key, hook in deliveries if hook == "off"} == set(events)


def test_without_webhooks_nothing_goes_to_the_outbox(engine: Engine) -> None:
    folder = CallRecordFolder()
    folder.add(_started("c1"))
    folder.add(_ended("c1", "no_answer", 5.0))
    _apply(engine, folder)
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Call)) == 1
    assert _outbox(engine) == {}
    # A disabled webhook still gets its events stored, to be sent once it is back.
    folder.set_webhooks([_hook("off", enabled=False)])
    folder.add(_started("c2"))
    _apply(engine, folder)
    assert set(_outbox(engine)) == {"c2:call.started"}


def test_a_failed_batch_commits_neither_calls_nor_events(tmp_path: Path) -> None:
    """The call rows and the outbox rows are one transaction: when the batch fails after the
    call rows were written (here the deliveries table is missing), nothing of it remains."""
    engine = open_engine(f"sqlite:///{tmp_path / 'pbx.db'}")
    tables = Base.metadata.tables
    Base.metadata.create_all(engine, tables=[tables["calls"], tables["outbox"]])
    folder = CallRecordFolder()
    folder.set_webhooks([_hook("crm")])
    folder.add(_started("c1"))
    folder.add(_ended("c1", "no_answer", 5.0))
    job = folder.flush()
    assert job is not None
    db = WriteBehind(engine)
    try:
        db.submit(job)
        assert db.flush()
    finally:
        db.close()
    assert db.failed_jobs == 1
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Call)) == 0
        assert s.scalar(select(func.count()).select_from(OutboxEvent)) == 0


def test_the_commit_hook_runs_after_the_commit(engine: Engine) -> None:
    seen: list[int] = []
    committed = threading.Event()

    def on_commit() -> None:
        # Called from the writer thread once the rows are visible to other connections.
        with Session(engine) as s:
            seen.append(s.scalar(select(func.count()).select_from(WebhookDelivery)) or 0)
        committed.set()

    folder = CallRecordFolder(on_outbox_commit=on_commit)
    folder.set_webhooks([_hook("crm", "call.ended")])
    db = WriteBehind(engine)
    try:
        folder.add(_started("c1"))  # no subscribed event: no hook
        job = folder.flush()
        assert job is not None
        db.submit(job)
        assert db.flush()
        assert seen == []
        folder.add(_ended("c1", "answered", 5.0))
        job = folder.flush()
        assert job is not None
        db.submit(job)
        assert committed.wait(5.0)
    finally:
        db.close()
    assert seen == [1]


def test_writing_an_event_twice_changes_nothing(engine: Engine) -> None:
    pending = [PendingEvent("call.ended", "c1", T0, {"id": "c1"})]
    subscribers = {"call.ended": ("crm", "bi")}
    for _ in range(2):
        with Session(engine) as s, s.begin():
            enqueue(s, pending, subscribers, T0)
    assert list(_outbox(engine)) == ["c1:call.ended"]
    assert _deliveries(engine) == {("c1:call.ended", "crm"), ("c1:call.ended", "bi")}


def _queue(engine: Engine, count: int, hooks: tuple[str, ...] = ("crm",)) -> None:
    pending = [PendingEvent("call.ended", f"c{i}", T0, {"id": f"c{i}"}) for i in range(count)]
    with Session(engine) as s, s.begin():
        enqueue(s, pending, {"call.ended": hooks}, utcnow())


def _lapse(engine: Engine) -> None:
    """Make every pending row due now, as if its lease had run out."""
    with Session(engine) as s, s.begin():
        s.execute(update(WebhookDelivery).values(next_attempt_at=utcnow() - timedelta(seconds=1)))


def _outcome(due: Due, code: int | None, error: str | None = None) -> Outcome:
    return Outcome(due, utcnow(), code, error, 12)


def test_claims_are_leased_and_never_handed_out_twice(engine: Engine) -> None:
    store = OutboxStore(engine)
    _queue(engine, 5, ("crm", "bi"))
    retry = RetryPolicy()
    first = store.sync([], retry=retry, jitter=[], claims=[Claim("crm", 3, 60.0)])
    assert [d.key for d in first.claimed] == ["c0:call.ended", "c1:call.ended", "c2:call.ended"]
    assert all(d.webhook == "crm" and d.attempts == 0 for d in first.claimed)
    assert json.loads(first.claimed[0].payload)["call"] == {"id": "c0"}
    # A second worker gets the rest, not the leased ones.
    second = store.sync([], retry=retry, jitter=[], claims=[Claim("crm", 10, 60.0)])
    assert [d.key for d in second.claimed] == ["c3:call.ended", "c4:call.ended"]
    assert store.sync([], retry=retry, jitter=[], claims=[Claim("crm", 10, 60.0)]).claimed == []
    # The worker that claimed them died: once the lease runs out, they are due again.
    _lapse(engine)
    busy = {second.claimed[0].delivery_id}
    again = store.sync([], retry=retry, jitter=[], claims=[Claim("crm", 10, 60.0)], busy=busy)
    assert len(again.claimed) == 4 and busy.isdisjoint(d.delivery_id for d in again.claimed)
    # The other webhook's rows were never touched.
    assert len(store.sync([], retry=retry, jitter=[],
                          claims=[Claim("bi", 10, 60.0)]).claimed) == 5


def test_two_nodes_claiming_at_once_never_share_a_row(engine: Engine) -> None:
    _queue(engine, 60)
    stores = [OutboxStore(open_engine(engine.url.render_as_string(hide_password=False)))
              for _ in range(2)]
    barrier = threading.Barrier(2, timeout=10)
    got: list[list[int]] = [[], []]

    def node(index: int) -> None:
        barrier.wait()
        for _ in range(10):
            synced = stores[index].sync([], retry=RetryPolicy(), jitter=[],
                                        claims=[Claim("crm", 4, 60.0)])
            got[index] += [d.delivery_id for d in synced.claimed]

    threads = [threading.Thread(target=node, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert set(got[0]).isdisjoint(got[1])
    assert len(got[0]) + len(got[1]) == 60 and len(set(got[0] + got[1])) == 60


def test_outcomes_move_rows_to_delivered_retry_or_dead(engine: Engine) -> None:
    store = OutboxStore(engine)
    _queue(engine, 3)
    retry = RetryPolicy(max_attempts=2, first_delay=10.0, max_delay=60.0)
    ok, again, gone = store.sync([], retry=retry, jitter=[],
                                 claims=[Claim("crm", 3, 60.0)]).claimed
    before = utcnow()
    synced = store.sync(
        [_outcome(ok, 204), _outcome(again, 500, "HTTP 500: oops"),
         _outcome(gone, None, "ConnectError: refused")],
        retry=retry, jitter=[0.0, 0.0], claims=[Claim("crm", 3, 60.0)],
    )
    assert [t.status for t in synced.transitions] == ["delivered", "pending", "pending"]
    assert synced.claimed == []  # both retries wait 10 s
    assert synced.next_due is not None
    assert timedelta(seconds=9) < synced.next_due - before < timedelta(seconds=11)
    _lapse(engine)
    again2, gone2 = store.sync([], retry=retry, jitter=[], claims=[Claim("crm", 3, 60.0)]).claimed
    assert again2.attempts == 1
    synced = store.sync([_outcome(again2, 200), _outcome(gone2, 503, "HTTP 503")],
                        retry=retry, jitter=[0.5])
    assert [t.status for t in synced.transitions] == ["delivered", "dead"]
    rows = {d.idempotency_key: d for d in store.deliveries()}
    assert rows["c0:call.ended"].status == "delivered" and rows["c0:call.ended"].attempts == 1
    assert rows["c1:call.ended"].status == "delivered" and rows["c1:call.ended"].attempts == 2
    dead = rows["c2:call.ended"]
    assert (dead.status, dead.attempts, dead.last_status_code, dead.last_error) == (
        "dead", 2, 503, "HTTP 503")
    log = store.attempts(dead.id)
    assert [(a.status_code, a.error) for a in log] == [
        (None, "ConnectError: refused"), (503, "HTTP 503")]
    assert store.deliveries(status="dead") == [dead]


def test_replay_makes_dead_rows_pending_with_a_fresh_budget(engine: Engine) -> None:
    store = OutboxStore(engine)
    _queue(engine, 2)
    retry = RetryPolicy(max_attempts=1)
    claimed = store.sync([], retry=retry, jitter=[], claims=[Claim("crm", 2, 60.0)]).claimed
    store.sync([_outcome(claimed[0], 200), _outcome(claimed[1], 500, "HTTP 500")],
               retry=retry, jitter=[0.0])
    with pytest.raises(ValueError, match="only dead or delivered"):
        store.replay(statuses=("pending",))
    assert store.replay(webhook="other") == []
    dead_id = claimed[1].delivery_id
    assert store.replay() == [dead_id]
    assert store.replay() == []  # it is pending now
    again = store.sync([], retry=retry, jitter=[], claims=[Claim("crm", 5, 60.0)]).claimed
    assert [(d.delivery_id, d.attempts) for d in again] == [(dead_id, 0)]
    # A delivered row is replayed only when asked for by status.
    assert store.replay([claimed[0].delivery_id]) == []
    assert store.replay([claimed[0].delivery_id], statuses=("delivered",)) == [
        claimed[0].delivery_id]
    assert store.replay(call_id="c0", statuses=("delivered", "dead")) == []


def test_prune_drops_only_the_log_of_old_delivered_rows(engine: Engine) -> None:
    store = OutboxStore(engine)
    _queue(engine, 2)
    retry = RetryPolicy(max_attempts=1)
    ok, dead = store.sync([], retry=retry, jitter=[], claims=[Claim("crm", 2, 60.0)]).claimed
    store.sync([_outcome(ok, 200), _outcome(dead, 500, "HTTP 500")], retry=retry, jitter=[0.0])
    assert store.prune(utcnow() - timedelta(days=1)) == 0
    assert store.prune(utcnow() + timedelta(seconds=1)) == 1
    assert store.attempts(ok.delivery_id) == []
    assert len(store.attempts(dead.delivery_id)) == 1
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(WebhookAttempt)) == 1
        assert s.scalar(select(func.count()).select_from(WebhookDelivery)) == 2


def test_old_delivered_events_go_with_their_deliveries_but_dead_ones_stay(
        engine: Engine) -> None:
    store = OutboxStore(engine)
    _queue(engine, 2)
    retry = RetryPolicy(max_attempts=1)
    ok, dead = store.sync([], retry=retry, jitter=[], claims=[Claim("crm", 2, 60.0)]).claimed
    store.sync([_outcome(ok, 200), _outcome(dead, 500, "HTTP 500")], retry=retry, jitter=[0.0])
    assert store.prune_events(utcnow() - timedelta(days=1)) == 0
    assert store.prune_events(utcnow() + timedelta(seconds=1), batch=1) == 1
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(OutboxEvent)) == 1
        [left] = s.scalars(select(WebhookDelivery)).all()
        assert left.status == "dead" and left.id == dead.delivery_id
        assert s.scalar(select(func.count()).select_from(WebhookAttempt)) == 1


def test_retry_delay_doubles_up_to_the_cap_less_jitter() -> None:
    retry = RetryPolicy(max_attempts=12, first_delay=1.0, max_delay=600.0)
    assert [retry_delay(n, retry, 0.0) for n in range(1, 12)] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600]
    assert retry_delay(500, retry, 0.0) == 600.0
    assert retry_delay(3, retry, 0.999) == pytest.approx(4 * 0.8, rel=0.01)
    total = sum(retry_delay(n, retry, 0.0) for n in range(1, retry.max_attempts))
    assert 20 * 60 < total < 30 * 60  # the config's "about 25 minutes"


def test_the_migration_makes_the_tables_the_models_describe(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'pbx.db'}")
    schema.upgrade(engine)
    ours = {"outbox", "webhook_deliveries", "webhook_attempts"}
    assert ours <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = [d for d in compare_metadata(ctx, Base.metadata)
                if d[0] != "remove_table"]  # registrations and presence are not crmsync's
    assert diff == []
    # The claim statement works on the migrated schema as on create_all's.
    _queue(engine, 1)
    assert len(OutboxStore(engine).sync([], retry=RetryPolicy(), jitter=[],
                                        claims=[Claim("crm", 1, 5.0)]).claimed) == 1
    schema.downgrade(engine, "0001")
    assert ours.isdisjoint(inspect(engine).get_table_names())


def test_the_migration_keeps_tables_an_older_start_made(tmp_path: Path) -> None:
    """A PBX that had these models before revision 0002 made the tables with create_all and
    may have queued events in them: the upgrade keeps them and their rows."""
    engine = open_engine(f"sqlite:///{tmp_path / 'pbx.db'}")
    Base.metadata.create_all(engine)
    _queue(engine, 2)
    schema.upgrade(engine)
    assert schema.current(engine) == schema.head()
    assert len(OutboxStore(engine).deliveries()) == 2


def test_the_pbx_answering_is_not_an_answered_event(engine: Engine) -> None:
    """An IVR or a queue answers the caller first: call.answered waits for a person."""
    folder = CallRecordFolder()
    folder.set_webhooks([_hook("crm")])
    folder.add(_started("c1"))
    folder.add(CallAnswered("c1", T0 + timedelta(seconds=1), None, 1.0))
    _apply(engine, folder)
    assert set(_outbox(engine)) == {"c1:call.started"}
    folder.add(CallAnswered("c1", T0 + timedelta(seconds=30), "bob", 30.0))
    _apply(engine, folder)
    assert _outbox(engine)["c1:call.answered"]["call"]["answered_by"] == "bob"
