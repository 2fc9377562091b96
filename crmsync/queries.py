"""Reading the CRM store: calls by filter, page by page or all of them in batches, one call
with its legs; contacts and leads by number, name or id; their creation and update, and the
annotation of calls, each in one transaction.

Every function blocks on the database. The HTTP API reaches them through :class:`CrmQueries`
(an engine and a region), in worker threads, never on the event loop.

Numbers are searched the way :mod:`crmsync.lookup` matches callers: ``phone_numbers`` through
its index on ``number_e164``; ``calls`` through its indexes on ``from_number`` and ``to_number``
with every form a trunk or a phone may have sent the number in (E.164 with and without ``+``,
with an international prefix, national), so ``03-1234-5678``, ``+81312345678`` and
``0081312345678`` find the same calls. Bad input raises :class:`~crmsync.contacts.ContactError`
(a ``ValueError``) and an unknown id :class:`~crmsync.contacts.RecordNotFound` (a
``LookupError``), with messages fit to show the person who asked.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import phonenumbers
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    RowMapping,
    Select,
    Table,
    and_,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Session

from . import callstore
from .callfields import CALL_TYPES, STATUSES, CallStatus, CallType
from .contacts import (
    ContactError,
    RecordKind,
    RecordNotFound,
    create_contact,
    create_lead,
    normalise,
    update_contact,
    update_lead,
)
from .models import Call, PhoneNumber
from .outbox import WebhookSpec, enqueue, subscribers_of, utcnow
from .recordqueries import (
    MAX_PAGE,
    Phone,
    Record,
    get_record,
    record_arguments,
    search,
    search_records,
)

__all__ = [
    "MAX_PAGE", "CallCriteria", "CallDetail", "CallFilter", "CallKind", "CallOrder",
    "CallPage", "CrmQueries", "Leg", "Phone", "Record", "call_conditions", "get_call",
    "get_record", "iter_calls", "list_calls", "number_forms", "search_records",
]

CallKind = Literal["inbound", "outbound", "internal", "missed"]
CallOrder = Literal["newest", "oldest"]


_calls: Table = Call.__table__  # type: ignore[assignment]
_phones: Table = PhoneNumber.__table__  # type: ignore[assignment]
_DIALLED = re.compile(r"\+?[0-9 ()./-]{1,40}")
_SEPARATORS = re.compile(r"[ ()./-]")

# The rule of the call.missed webhook event (crmsync.callfields.is_missed): inbound or
# internal, nobody answered, and either it rang out or the caller gave up, or a queue caller
# the PBX answered to wait never reached an agent.
_MISSED = and_(
    _calls.c.direction != "outbound",
    _calls.c.answered_by.is_(None),
    or_(
        _calls.c.disposition.in_(("no_answer", "cancelled")),
        and_(_calls.c.ended_at.is_not(None), _calls.c.queue.is_not(None),
             or_(_calls.c.queue_result.is_(None), _calls.c.queue_result != "answered")),
    ),
)
# What a call looks like outside the store: the file path stays inside (the API serves the
# file itself), and whether it was missed is worked out once, here.
_CALL_COLUMNS = (
    *(column for column in _calls.c if column.name != "recording_path"),
    _calls.c.recording_path.is_not(None).label("has_recording"),
    _MISSED.label("missed"),
)


class CallCriteria(Protocol):
    """What calls to find; every criterion given must hold (see :class:`CallFilter`)."""

    @property
    def kind(self) -> str | None: ...
    @property
    def agent(self) -> str | None: ...
    @property
    def number(self) -> str | None: ...
    @property
    def started_from(self) -> datetime | None: ...
    @property
    def started_to(self) -> datetime | None: ...
    @property
    def min_duration(self) -> float | None: ...
    @property
    def max_duration(self) -> float | None: ...
    @property
    def queue(self) -> str | None: ...
    @property
    def call_type(self) -> str | None: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def status(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Calls to find; None means any."""

    kind: CallKind | None = None
    """inbound, outbound, internal, or missed (as the ``call.missed`` webhook event counts)."""
    agent: str | None = None
    """A user who answered, was rung, or placed the call."""
    number: str | None = None
    """The other party's number (calling or called) in any form, or an extension."""
    started_from: datetime | None = None
    """Started at or after (naive times are UTC)."""
    started_to: datetime | None = None
    """Started before (naive times are UTC)."""
    min_duration: float | None = None
    """Talk time of at least this many seconds (calls in progress have none yet)."""
    max_duration: float | None = None
    queue: str | None = None
    """The queue the caller waited in last."""
    call_type: CallType | None = None
    """The record's type: inbound, outbound, missed or internal (an inbound call nobody
    answered is missed, not inbound)."""
    owner: str | None = None
    """The user the call belongs to."""
    status: CallStatus | None = None
    """in_progress or completed."""


