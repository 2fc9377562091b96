"""The database writer keeps a batch while the database is away, instead of losing it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, Table, insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from pbx.db import WriteBehind, open_engine


def test_a_batch_survives_the_database_being_away_for_a_while(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'pbx.db'}")
    meta = MetaData()
    rows = Table("rows", meta, Column("n", Integer, primary_key=True))
    meta.create_all(engine)
    outages = [2]

    def job(session: Session) -> None:
        session.execute(insert(rows).values(n=1))
        if outages[0]:
            outages[0] -= 1
            raise OperationalError("INSERT", {}, Exception("server closed the connection"))

    db = WriteBehind(engine)
    db.submit(job)
    db.submit(lambda s: s.execute(insert(rows).values(n=2)))
    assert db.flush(timeout=10.0)
    db.close()
    with Session(engine) as s:
        assert sorted(s.scalars(select(rows.c.n))) == [1, 2]
    assert db.failed_jobs == 0 and outages == [0]
    engine.dispose()


def test_flush_returns_once_what_came_before_is_committed(tmp_path: Path) -> None:
    """The jobs before a flush may share a transaction with jobs after it: flush waits for
    that transaction's commit, not just for its turn inside it."""
    engine = open_engine(f"sqlite:///{tmp_path / 'pbx.db'}")
    meta = MetaData()
    rows = Table("rows", meta, Column("n", Integer, primary_key=True))
    meta.create_all(engine)
    db = WriteBehind(engine)
    gate = threading.Event()
    db.submit(lambda _s: gate.wait(5))  # the writer is busy: what follows is one batch
    time.sleep(0.1)  # (the writer has taken the gate's batch)
    db.submit(lambda s: s.execute(insert(rows).values(n=1)))
    flushed = threading.Event()
    waiter = threading.Thread(target=lambda: db.flush(10.0) and flushed.set())
    waiter.start()
    time.sleep(0.2)  # the flush's marker is queued
    db.submit(lambda _s: time.sleep(0.5))  # after the marker, in the same transaction
    gate.set()
    assert flushed.wait(10)
    with engine.connect() as conn:
        assert list(conn.execute(select(rows.c.n)).scalars()) == [1]
    waiter.join()
    db.close()
    engine.dispose()
