"""Registrations that survive a restart: the registrar's bindings mirrored into the database.

The registrar (:mod:`sip.registrar`) keeps bindings in memory; every change is queued to the
database writer thread, and at start the table is read back (expired rows are dropped).
Times are wall-clock seconds so that they mean the same after a restart.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from sip.registrar import Binding

from .db import insert_for

metadata = MetaData()

registrations = Table(
    "registrations",
    metadata,
    Column("aor", String(128), primary_key=True),
    Column("uri", String(512), primary_key=True),
    Column("expires_at", Float, nullable=False),
    Column("q", Float),
    Column("call_id", String(255), nullable=False),
    Column("cseq", Integer, nullable=False),
    Column("instance", String(255)),
    Column("reg_id", Integer),
    Column("source", String(255), nullable=False),
    Column("path", String(1024), nullable=False, default=""),
    Column("user_agent", String(255), nullable=False, default=""),
    Column("params", String(512), nullable=False, default=""),
    Column("updated_at", Float, nullable=False, default=0.0),
)


def _row(b: Binding) -> dict[str, object]:
    return {
        "aor": b.aor, "uri": b.uri, "expires_at": b.expires_at, "q": b.q,
        "call_id": b.call_id, "cseq": b.cseq, "instance": b.instance, "reg_id": b.reg_id,
        "source": b.source, "path": b.path, "user_agent": b.user_agent, "params": b.params,
        "updated_at": b.updated_at,
    }


class BindingWriter:
    """Collects binding changes and writes them in one batch per flush.

    A phone refreshing every minute, or a burst of thousands of registrations, must not cost a
    database statement each: changes to the same binding coalesce in memory, and :meth:`flush`
    (called about once a second) turns them into one executemany per kind. A crash loses at
    most the last second of refreshes, which the phones repeat anyway.
    """

    def __init__(self) -> None:
        self._dirty: dict[tuple[str, str], Binding] = {}
        self._gone: set[tuple[str, str]] = set()

    def record(self, changed: list[Binding], removed: list[Binding]) -> None:
        for b in removed:
            k = (b.aor, b.uri)
            self._dirty.pop(k, None)
            self._gone.add(k)
        for b in changed:
            k = (b.aor, b.uri)
            self._gone.discard(k)
            self._dirty[k] = b

    def __len__(self) -> int:
        return len(self._dirty) + len(self._gone)

    def flush(self) -> Callable[[Session], None] | None:
        """A writer job holding everything recorded so far, or None if nothing changed."""
        if not self._dirty and not self._gone:
            return None
        rows = [_row(b) for b in self._dirty.values()]
        gone = [{"a": aor, "u": uri} for aor, uri in self._gone]
        self._dirty = {}
        self._gone = set()

        def job(session: Session) -> None:
            if gone:
                session.execute(
                    delete(registrations).where(
                        registrations.c.aor == bindparam("a"), registrations.c.uri == bindparam("u")
                    ),
                    gone,
                )
            if rows:
                stmt = insert_for(session, registrations)
                cols = {c: stmt.excluded[c] for c in rows[0] if c not in ("aor", "uri")}
                session.execute(
                    stmt.on_conflict_do_update(index_elements=["aor", "uri"], set_=cols), rows
                )

        return job


def load_bindings(engine: Engine) -> list[Binding]:
    with engine.connect() as conn:
        rows = conn.execute(select(registrations)).mappings().all()
    return [
        Binding(
            aor=r["aor"], uri=r["uri"], expires_at=r["expires_at"], q=r["q"],
            call_id=r["call_id"], cseq=r["cseq"], instance=r["instance"], reg_id=r["reg_id"],
            source=r["source"], path=r["path"] or "", user_agent=r["user_agent"] or "",
            params=r["params"] or "", updated_at=r["updated_at"] or 0.0,
        )
        for r in rows
    ]