@dataclass(frozen=True, slots=True)
class CallPage:
    """One page of calls; each item maps the ``calls`` columns (without ``recording_path``)
    plus ``has_recording``, ``missed``, ``from_e164`` and ``to_e164`` (None for what is not a
    phone number, such as an extension), and ``who`` (``{"kind", "id", "name"}`` of the linked
    contact or lead, or None) with ``who_name``."""

    items: tuple[dict[str, Any], ...]
    next_cursor: str | None
    """Pass it back for the next page; None on the last one."""
    total: int | None
    """Calls matching the filter on every page, when counting was asked for."""


@dataclass(frozen=True, slots=True)
class Leg:
    """One leg of a call: a phone or number it was offered to (a row of ``call_legs``), or,
    for a record written before the PBX kept legs, a summary of the record: the caller's leg
    into the PBX, the leg out to the phone that answered (or was rung), and the leg to whom
    the call was transferred (those have no ``id`` nor ``kind``)."""

    role: Literal["caller", "callee", "transfer"]
    number: str | None
    name: str
    user: str | None
    answered_at: datetime | None
    ended_at: datetime | None
    id: str | None = None
    kind: str | None = None
    """ring, queue, transfer, callback or outside."""
    started_at: datetime | None = None
    result: str | None = None
    """answered, no_answer, busy, rejected, cancelled, elsewhere or failed."""
    sip_code: int | None = None
    queue: str | None = None


@dataclass(frozen=True, slots=True)
class CallDetail:
    """One call: its row (as in :class:`CallPage`), its legs, the contacts and leads of the
    outside party's number, and where its recording file was written."""

    call: dict[str, Any]
    legs: tuple[Leg, ...]
    records: tuple[Record, ...]
    recording_path: str | None

    @property
    def participants(self) -> frozenset[str]:
        """The users who placed, were rung for, answered or were transferred the call."""
        return frozenset(self.call[name] for name in
                         ("caller_user", "callee_user", "answered_by", "transferred_to")
                         if self.call[name])


def number_forms(number: str, region: str) -> list[str]:
    """Every form ``number`` may be stored in in ``calls``: as given, without separators, E.164
    with and without ``+``, with ``00`` or the region's international prefix, and national
    for numbers of the region. Short numbers (extensions) match as given only."""
    text = number.strip()
    if not _DIALLED.fullmatch(text) or not any(ch.isdigit() for ch in text):
        raise ContactError(f"{number!r} is not a phone number or an extension", number)
    forms = {text, _SEPARATORS.sub("", text)}
    e164 = normalise(text, region)
    if e164 is not None:
        forms.update((e164, e164[1:], "00" + e164[1:]))
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region.upper())
        prefix = meta and (meta.preferred_international_prefix or meta.international_prefix)
        if prefix and prefix.isdigit():
            forms.add(prefix + e164[1:])
        parsed = phonenumbers.parse(e164)
        if parsed.country_code == phonenumbers.country_code_for_region(region.upper()):
            national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
            forms.add("".join(ch for ch in national if ch.isdigit()))
    return sorted(forms)


