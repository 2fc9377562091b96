"""The PBX's users in the CRM store: written from the config at start and at each reload.

A user the config no longer has stays, marked inactive: the calls they owned or answered still
name them. One upsert per sync (a few hundred rows at most), in the writer thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, update
from sqlalchemy.orm import Session

from .models import UserRecord, insert_for

_users: Table = UserRecord.__table__  # type: ignore[assignment]
_FIELDS = ("extension", "name", "role", "department", "caller_id")


def sync_users(session: Session, users: Sequence[Mapping[str, Any]], now: datetime) -> None:
    """Make the ``users`` table say what ``users`` (dicts with ``id`` and the fields of
    :class:`~crmsync.models.UserRecord`) say; the others become inactive."""
    rows = [{"id": u["id"], **{f: u.get(f) for f in _FIELDS}, "active": True,
             "updated_at": now} for u in users]
    for row in rows:
        row["name"] = row["name"] or ""
        row["role"] = row["role"] or "agent"
    if rows:
        stmt = insert_for(session, _users)
        session.execute(stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={c: stmt.excluded[c] for c in (*_FIELDS, "active", "updated_at")}), rows)
    session.execute(update(_users)
                    .where(_users.c.id.not_in([r["id"] for r in rows]), _users.c.active)
                    .values(active=False, updated_at=now))
