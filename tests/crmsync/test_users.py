"""The users table follows the config: added, changed, and kept inactive once removed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from crmsync.models import UserRecord
from crmsync.users import sync_users

T0 = datetime(2026, 11, 21, 9, 0, 0)
T1 = datetime(2026, 11, 21, 10, 0, 0)





def _table(engine: Engine) -> dict[str, tuple[object, ...]]:
    with Session(engine) as s:
        return {u.id: (u.extension, u.name, u.role, u.department, u.active, u.updated_at)
                for u in s.scalars(select(UserRecord))}


def test_users_follow_the_config(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        sync_users(s, [
            {"id": "alice", "extension": "101", "name": "Alice", "role": "agent",
             "department": "sales", "caller_id": None},
            {"id": "bob", "extension": "102", "name": "", "role": None, "department": None,
             "caller_id": "+81312345678"},
        ], T0)
    assert _table(engine) == {
        "alice": ("101", "Alice", "agent", "sales", True, T0),
        "bob": ("102", "", "agent", None, True, T0),
    }
    with Session(engine) as s, s.begin():
        sync_users(s, [{"id": "alice", "extension": "111", "name": "Alice Abe",
                        "role": "supervisor", "department": "sales", "caller_id": None}], T1)
    assert _table(engine) == {
        "alice": ("111", "Alice Abe", "supervisor", "sales", True, T1),
        "bob": ("102", "", "agent", None, False, T1),  # kept: old calls name bob
    }
    with Session(engine) as s, s.begin():
        sync_users(s, [], T1)
    assert not any(row[4] for row in _table(engine).values())