def call_conditions(flt: CallCriteria, region: str) -> list[ColumnElement[bool]]:
    """The WHERE clauses of ``flt`` (raises :class:`ContactError` on a bad number or kind)."""
    c = _calls.c
    out: list[ColumnElement[bool]] = []
    if flt.kind == "missed":
        out.append(_MISSED)
    elif flt.kind in ("inbound", "outbound", "internal"):
        out.append(c.direction == flt.kind)
    elif flt.kind is not None:
        raise ContactError(f"unknown call type {flt.kind!r}: use inbound, outbound, internal "
                           "or missed")
    if flt.agent is not None:
        out.append(or_(c.answered_by == flt.agent, c.callee_user == flt.agent,
                       c.caller_user == flt.agent))
    if flt.number is not None:
        forms = number_forms(flt.number, region)
        out.append(or_(c.from_number.in_(forms), c.to_number.in_(forms)))
    if flt.queue is not None:
        out.append(c.queue == flt.queue)
    if flt.call_type is not None:
        if flt.call_type not in CALL_TYPES:
            raise ContactError(f"unknown call_type {flt.call_type!r}: use "
                               f"{', '.join(CALL_TYPES)}")
        out.append(c.call_type == flt.call_type)
    if flt.owner is not None:
        out.append(c.owner == flt.owner)
    if flt.status is not None:
        if flt.status not in STATUSES:
            raise ContactError(f"unknown status {flt.status!r}: use {', '.join(STATUSES)}")
        out.append(c.status == flt.status)
    if flt.started_from is not None:
        out.append(c.started_at >= _utc(flt.started_from))
    if flt.started_to is not None:
        out.append(c.started_at < _utc(flt.started_to))
    if flt.min_duration is not None:
        out.append(c.duration >= flt.min_duration)
    if flt.max_duration is not None:
        out.append(c.duration <= flt.max_duration)
    return out


def list_calls(
    session: Session,
    flt: CallCriteria,
    *,
    region: str,
    limit: int = 50,
    cursor: str | None = None,
    order: CallOrder = "newest",
    count: bool = False,
) -> CallPage:
    """A page of the calls matching ``flt``, newest (or oldest) first.

    Pages are cut by keyset (start time, then id), so a page costs the same however deep it
    is, and calls written meanwhile neither repeat nor shift a page. ``count`` adds the number
    of matching calls (one more query).
    """
    if not 1 <= limit <= MAX_PAGE:
        raise ContactError(f"limit must be 1 to {MAX_PAGE}, not {limit}")
    conditions = call_conditions(flt, region)
    stmt = _ordered(select(*_CALL_COLUMNS).where(*conditions), order)
    if cursor is not None:
        stmt = stmt.where(_after(order, *_decode_cursor(cursor, order)))
    rows = _calls_out(session.execute(stmt.limit(limit + 1)).mappings(), region)
    next_cursor = None
    if len(rows) > limit:
        del rows[limit:]
        next_cursor = _encode_cursor(order, rows[-1]["started_at"], rows[-1]["id"])
    _with_who(session, rows)
    total = None
    if count:
        total = session.execute(
            select(func.count()).select_from(_calls).where(*conditions)).scalar_one()
    return CallPage(tuple(rows), next_cursor, total)


