"""Registrations that survive a restart: the registrar's bindings mirrored into the database.

The registrar (:mod:`sip.registrar`) keeps bindings in memory; every change is queued to the
database writer thread, and at start the table is read back (expired rows are dropped).
Times are wall-clock seconds so that they mean the same after a restart.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from sip.registrar import Binding

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


def save_job(changed: list[Binding], removed: list[Binding]) -> object:
    """A writer job applying one REGISTER's changes."""
    rows = [_row(b) for b in changed]
    gone = [(b.aor, b.uri) for b in removed]

    def job(session: Session) -> None:
        for aor, uri in gone:
            session.execute(
                delete(registrations).where(
                    registrations.c.aor == aor, registrations.c.uri == uri
                )
            )
        if rows:
            dialect = session.get_bind().dialect.name
            ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
            stmt = ins(registrations).values(rows)
            cols = {c: stmt.excluded[c] for c in rows[0] if c not in ("aor", "uri")}
            session.execute(stmt.on_conflict_do_update(index_elements=["aor", "uri"], set_=cols))

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
