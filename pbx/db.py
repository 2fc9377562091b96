"""The database: one SQLAlchemy engine and one writer thread that the event loop never waits on.

The call path and the registrar hand small jobs (functions of a Session) to :class:`WriteBehind`;
the thread applies whatever has queued up in one transaction, so a burst of REGISTERs costs one
commit, not one each (SQLite commits are fsyncs).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

Job = Callable[[Session], None]
#: How long a batch is kept and retried while the database is unavailable.
RETRY_FOR = 600.0


def open_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: object, _rec: object) -> None:
            cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
            # Wait for another connection's lock instead of failing at once (two processes
            # opening a new file together both switch it to WAL, which needs the lock).
            cur.execute("PRAGMA busy_timeout=10000")
            # WAL lets readers run while the writer thread commits; NORMAL sync is durable
            # across process crashes (the case that matters: kill -9), not power loss.
            for attempt in range(100):
                try:
                    cur.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    # Switching a new file to WAL can report "locked" at once, without the
                    # busy handler, while another process switches it: try again shortly.
                    if "locked" not in str(exc) or attempt == 99:
                        raise
                    time.sleep(0.05)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class WriteBehind:
    """A single writer thread applying queued jobs in batches."""

    def __init__(self, engine: Engine, max_batch: int = 2000) -> None:
        self._engine = engine
        self._q: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._max_batch = max_batch
        self._thread = threading.Thread(target=self._run, name="db-writer", daemon=True)
        self._idle = threading.Event()
        self._idle.set()
        self.failed_jobs = 0
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job; never blocks."""
        self._idle.clear()
        self._q.put(job)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait (from a thread, not the loop) until everything queued so far is committed (or
        given up)."""
        done = threading.Event()

        def marker(session: Session) -> None:
            # Set once the transaction is committed, not when this job runs inside it (the
            # jobs before it in the batch are not committed yet then).
            event.listen(session, "after_commit", lambda _s: done.set(), once=True)

        self.submit(marker)
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        self._q.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        stop = False
        while not stop:
            job = self._q.get()
            if job is None:
                break
            batch = [job]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._apply(batch)

    def _apply(self, batch: list[Job]) -> None:
        delay = 0.1
        waited = 0.0
        while True:
            try:
                with Session(self._engine) as s, s.begin():
                    for job in batch:
                        job(s)
                if waited:
                    logger.warning("database back after %.1f s; %d jobs written", waited,
                                   len(batch))
                return
            except (OperationalError, InterfaceError) as exc:
                if not _transient(exc):
                    logger.exception("database batch failed; retrying %d jobs one by one",
                                     len(batch))
                    break
                # The database is away (a PostgreSQL restart or fail-over, a locked SQLite
                # file): keep the batch and try again, rather than lose call records. Jobs
                # queue up meanwhile; after RETRY_FOR seconds the batch is given up.
                if waited >= RETRY_FOR:
                    logger.error("database unavailable for %.0f s; giving up %d jobs: %s",
                                 waited, len(batch), exc)
                    break
                if waited == 0.0:
                    logger.error("database unavailable, retrying: %s", exc)
                time.sleep(delay)
                waited += delay
                delay = min(delay * 2, 5.0)
            except Exception:
                # One bad job must not lose the others: retry them one by one.
                logger.exception("database batch failed; retrying %d jobs one by one",
                                 len(batch))
                break
        for job in batch:
            try:
                with Session(self._engine) as s, s.begin():
                    job(s)
            except Exception:
                self.failed_jobs += 1
                logger.exception("database job failed")


def _transient(exc: OperationalError | InterfaceError) -> bool:
    """Whether an error means the database is away for now (a lost or refused connection,
    a locked file), not that the statement itself is wrong (a missing table)."""
    if exc.connection_invalidated:
        return True
    text = str(exc.orig if exc.orig is not None else exc).lower()
    return any(word in text for word in (
        "locked", "connect", "server closed", "terminating connection", "shutting down",
        "the database system is", "timeout", "timed out", "broken pipe",
    ))


def insert_for(session: Session, table: Any) -> Any:
    """An INSERT of ``table`` (a Table or a model) that knows ``ON CONFLICT`` (upserts) in the
    dialect of ``session``'s database: PostgreSQL's, else SQLite's."""
    ins = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    return ins(table)