def iter_calls(
    engine: Engine, flt: CallCriteria, *, region: str, order: CallOrder = "newest",
    batch: int = 1000,
) -> Generator[list[dict[str, Any]], None, None]:
    """Every call matching ``flt``, in batches of ``batch`` rows (as :class:`CallPage` items).

    Each batch is its own short query (keyset, as :func:`list_calls`), not one cursor held
    open for the whole walk: an export read slowly by its client then holds no transaction,
    which would stop SQLite from checkpointing its WAL and PostgreSQL from vacuuming. The
    filter is checked at once; the database is read as the batches are taken.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    return _batches(engine, call_conditions(flt, region), region, order, batch)


def _batches(engine: Engine, conditions: list[ColumnElement[bool]], region: str,
             order: CallOrder, batch: int) -> Generator[list[dict[str, Any]], None, None]:
    after: tuple[datetime, str] | None = None
    while True:  # ends: every batch starts strictly after the last row of the one before
        stmt = _ordered(select(*_CALL_COLUMNS).where(*conditions), order)
        if after is not None:
            stmt = stmt.where(_after(order, *after))
        with engine.connect() as conn:
            rows = _calls_out(conn.execute(stmt.limit(batch)).mappings(), region)
            _with_who(conn, rows)
        if rows:
            yield rows
        if len(rows) < batch:
            return
        after = (rows[-1]["started_at"], rows[-1]["id"])


def get_call(session: Session, call_id: str, *, region: str) -> CallDetail:
    """The call with its legs (those kept in ``call_legs``, or for an older record, a summary
    of it) and the records of the outside party's number (contacts first).

    Raises :class:`RecordNotFound` for an unknown id.
    """
    found = session.execute(
        select(*_CALL_COLUMNS, _calls.c.recording_path).where(_calls.c.id == call_id)
    ).mappings().first()
    if found is None:
        raise RecordNotFound(f"no call with id {call_id!r}")
    (call,) = _calls_out([found], region)
    _with_who(session, [call])
    path = call.pop("recording_path")
    outside = {"inbound": call["from_number"], "outbound": call["to_number"]}.get(
        call["direction"])
    records: list[Record] = []
    e164 = normalise(outside, region) if outside else None
    if e164 is not None:
        for kind in ("contact", "lead"):
            records += search(session, kind, e164=e164, q=None, limit=10)
    stored = callstore.read_legs(session, [call_id]).get(call_id)
    legs = tuple(_stored_leg(leg) for leg in stored) if stored else _legs(call)
    return CallDetail(call, legs, tuple(records), path)


def _calls_out(rows: Iterable[RowMapping], region: str) -> list[dict[str, Any]]:
    """Rows as dicts, with the numbers in E.164 beside the forms they were sent in."""
    out = []
    for row in rows:
        call = dict(row)
        call["from_e164"] = _e164(call["from_number"], region)
        call["to_e164"] = _e164(call["to_number"], region)
        out.append(call)
    return out


def _with_who(conn: Session | Connection, rows: list[dict[str, Any]]) -> None:
    """Give each row ``who`` (the linked record's kind, id and name) and ``who_name``."""
    refs = {(row["who_kind"], row["who_id"]) for row in rows
            if row["who_kind"] is not None and row["who_id"] is not None}
    names = callstore.record_names(conn, refs) if refs else {}
    for row in rows:
        ref = (row["who_kind"], row["who_id"])
        name = names.get(ref)
        row["who"] = {"kind": ref[0], "id": ref[1], "name": name} if ref in refs else None
        row["who_name"] = name


@functools.lru_cache(maxsize=8192)
def _e164(number: str, region: str) -> str | None:
    # The same few numbers come back on page after page (and row after row of an export).
    return normalise(number, region)


def _stored_leg(leg: Mapping[str, Any]) -> Leg:
    return Leg("transfer" if leg["kind"] == "transfer" else "callee", leg["number"], "",
               leg["user_id"], leg["answered_at"], leg["ended_at"], leg["id"], leg["kind"],
               leg["started_at"], leg["result"], leg["sip_code"], leg["queue"])


def _legs(call: Mapping[str, Any]) -> tuple[Leg, ...]:
    legs = [
        Leg("caller", call["from_number"], call["from_name"], call["caller_user"],
            call["answered_at"], call["ended_at"]),
        Leg("callee", call["to_number"], "", call["answered_by"] or call["callee_user"],
            call["answered_at"], call["ended_at"]),
    ]
    if call["transferred_to"]:
        legs.append(Leg("transfer", None, "", call["transferred_to"], None, call["ended_at"]))
    return tuple(legs)


class CrmQueries:
    """The CRM store as the HTTP API sees it: the functions above bound to an engine and the
    region national numbers are dialled in (``JP``). Synchronous: run in worker threads.

    ``webhooks`` gives the configured webhooks (read at each annotation, so a reload applies
    at once): those subscribed to ``call.updated`` get one per annotation. ``on_outbox_commit``
    is called once such an event is committed (to wake the webhook worker).
    """

    def __init__(self, engine: Engine, region: str,
                 webhooks: Callable[[], Iterable[WebhookSpec]] = tuple,
                 on_outbox_commit: Callable[[], None] | None = None) -> None:
        region = region.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {region!r}: use an ISO country code such as JP")
        self._engine = engine
        self._region = region
        self._webhooks = webhooks
        self._on_outbox_commit = on_outbox_commit

    def list_calls(self, flt: CallCriteria, *, limit: int, cursor: str | None,
                   order: CallOrder, count: bool) -> CallPage:
        with Session(self._engine) as session:
            return list_calls(session, flt, region=self._region, limit=limit, cursor=cursor,
                              order=order, count=count)

    def get_call(self, call_id: str) -> CallDetail:
        with Session(self._engine) as session:
            return get_call(session, call_id, region=self._region)

    def annotate_call(self, call_id: str, changes: Mapping[str, object], *,
                      user: str | None, any_call: bool) -> CallDetail:
        """Write ``changes`` on the call (see :func:`crmsync.callstore.annotate`) and, if that
        changed it, a ``call.updated`` event for the webhooks that want it, in one
        transaction; returns the call as :meth:`get_call` does."""
        queued = False
        with Session(self._engine) as session, session.begin():
            row, legs, changed = callstore.annotate(session, call_id, changes, user=user,
                                                    any_call=any_call)
            subscribers = subscribers_of(self._webhooks()) if changed else {}
            if "call.updated" in subscribers:
                now = utcnow()
                queued = enqueue(session, [callstore.updated_event(row, legs, now)],
                                 subscribers, now) > 0
            detail = get_call(session, call_id, region=self._region)
        if queued and self._on_outbox_commit is not None:
            self._on_outbox_commit()
        return detail

    def iter_calls(self, flt: CallCriteria, *, order: CallOrder,
                   batch: int) -> Generator[list[dict[str, Any]], None, None]:
        return iter_calls(self._engine, flt, region=self._region, order=order, batch=batch)

    def search_records(self, kind: RecordKind, *, number: str | None, q: str | None,
                       limit: int) -> list[Record]:
        with Session(self._engine) as session:
            return search_records(session, kind, region=self._region, number=number, q=q,
                                  limit=limit)

    def get_record(self, kind: RecordKind, record_id: str) -> Record:
        with Session(self._engine) as session:
            return get_record(session, kind, record_id)

    def create_record(self, kind: RecordKind, values: Mapping[str, object]) -> Record:
        """A new contact or lead from ``values`` (fields by name; ``phones`` as
        ``(number, label)`` pairs), committed with its numbers."""
        args = record_arguments(kind, values)
        create = create_contact if kind == "contact" else create_lead
        with Session(self._engine) as session, session.begin():
            record_id = create(session, **{"first_name": "", **args}, region=self._region)
            return get_record(session, kind, record_id)

    def update_record(self, kind: RecordKind, record_id: str,
                      values: Mapping[str, object]) -> Record:
        """Change the fields in ``values`` (``phones`` replaces every number); committed."""
        args = record_arguments(kind, values)
        update = update_contact if kind == "contact" else update_lead
        with Session(self._engine) as session, session.begin():
            update(session, record_id, **args, region=self._region)
            return get_record(session, kind, record_id)


def _utc(value: datetime) -> datetime:
    """A naive UTC time, as the tables keep them (naive input is taken as UTC already)."""
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def _ordered(stmt: Select[Any], order: CallOrder) -> Select[Any]:
    if order == "newest":
        return stmt.order_by(_calls.c.started_at.desc(), _calls.c.id.desc())
    return stmt.order_by(_calls.c.started_at.asc(), _calls.c.id.asc())


def _after(order: CallOrder, started_at: datetime, call_id: str) -> ColumnElement[bool]:
    # Written as a range on started_at plus a tie-break, so the index on started_at serves it.
    c = _calls.c
    if order == "newest":
        return and_(c.started_at <= started_at, or_(c.started_at < started_at, c.id < call_id))
    return and_(c.started_at >= started_at, or_(c.started_at > started_at, c.id > call_id))


def _encode_cursor(order: CallOrder, started_at: datetime, call_id: str) -> str:
    raw = f"{order}|{started_at.isoformat()}|{call_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, order: CallOrder) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        made_for, at, call_id = raw.split("|", 2)
        started_at = datetime.fromisoformat(at)
    except ValueError:  # bad base64, UTF-8, fields or time
        raise ContactError("cursor is not one a page of calls gave out") from None
    if made_for != order:
        raise ContactError(f"cursor belongs to order={made_for}; ask with that order")
    return started_at, call_id
