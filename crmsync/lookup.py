"""Who is calling: the CRM record behind a caller's number, and the agent who last spoke to it.

The queue's assignment rules ("offer the call to the caller's owner", "to the agent who took
their last call") and the screen pop ask these questions for every incoming call, so each answer
is one or two indexed queries: numbers are compared in E.164 through the index on
``phone_numbers.number_e164``, and past calls through the index on ``calls.from_number``.

The methods block on the database; the call path runs them in a worker thread
(``await asyncio.to_thread(lookup.match, number)``) and never on the event loop.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

import phonenumbers
from sqlalchemy import Engine, Select, Table, and_, bindparam, select

from .contacts import RecordKind, normalise
from .models import Call, Contact, Lead, PhoneNumber

__all__ = ["CallerLookup", "Match"]

_calls: Table = Call.__table__  # type: ignore[assignment]
_phones: Table = PhoneNumber.__table__  # type: ignore[assignment]
_KINDS: dict[str, RecordKind] = {"contact": "contact", "lead": "lead"}
_records: dict[RecordKind, Table] = {
    "contact": Contact.__table__,  # type: ignore[dict-item]
    "lead": Lead.__table__,  # type: ignore[dict-item]
}


@dataclass(frozen=True)
class Match:
    """The CRM record a caller's number belongs to."""

    kind: Literal["contact", "lead"]
    record_id: str
    name: str
    """First and last name; the company when the record has no name; else the number."""
    company: str
    owner: str | None
    """User id of the agent who owns the record, if anyone does."""


class CallerLookup:
    """Finds the record and the last agent of a calling number (synchronous; run in a thread).

    ``region`` is the ISO country code national numbers are dialled in (``JP``); ``order`` says
    which kinds of record are searched, first match wins (contacts before leads by default).
    """

    def __init__(
        self,
        engine: Engine,
        region: str,
        order: tuple[str, ...] = ("contact", "lead"),
    ) -> None:
        region = region.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {region!r}: use an ISO country code such as JP")
        self._engine = engine
        self._region = region
        self._country_code = phonenumbers.country_code_for_region(region)
        self.set_order(order)
        self._last_agent = (
            select(_calls.c.answered_by)
            .where(
                _calls.c.from_number.in_(bindparam("forms", expanding=True)),
                _calls.c.answered_at.is_not(None),
                _calls.c.answered_by.in_(bindparam("agents", expanding=True)),
            )
            .order_by(_calls.c.answered_at.desc())
            .limit(1)
        )

    @property
    def region(self) -> str:
        return self._region

    @property
    def order(self) -> tuple[RecordKind, ...]:
        return tuple(kind for kind, _query in self._searches)

    def set_order(self, order: tuple[str, ...]) -> None:
        """Search these kinds of record from now on (a reload); ``ValueError`` if bad."""
        kinds: list[RecordKind] = []
        for name in order:
            kind = _KINDS.get(name)
            if kind is None:
                raise ValueError(f"unknown record kind {name!r} in order: use contact and lead")
            if kind in kinds:
                raise ValueError(f"record kind {name!r} is listed twice in order")
            kinds.append(kind)
        if not kinds:
            raise ValueError("order must name at least one record kind (contact, lead)")
        # Replaced whole: a look-up running in a thread sees the old order or the new one.
        self._searches = tuple((kind, _record_query(kind)) for kind in kinds)

    def match(self, number: str) -> Match | None:
        """The record ``number`` belongs to, or None (unknown, or not a phone number at all).

        Kinds are searched in ``order``; within a kind, when several records share the number,
        the one updated most recently wins.
        """
        e164 = normalise(number, self._region)
        if e164 is None:
            return None
        with self._engine.connect() as conn:
            for kind, query in self._searches:
                row = conn.execute(query, {"number": e164}).first()
                if row is not None:
                    name = f"{row.first_name} {row.last_name}".strip() or row.company or e164
                    return Match(kind, row.id, name, row.company, row.owner)
        return None

    def last_agent(self, number: str, agents: Collection[str]) -> str | None:
        """Of ``agents``, the one who answered the latest answered call from ``number``.

        The calls table keeps the number as the caller sent it (E.164 from most trunks, but
        also without "+", or national), so every form the number may have been sent in is
        compared. None when none of ``agents`` ever answered that caller.
        """
        wanted = sorted(set(agents))
        forms = self._forms(number)
        if not wanted or not forms:
            return None
        with self._engine.connect() as conn:
            found = conn.execute(self._last_agent, {"forms": forms, "agents": wanted}).scalar()
        return found

    def _forms(self, number: str) -> list[str]:
        """The ways a caller may have sent ``number``: as given, E.164 with and without "+",
        and national when it is a number of our own country."""
        raw = number.strip()
        forms = {raw} if raw else set()
        e164 = normalise(raw, self._region)
        if e164 is not None:
            forms.update((e164, e164[1:]))
            parsed = phonenumbers.parse(e164)
            if parsed.country_code == self._country_code:
                national = phonenumbers.format_number(
                    parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
                forms.add("".join(ch for ch in national if ch.isdigit()))
        return sorted(forms)


def _record_query(kind: RecordKind) -> Select[tuple[str, str, str, str, str | None]]:
    table = _records[kind]
    return (
        select(table.c.id, table.c.first_name, table.c.last_name, table.c.company,
               table.c.owner)
        .join(_phones, and_(_phones.c.record_id == table.c.id, _phones.c.owner_kind == kind))
        .where(_phones.c.number_e164 == bindparam("number"))
        .order_by(table.c.updated_at.desc(), table.c.created_at.desc())
        .limit(1)
    )
