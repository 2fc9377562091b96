"""Call-record events cut to the lengths of the columns they are stored in.

A name or number in a call-record event comes from the network (a trunk's From header, a phone's
display name): it can be longer than its column. SQLite stores it anyway; PostgreSQL refuses
the statement, and with it the whole batch of records it was folded into. So each event's text
is cut to its column's length before it is folded (:func:`fit`), which costs a ``len`` per text
field.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final, TypeVar

from sqlalchemy import String, Table

from pbx.records import (
    CallAnswered,
    CallEnded,
    CallLeg,
    CallQueued,
    CallStarted,
    CallTransferred,
    RecordingSkipped,
)

from .models import Call, CallLegRecord

E = TypeVar("E")

_RENAMED: Final = {
    # Event field -> column, where the names differ.
    (CallLeg, "user"): "user_id",
    (CallLeg, "leg_id"): "id",
    (CallQueued, "waited"): "queue_wait",
    (CallQueued, "rule"): "queue_rule",
    (CallQueued, "result"): "queue_result",
    (CallQueued, "agent"): "answered_by",
    (CallTransferred, "to_user"): "transferred_to",
    (RecordingSkipped, "reason"): "recording_state",
}


def _lengths(table: Table) -> dict[str, int]:
    return {c.name: c.type.length for c in table.columns
            if isinstance(c.type, String) and c.type.length is not None}


def _limits() -> dict[type[Any], dict[str, int]]:
    calls: Table = Call.__table__  # type: ignore[assignment]
    legs: Table = CallLegRecord.__table__  # type: ignore[assignment]
    out: dict[type[Any], dict[str, int]] = {}
    for cls in (CallStarted, CallAnswered, CallEnded, CallTransferred, CallQueued,
                RecordingSkipped, CallLeg):
        lengths = _lengths(legs if cls is CallLeg else calls)
        if cls is not CallLeg:
            lengths["call_id"] = lengths["id"]
        limits = {}
        for f in dataclasses.fields(cls):
            column = _RENAMED.get((cls, f.name), f.name)
            if column in lengths:
                limits[f.name] = lengths[column]
        out[cls] = limits
    return out


_LIMITS: Final = _limits()
_TEXTS: Final = {
    cls: tuple(f.name for f in dataclasses.fields(cls) if "str" in str(f.type))
    for cls in _LIMITS
}


def fit(event: E) -> E:
    """``event``, or a copy with every text made storable: cut to its column's length, bytes
    that were not UTF-8 read as Latin-1 (a display name from an old carrier, kept by the SIP
    parser as surrogates: no database takes those), NULs dropped (PostgreSQL refuses them)."""
    limits = _LIMITS.get(type(event), {})
    changes: dict[str, str] | None = None
    for name in _TEXTS.get(type(event), ()):
        value = getattr(event, name)
        if not isinstance(value, str):
            continue
        fixed = value if value.isascii() and "\x00" not in value else clean(value)
        length = limits.get(name)
        if length is not None and len(fixed) > length:
            fixed = fixed[:length]
        if fixed is not value:
            if changes is None:
                changes = {}
            changes[name] = fixed
    if changes is None:
        return event
    return dataclasses.replace(event, **changes)  # type: ignore[type-var]


def clean(text: str) -> str:
    """``text`` without NULs, its undecodable bytes (surrogate escapes) read as UTF-8 if they
    are, else as Latin-1."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    return text.replace("\x00", "")
