"""Agent presence: each user is available, on do-not-disturb, or offline.

Users set it from their phone with feature codes (``features.available``, ``do_not_disturb``,
``offline``) and, later, through the API. It is kept in memory for the call path (one dict
look-up per ringing decision) and mirrored to the database (table ``presence``) through the
writer thread, so it survives a restart. A user never set is available.

What it means for calls: a direct call to a user on do-not-disturb gets 486 Busy Here, to an
offline user 480 Temporarily Unavailable; ring groups and queues skip both. A user with no
registered phone is unreachable whatever their presence says.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from sqlalchemy import Column, Float, MetaData, String, Table, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .db import insert_for

metadata = MetaData()

presence_table = Table(
    "presence",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("updated_at", Float, nullable=False),
)

Job = Callable[[Session], None]


class PresenceState(enum.StrEnum):
    AVAILABLE = "available"
    DO_NOT_DISTURB = "do_not_disturb"
    OFFLINE = "offline"


class Presence:
    """The presence of every user; writes go to the database through ``submit``."""

    def __init__(self, submit: Callable[[Job], None]) -> None:
        self._submit = submit
        self._states: dict[str, PresenceState] = {}

    def load(self, engine: Engine) -> int:
        """Read the stored states (at start); returns how many users are not available."""
        with engine.connect() as conn:
            for user_id, state in conn.execute(
                    select(presence_table.c.user_id, presence_table.c.state)):
                try:
                    value = PresenceState(state)
                except ValueError:
                    continue  # a state this version does not know: treat as never set
                if value is not PresenceState.AVAILABLE:
                    self._states[user_id] = value
        return len(self._states)

    def get(self, user_id: str) -> PresenceState:
        return self._states.get(user_id, PresenceState.AVAILABLE)

    def available(self, user_id: str) -> bool:
        return user_id not in self._states

    def set(self, user_id: str, state: PresenceState, wall_time: float) -> None:
        if state is PresenceState.AVAILABLE:
            self._states.pop(user_id, None)
        else:
            self._states[user_id] = state
        row = {"user_id": user_id, "state": state.value, "updated_at": wall_time}

        def job(session: Session) -> None:
            stmt = insert_for(session, presence_table).values(**row)
            session.execute(stmt.on_conflict_do_update(
                index_elements=["user_id"],
                set_={"state": stmt.excluded.state, "updated_at": stmt.excluded.updated_at}))

        self._submit(job)
