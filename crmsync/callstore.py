"""The CRM side of call records in the database: links to contacts and leads, legs, changes
after a record is final, and annotations.

- :func:`find_links`: the contact or lead behind each of many numbers, in one query (the
  record writer links a whole batch of calls with it);
- :func:`read_legs` / :func:`upsert_legs`: the rows of ``call_legs``;
- :func:`apply_late`: a change that came after the record was written final (a queue's
  result, a leg): the row is updated and its ``revision`` goes up by one;
- :func:`annotate`: what a person writes on a call through the API (subject, purpose,
  result, description, cost, the record it is about), also a new revision.

A new revision is told to webhooks as ``call.updated`` (:func:`updated_event`): the full
current record with its legs, keyed by the revision. Everything here takes a session and
blocks; the caller owns the transaction.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, Table, bindparam, literal, select, union_all, update
from sqlalchemy.orm import Session

from . import callfields
from .contacts import RecordKind, RecordNotFound
from .models import Call, CallLegRecord, Contact, Lead, PhoneNumber, insert_for
from .outbox import PendingEvent
from .scheduled import TEXT_LENGTH, ScheduledError, check_text

__all__ = [
    "ANNOTATIONS", "PURPOSE_LENGTH", "CallEditError", "CallEditRefused", "Link", "annotate",
    "apply_late", "find_links", "leg_view", "read_legs", "record_names", "updated_event",
    "upsert_legs",
]

_calls: Table = Call.__table__  # type: ignore[assignment]
_legs: Table = CallLegRecord.__table__  # type: ignore[assignment]
_phones: Table = PhoneNumber.__table__  # type: ignore[assignment]
_records: dict[RecordKind, Table] = {
    "contact": Contact.__table__,  # type: ignore[dict-item]
    "lead": Lead.__table__,  # type: ignore[dict-item]
}
_by_name: dict[str, Table] = {kind: table for kind, table in _records.items()}
_KINDS: tuple[RecordKind, ...] = tuple(_records)
_CHUNK = 500  # bound parameters per IN (...)

ANNOTATIONS: Final = ("subject", "purpose", "result", "description", "cost", "who")
"""What :func:`annotate` may change."""
PURPOSE_LENGTH: Final = 64

Row = dict[str, Any]


class CallEditError(ValueError):
    """An annotation the call cannot take (too long, a record that does not exist...)."""


class CallEditRefused(PermissionError):
    """The one asking may not annotate this call (an agent, a call someone else owns)."""


@dataclass(frozen=True, slots=True)
class Link:
    """The contact or lead a call is about."""

    kind: RecordKind
    id: str
    name: str
    """First and last name, else the company ("" if it has neither)."""


# --- links ---------------------------------------------------------------------------------------


def _links_query() -> Any:
    selects = []
    for rank, (kind, table) in enumerate(_records.items()):
        selects.append(
            select(_phones.c.number_e164.label("number"), literal(rank).label("rank"),
                   table.c.id, table.c.first_name, table.c.last_name, table.c.company,
                   table.c.updated_at, table.c.created_at)
            .join(table, table.c.id == _phones.c.record_id)
            .where(_phones.c.owner_kind == kind,
                   _phones.c.number_e164.in_(bindparam("numbers", expanding=True)))
        )
    return union_all(*selects)


_LINKS: Final = _links_query()


def find_links(session: Session, numbers: Collection[str],
               order: Sequence[RecordKind] = ("contact", "lead")) -> dict[str, Link]:
    """For each E.164 number that has one, the record it belongs to: of the kinds in
    ``order``, the first that has one (``crm.lookup_order``), and of several of a kind, the one
    updated last (as :class:`crmsync.lookup.CallerLookup` chooses). One query (per 500
    numbers), through the index on ``number_e164``."""
    wanted = sorted(set(numbers))
    place = {_KINDS.index(kind): n for n, kind in enumerate(order)}
    best: dict[str, Any] = {}
    for start in range(0, len(wanted), _CHUNK):
        for row in session.execute(_LINKS, {"numbers": wanted[start:start + _CHUNK]}):
            if row.rank not in place:
                continue  # a kind the lookup order leaves out
            # The order's first kind; then the most recently updated (and created); the id
            # breaks ties.
            found = best.get(row.number)
            if found is None or (
                    (place[row.rank], found.updated_at, found.created_at, row.id)
                    < (place[found.rank], row.updated_at, row.created_at, found.id)):
                best[row.number] = row
    return {
        number: Link(_KINDS[row.rank], row.id,
                     callfields.record_name(row.first_name, row.last_name, row.company))
        for number, row in best.items()
    }


def record_names(session: Session | Connection,
                 refs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The names of the records ``(kind, id)`` that exist (one query per kind)."""
    by_kind: dict[str, set[str]] = {}
    for kind, record_id in refs:
        by_kind.setdefault(kind, set()).add(record_id)
    names: dict[tuple[str, str], str] = {}
    for kind, ids in by_kind.items():
        table = _by_name.get(kind)
        if table is None:
            continue
        wanted = sorted(ids)
        for start in range(0, len(wanted), _CHUNK):
            for row in session.execute(
                select(table.c.id, table.c.first_name, table.c.last_name, table.c.company)
                .where(table.c.id.in_(wanted[start:start + _CHUNK]))
            ):
                names[(kind, row.id)] = callfields.record_name(row.first_name, row.last_name,
                                                               row.company)
    return names


