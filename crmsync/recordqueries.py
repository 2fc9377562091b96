"""Reading the CRM's contacts and leads: by number (any written form, through the E.164 index),
by name, company or email, or by id, each with its phone numbers. Blocking; the HTTP API calls
them through :class:`crmsync.queries.CrmQueries` in worker threads."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import RowMapping, Table, or_, select
from sqlalchemy.orm import Session

from .contacts import ContactError, RecordKind, RecordNotFound, normalise
from .models import Contact, Lead, PhoneNumber

__all__ = ["MAX_PAGE", "Phone", "Record", "get_record", "record_arguments", "search",
           "search_records"]

MAX_PAGE: Final = 500
"""The most calls or records one page may hold."""

_phones: Table = PhoneNumber.__table__  # type: ignore[assignment]
_records: dict[RecordKind, Table] = {
    "contact": Contact.__table__,  # type: ignore[dict-item]
    "lead": Lead.__table__,  # type: ignore[dict-item]
}
_LIKE_SPECIAL = re.compile(r"([\\%_])")


@dataclass(frozen=True, slots=True)
class Phone:
    number: str
    """As it was written (``03-1234-5678``)."""
    e164: str
    label: str


@dataclass(frozen=True, slots=True)
class Record:
    """A contact or a lead with its numbers (``status`` is None for a contact)."""

    kind: RecordKind
    id: str
    first_name: str
    last_name: str
    company: str
    email: str
    owner: str | None
    status: str | None
    created_at: datetime
    updated_at: datetime
    phones: tuple[Phone, ...]


def search_records(
    session: Session,
    kind: RecordKind,
    *,
    region: str,
    number: str | None = None,
    q: str | None = None,
    limit: int = 50,
) -> list[Record]:
    """Contacts or leads with ``number`` (any form; through the E.164 index) and/or whose name,
    company or email contains ``q`` (any case); the most recently updated first. With neither,
    the most recently updated records. Raises :class:`ContactError` for an invalid number."""
    if not 1 <= limit <= MAX_PAGE:
        raise ContactError(f"limit must be 1 to {MAX_PAGE}, not {limit}")
    e164 = None
    if number is not None:
        e164 = normalise(number, region)
        if e164 is None:
            raise ContactError(f"{number!r} is not a valid phone number in region "
                               f"{region.upper()}", number)
    return search(session, kind, e164=e164, q=q.strip() if q else None, limit=limit)


def search(session: Session, kind: RecordKind, *, e164: str | None, q: str | None,
            limit: int) -> list[Record]:
    table = _records[kind]
    stmt = select(table)
    if e164 is not None:
        stmt = stmt.where(table.c.id.in_(
            select(_phones.c.record_id).where(_phones.c.number_e164 == e164,
                                              _phones.c.owner_kind == kind)))
    if q:
        pattern = "%" + _LIKE_SPECIAL.sub(r"\\\1", q) + "%"
        t = table.c
        stmt = stmt.where(or_(*(
            column.ilike(pattern, escape="\\") for column in (
                t.first_name, t.last_name, t.company, t.email,
                t.first_name + " " + t.last_name, t.last_name + " " + t.first_name))))
    stmt = stmt.order_by(table.c.updated_at.desc(), table.c.id.desc()).limit(limit)
    return _with_phones(session, kind, list(session.execute(stmt).mappings()))


def get_record(session: Session, kind: RecordKind, record_id: str) -> Record:
    """The contact or lead ``record_id``; raises :class:`RecordNotFound` for an unknown id."""
    table = _records[kind]
    row = session.execute(select(table).where(table.c.id == record_id)).mappings().first()
    if row is None:
        raise RecordNotFound(f"no {kind} with id {record_id!r}")
    return _with_phones(session, kind, [row])[0]


def _with_phones(session: Session, kind: RecordKind,
                 rows: Sequence[RowMapping]) -> list[Record]:
    phones: dict[str, list[Phone]] = {row["id"]: [] for row in rows}
    if phones:
        # One query for the page, through ix_phone_numbers_record.
        for p in session.execute(
            select(_phones.c.record_id, _phones.c.raw, _phones.c.number_e164, _phones.c.label)
            .where(_phones.c.owner_kind == kind, _phones.c.record_id.in_(list(phones)))
            .order_by(_phones.c.number_e164)
        ):
            phones[p.record_id].append(Phone(p.raw or p.number_e164, p.number_e164, p.label))
    return [
        Record(kind, row["id"], row["first_name"], row["last_name"], row["company"],
               row["email"], row["owner"], row.get("status"), row["created_at"],
               row["updated_at"], tuple(phones[row["id"]]))
        for row in rows
    ]


def record_arguments(kind: RecordKind, values: Mapping[str, object]) -> dict[str, Any]:
    """``values`` checked against the fields a contact or lead has."""
    args: dict[str, Any] = {}
    for name, value in values.items():
        if name == "phones":
            if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not all(
                    isinstance(pair, tuple) and len(pair) == 2
                    and all(isinstance(part, str) for part in pair) for pair in value):
                raise ContactError("phones must be a list of (number, label) pairs")
            args[name] = list(value)
        elif name == "owner" and value is None:
            args[name] = None
        elif name in ("first_name", "last_name", "company", "email", "owner") or (
                name == "status" and kind == "lead"):
            if not isinstance(value, str):
                raise ContactError(f"{name} must be text")
            args[name] = value
        else:
            raise ContactError(f"a {kind} has no field {name!r}")
    return args
