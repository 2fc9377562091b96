"""Finishing the records of calls that a killed PBX left open.

At start, the PBX reads back its journal (:mod:`pbx.journal`): the calls it had open and the
events it had not yet written. This module supplies the database's side: the rows of those calls
as last committed (:func:`load_calls`), and the end of a call cut off by the stop
(:func:`cut_off`), so that every call still gets its one final record (and its ``call.ended`` /
``call.missed`` events), with the recording that was on disk.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, select

from pbx.records import CallEnded

from .models import Call

_calls: Table = Call.__table__  # type: ignore[assignment]
_CHUNK = 500

CAUSE = "PBX restarted"
"""The hang-up cause of a call the PBX's stop cut off."""


def load_calls(engine: Engine, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The committed rows of the calls ``ids`` (those that have one), whole."""
    wanted = sorted(set(ids))
    out: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start:start + _CHUNK]
            for row in conn.execute(select(_calls).where(_calls.c.id.in_(chunk))).mappings():
                out[row["id"]] = dict(row)
    return out


def cut_off(row: dict[str, Any], at: datetime,
            recording: tuple[str, float] | None) -> CallEnded:
    """The end of an open call whose process stopped at about ``at`` (naive UTC).

    A call that was answered ends answered, with its talk time up to ``at`` and the recording
    found on disk; an inbound or internal call that nobody had answered is a missed call
    (someone should call back); an outbound one failed.
    """
    started: datetime = row["started_at"]
    answered: datetime | None = row["answered_at"]
    end = max(at, answered or started, started)
    if row["answered_by"] is not None and answered is not None:
        disposition = "answered"
    elif row["direction"] == "outbound":
        disposition = "failed"
    else:
        disposition = "no_answer"
    duration = (end - answered).total_seconds() \
        if answered is not None and disposition == "answered" else 0.0
    ring = row["ring_seconds"] if answered is not None and row["ring_seconds"] is not None \
        else (end - started).total_seconds()
    path, seconds = recording if recording is not None else (None, None)
    return CallEnded(
        call_id=row["id"], ended_at=end, disposition=disposition, hangup_cause=CAUSE,
        hangup_by="system", sip_code=None, duration=duration, ring_seconds=ring,
        recording_path=path, recording_seconds=seconds, keys=row["keys"],
    )