# --- legs ----------------------------------------------------------------------------------------


def leg_view(leg: Mapping[str, Any]) -> dict[str, Any]:
    """A ``call_legs`` row as webhooks and the API show it (``user`` for ``user_id``)."""
    return {"id": leg["id"], "kind": leg["kind"], "user": leg["user_id"],
            "number": leg["number"], "started_at": leg["started_at"],
            "answered_at": leg["answered_at"], "ended_at": leg["ended_at"],
            "result": leg["result"], "sip_code": leg["sip_code"], "queue": leg["queue"]}


def _leg_order(leg: Mapping[str, Any]) -> tuple[datetime, str]:
    return leg["started_at"], leg["id"]


def read_legs(session: Session, call_ids: Collection[str]) -> dict[str, list[Row]]:
    """The ``call_legs`` rows of each call, in the order they started (calls without legs are
    left out)."""
    out: dict[str, list[Row]] = {}
    wanted = sorted(set(call_ids))
    for start in range(0, len(wanted), _CHUNK):
        for row in session.execute(
            select(_legs).where(_legs.c.call_id.in_(wanted[start:start + _CHUNK]))
        ).mappings():
            out.setdefault(row["call_id"], []).append(dict(row))
    for legs in out.values():
        legs.sort(key=_leg_order)
    return out


def upsert_legs(session: Session, legs: Sequence[Mapping[str, Any]]) -> None:
    """Write ``legs`` (``call_legs`` rows, each with every column) in one statement; a leg
    already there is replaced."""
    if not legs:
        return
    stmt = insert_for(session, _legs)
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={c.name: stmt.excluded[c.name] for c in _legs.c if c.name != "id"},
    )
    session.execute(stmt, list(legs))


# --- new revisions -------------------------------------------------------------------------------


def updated_event(row: Mapping[str, Any], legs: Sequence[Mapping[str, Any]],
                  at: datetime) -> PendingEvent:
    """The ``call.updated`` event of the record ``row`` (as stored, with its revision)."""
    return PendingEvent("call.updated", row["id"], at, dict(row),
                        [leg_view(leg) for leg in legs], row["revision"])


def _locked(session: Session, call_id: str) -> Row | None:
    # FOR UPDATE (PostgreSQL): a concurrent change of the row waits, so each gets its own
    # revision and neither is lost. SQLite has one writer at a time anyway.
    found = session.execute(
        select(_calls).where(_calls.c.id == call_id).with_for_update()
    ).mappings().first()
    return dict(found) if found is not None else None


def _bump(session: Session, call_id: str, changes: Mapping[str, Any]) -> Row:
    return dict(session.execute(
        update(_calls).where(_calls.c.id == call_id)
        .values(**changes, revision=_calls.c.revision + 1)
        .returning(*_calls.c)
    ).mappings().one())


def _link_name(session: Session, kind: str | None, record_id: str | None) -> str | None:
    if kind is None or record_id is None:
        return None
    return record_names(session, [(kind, record_id)]).get((kind, record_id)) or None


def _auto_subject(session: Session, row: Mapping[str, Any]) -> bool:
    """Whether the stored subject is the one the PBX gave the record (nobody wrote one)."""
    if row["subject"] is None:
        return True
    name = _link_name(session, row["who_kind"], row["who_id"])
    return bool(row["subject"] == callfields.subject(row, name))


def apply_late(session: Session, call_id: str, fields: Mapping[str, Any],
               legs: Sequence[Mapping[str, Any]]) -> tuple[Row, list[Row]] | None:
    """Apply a change that came after the call's record was written final: ``fields`` of the
    row and ``legs`` (``call_legs`` rows; one still open ends with the call).

    The type, status and owner follow; so does the subject unless someone wrote it. If
    anything changed, the revision goes up by one and the new row and all its legs are
    returned; None if nothing changed (an event applied twice) or there is no such call.
    """
    old = _locked(session, call_id)
    if old is None:
        return None
    new = {**old, **fields}
    changes = {name: value for name, value in fields.items() if old[name] != value}
    derived = {"call_type": callfields.call_type(new), "status": callfields.call_status(new),
               "owner": callfields.call_owner(new)}
    changes.update({name: value for name, value in derived.items() if old[name] != value})
    if changes and new["ended_at"] is not None and _auto_subject(session, old):
        name = _link_name(session, old["who_kind"], old["who_id"])
        text = callfields.subject({**new, **changes}, name)
        if text != old["subject"]:
            changes["subject"] = text
    stored = {leg["id"]: leg for leg in read_legs(session, [call_id]).get(call_id, [])}
    changed_legs = []
    end = new["ended_at"]
    for leg in legs:
        leg = dict(leg)
        # An open leg ends with the call, unless it began after the end stored so far (a
        # queue's callback, after the caller hung up): that one ends with the callback's end.
        if leg["ended_at"] is None and end is not None and leg["started_at"] <= end:
            leg["ended_at"] = end
        if stored.get(leg["id"]) != leg:
            changed_legs.append(leg)
            stored[leg["id"]] = leg
    if "ended_at" in changes and end is not None:
        for leg in list(stored.values()):
            if leg["ended_at"] is None or leg["ended_at"] < leg["started_at"]:
                leg = {**leg, "ended_at": max(end, leg["started_at"])}
                changed_legs.append(leg)
                stored[leg["id"]] = leg
    if not changes and not changed_legs:
        return None
    upsert_legs(session, changed_legs)
    return _bump(session, call_id, changes), sorted(stored.values(), key=_leg_order)


# --- annotations ---------------------------------------------------------------------------------


def _text(value: object, what: str, limit: int, *, lines: bool) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise CallEditError(f"{what} must be text or null")
    try:
        return check_text(value, what, limit, lines=lines) or None
    except ScheduledError as exc:
        raise CallEditError(exc.reason) from None


def _cost(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CallEditError("cost must be a number or null")
    if not math.isfinite(value) or value < 0:
        raise CallEditError("cost must be a finite number of at least 0")
    return float(value)


def _who(session: Session, value: object) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    if (not isinstance(value, tuple) or len(value) != 2
            or not all(isinstance(part, str) for part in value)):
        raise CallEditError("who must be a (kind, id) pair or null")
    kind, record_id = value
    table = _by_name.get(kind)
    if table is None:
        raise CallEditError(f"who.kind must be contact or lead, not {kind!r}")
    if session.execute(select(table.c.id).where(table.c.id == record_id)).first() is None:
        raise CallEditError(f"no {kind} with id {record_id!r}")
    return kind, record_id


def annotate(session: Session, call_id: str, changes: Mapping[str, object], *,
             user: str | None, any_call: bool) -> tuple[Row, list[Row], bool]:
    """Write ``changes`` (names of :data:`ANNOTATIONS`) on the call ``call_id``.

    ``subject`` (1 to 255 characters; null gives back the PBX's own), ``purpose`` (64),
    ``result`` and ``description`` (4000, line breaks allowed), ``cost`` (a number of at least
    0) and ``who`` (a ``(kind, id)`` pair naming an existing contact or lead; null unlinks);
    empty text is null. When the record is linked to another one and its subject is the
    PBX's, the subject names the new record. Unless ``any_call``, only a call owned by
    ``user`` or by nobody may be annotated.

    Returns the row, its legs, and whether anything changed (then its revision went up by
    one). Raises :class:`CallEditError` for a bad value, :class:`CallEditRefused` for a call
    that is not the user's, and :class:`~crmsync.contacts.RecordNotFound` for an unknown id.
    """
    unknown = sorted(set(changes) - set(ANNOTATIONS))
    if unknown:
        raise CallEditError(f"a call has no field {unknown[0]!r} to annotate; "
                            f"use {', '.join(ANNOTATIONS)}")
    if not changes:
        raise CallEditError(f"nothing to change: give one of {', '.join(ANNOTATIONS)}")
    values: dict[str, Any] = {}
    for name, limit, lines in (("purpose", PURPOSE_LENGTH, False),
                               ("result", TEXT_LENGTH, True),
                               ("description", TEXT_LENGTH, True)):
        if name in changes:
            values[name] = _text(changes[name], name, limit, lines=lines)
    if "cost" in changes:
        values["cost"] = _cost(changes["cost"])
    subject: str | None = None
    if "subject" in changes:
        subject = _text(changes["subject"], "subject", callfields.SUBJECT_LENGTH, lines=False)
        if changes["subject"] is not None and subject is None:
            raise CallEditError("subject must not be empty (null gives back the PBX's own)")
    row = _locked(session, call_id)
    if row is None:
        raise RecordNotFound(f"no call with id {call_id!r}")
    if not any_call and row["owner"] not in (None, user):
        raise CallEditRefused(
            f"the call belongs to {row['owner']!r}: an agent's key may annotate the calls of "
            "its own user and calls nobody owns")
    if "who" in changes:
        values["who_kind"], values["who_id"] = _who(session, changes["who"])
    linked = (values.get("who_kind", row["who_kind"]), values.get("who_id", row["who_id"]))
    relinked = linked != (row["who_kind"], row["who_id"])
    if subject is not None:
        values["subject"] = subject
    elif ("subject" in changes or (relinked and _auto_subject(session, row))) \
            and row["ended_at"] is not None:
        values["subject"] = callfields.subject(row, _link_name(session, *linked))
    elif "subject" in changes:
        values["subject"] = None  # in progress: the PBX gives it its subject when it ends
    changed = {name: value for name, value in values.items() if row[name] != value}
    legs = read_legs(session, [call_id]).get(call_id, [])
    if not changed:
        return row, legs, False
    return _bump(session, call_id, changed), legs, True
