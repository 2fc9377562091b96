"""Recording governance in the CRM store: how much is recorded, retention, legal holds and
erasure by phone number, each change to a person's data written to the audit log.

Functions take a SQLAlchemy session and change rows only; they return the recording files to
delete, which the caller removes *after* the transaction commits (a crash in between leaves a
file nobody points to, never a row pointing to a missing file). :class:`Governance` runs them
in their own transactions (blocking: call it from a worker thread).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import phonenumbers
from phonenumbers import PhoneNumberFormat as PNF
from sqlalchemy import Engine, delete, func, or_, select, update
from sqlalchemy.orm import Session

from .contacts import normalise
from .models import (
    AuditEntry,
    Call,
    CallLegRecord,
    Contact,
    Lead,
    OutboxEvent,
    PhoneNumber,
    ScheduledCall,
)
from .queries import number_forms

__all__ = [
    "AuditView", "Erasure", "Governance", "GovernanceError", "delete_files", "erase_number",
    "expire_recordings", "recording_seconds", "set_legal_hold",
]

logger = logging.getLogger(__name__)

#: Rows one retention pass handles (the next pass goes on).
BATCH = 500
ERASED = "erased"


class GovernanceError(ValueError):
    """A request that cannot be carried out (unknown call, not a phone number)."""


@dataclass(frozen=True, slots=True)
class Erasure:
    """What an erasure by number did."""

    number: str
    calls: int
    """Call records anonymised."""
    recordings: int
    """Recordings deleted."""
    held: int
    """Calls left alone because they are under a legal hold."""
    phone_numbers: int
    """Contact and lead phone numbers removed."""
    events: int = 0
    """Stored webhook events of those calls whose payloads were scrubbed of the number."""
    scheduled_calls: int = 0
    """Scheduled calls with the number (anonymised; those still to come cancelled)."""


@dataclass(frozen=True, slots=True)
class AuditView:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, object]


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC).replace(tzinfo=None)


def recording_seconds(session: Session) -> float:
    """Seconds of recordings the store keeps now (the quota counts these)."""
    total = session.scalar(select(func.coalesce(func.sum(Call.recording_seconds), 0.0))
                           .where(Call.recording_path.is_not(None)))
    return float(total or 0.0)


def expire_recordings(session: Session, cutoff: datetime, now: datetime | None = None,
                      *, limit: int = BATCH) -> list[tuple[str, str, float]]:
    """Recordings of calls started before ``cutoff`` and not under a legal hold: their rows
    lose the recording (state ``expired``); returns (call id, path, seconds) to delete."""
    rows = session.execute(
        select(Call.id, Call.recording_path, Call.recording_seconds)
        .where(Call.recording_path.is_not(None), Call.started_at < cutoff,
               Call.legal_hold.is_(False))
        .order_by(Call.started_at).limit(limit)).all()
    if not rows:
        return []
    ids = [r[0] for r in rows]
    session.execute(update(Call).where(Call.id.in_(ids)).values(
        recording_path=None, recording_state="expired", recording_deleted_at=_now(now)))
    return [(r[0], str(r[1]), float(r[2] or 0.0)) for r in rows]


def set_legal_hold(session: Session, call_id: str, hold: bool, actor: str,
                   now: datetime | None = None) -> None:
    """Put a call under a legal hold (or lift it), with an audit entry."""
    found = session.execute(update(Call).where(Call.id == call_id).values(legal_hold=hold))
    if not found.rowcount:  # type: ignore[attr-defined]
        raise GovernanceError(f"no call {call_id!r}")
    _audit(session, actor, "legal_hold" if hold else "legal_hold_lifted", call_id, {}, now)


def erase_number(session: Session, number: str, region: str, actor: str,
                 now: datetime | None = None) -> tuple[Erasure, list[str]]:
    """Erase a person's number: their calls' recordings are deleted and the records
    anonymised (the number and name replaced), their contacts' and leads' numbers removed;
    calls under a legal hold are left alone. Returns what was done and the files to delete."""
    e164 = normalise(number, region)
    if e164 is None:
        raise GovernanceError(f"{number!r} is not a phone number")
    forms = number_forms(number, region)
    matches = or_(Call.from_number.in_(forms), Call.to_number.in_(forms),
                  Call.callback_number.in_(forms))
    held = session.scalar(select(func.count()).select_from(Call)
                          .where(matches, Call.legal_hold.is_(True))) or 0
    rows = session.execute(select(Call.id, Call.recording_path, Call.from_number,
                                  Call.to_number, Call.from_name, Call.subject,
                                  Call.description, Call.result)
                           .where(matches, Call.legal_hold.is_(False))).all()
    paths = [str(r[1]) for r in rows if r[1]]
    stamp = _now(now)
    # Every written form of the number, and the names callers from it gave, go from whatever
    # else holds them: stored webhook payloads, scheduled calls, names made from the number.
    numbers = set(forms) | {e164}
    names = {r[4] for r in rows if r[2] in forms and r[4] and len(r[4]) > 2}
    scrub = _scrubber(numbers, e164, region, names)
    events = _scrub_outbox(session, [r[0] for r in rows], scrub)
    scheduled = _erase_scheduled(session, e164, scrub, stamp)
    # Only the number itself: a contact's name is the CRM's, not something the call brought.
    _scrub_names(session, e164, lambda text: scrub(text, False))
    for call_id, path, from_number, to_number, _name, *texts in rows:
        values: dict[str, object] = {"callback_number": None}
        # What people wrote about the call may name the number or the caller.
        for column, text in zip(("subject", "description", "result"), texts, strict=True):
            if text and scrub(text, True) != text:
                values[column] = scrub(text, True)
        if from_number in forms:
            values.update(from_number=ERASED, from_name="")
        if to_number in forms:
            values["to_number"] = ERASED
        if path:
            values.update(recording_path=None, recording_state=ERASED,
                          recording_deleted_at=stamp)
        session.execute(update(Call).where(Call.id == call_id).values(**values))
    # The number dialled as a leg of anyone's call (a transfer or a callback to it).
    session.execute(update(CallLegRecord)
                    .where(CallLegRecord.number.in_(forms),
                           CallLegRecord.call_id.not_in(
                               select(Call.id).where(Call.legal_hold.is_(True))))
                    .values(number=ERASED))
    removed = session.execute(delete(PhoneNumber).where(PhoneNumber.number_e164 == e164))
    result = Erasure(e164, len(rows), len(paths), int(held),
                     int(removed.rowcount or 0),  # type: ignore[attr-defined]
                     events, scheduled)
    _audit(session, actor, "erase_number", e164, {
        "calls": result.calls, "recordings": result.recordings, "held": result.held,
        "phone_numbers": result.phone_numbers, "events": events,
        "scheduled_calls": scheduled}, now)
    return result, paths


_NAME_KEYS: Final = frozenset({"from_name", "subject", "description", "result", "name"})
"""Fields of stored events where a caller's name may be (elsewhere a name-like word, such as
a queue called "support", is left alone)."""


def _scrubber(numbers: set[str], e164: str, region: str,
              names: set[str]) -> Callable[[str, bool], str]:
    """A function replacing the number in a text with ``erased``: in the forms ``numbers``
    (not inside a longer number), and written any other way (``+81 90-1234-5678``, found by
    phonenumbers' matcher); and, when asked (``with_names``), the callers' ``names``."""
    digits = re.compile("(?<![0-9])(?:" + "|".join(
        re.escape(n) for n in sorted(numbers, key=len, reverse=True)) + ")(?![0-9])")
    named = re.compile("|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))) \
        if names else None

    def scrub(text: str, with_names: bool = True) -> str:
        text = digits.sub(ERASED, text)
        if with_names and named is not None:
            text = named.sub(ERASED, text)
        if not any(ch.isdigit() for ch in text):
            return text
        spans = [(m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(text, region)
                 if phonenumbers.format_number(m.number, PNF.E164) == e164]
        for start, end in reversed(spans):
            text = text[:start] + ERASED + text[end:]
        return text

    return scrub


def _scrub_json(value: Any, scrub: Callable[[str, bool], str], key: str = "") -> Any:
    if isinstance(value, str):
        return scrub(value, key in _NAME_KEYS)
    if isinstance(value, list):
        return [_scrub_json(v, scrub, key) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_json(v, scrub, k) for k, v in value.items()}
    return value


def _scrub_outbox(session: Session, call_ids: Sequence[str],
                  scrub: Callable[[str, bool], str]) -> int:
    """Scrub the stored events of the calls (delivered or waiting: a delivery still to go out
    then carries the anonymised call, and none kept for replay carries the number)."""
    changed = 0
    for start in range(0, len(call_ids), BATCH):
        chunk = list(call_ids[start:start + BATCH])
        for outbox_id, payload in session.execute(
                select(OutboxEvent.id, OutboxEvent.payload)
                .where(OutboxEvent.call_id.in_(chunk))).all():
            try:
                body = json.loads(payload)
            except ValueError:
                body = None
            fresh = json.dumps(_scrub_json(body, scrub), separators=(",", ":"),
                               ensure_ascii=False) if body is not None else scrub(payload, True)
            if fresh != payload:
                session.execute(update(OutboxEvent).where(OutboxEvent.id == outbox_id)
                                .values(payload=fresh))
                changed += 1
    return changed


def _erase_scheduled(session: Session, e164: str, scrub: Callable[[str, bool], str],
                     now: datetime) -> int:
    """Scheduled calls with the number: the number and its mentions go; one still to come is
    cancelled (nobody can call an erased number)."""
    found = session.scalars(select(ScheduledCall).where(ScheduledCall.number == e164)).all()
    for call in found:
        call.number = ERASED
        call.subject = scrub(call.subject, True)
        call.description = scrub(call.description, True)
        call.result = scrub(call.result, True)
        if call.status == "scheduled":
            call.status = "cancelled"
            call.result = "the number was erased"
        call.updated_at = now
    return len(found)


def _scrub_names(session: Session, e164: str, scrub: Callable[[str], str]) -> None:
    """Contacts and leads with the number whose names were made of it (a lead the PBX created
    for an unknown caller is named after the caller)."""
    for kind, model in (("contact", Contact), ("lead", Lead)):
        ids = select(PhoneNumber.record_id).where(PhoneNumber.owner_kind == kind,
                                                  PhoneNumber.number_e164 == e164)
        for record in session.scalars(select(model).where(model.id.in_(ids))).all():
            for name in ("first_name", "last_name", "company"):
                value = getattr(record, name)
                if value and scrub(value) != value:
                    setattr(record, name, scrub(value))


def _audit(session: Session, actor: str, action: str, target: str,
           details: dict[str, object], now: datetime | None) -> None:
    session.add(AuditEntry(at=_now(now), actor=actor, action=action, target=target,
                           details=json.dumps(details, sort_keys=True)))


def delete_files(paths: Sequence[str], directory: Path) -> int:
    """Delete recording files (only inside ``directory``); returns how many went."""
    gone = 0
    root = directory.resolve()
    for text in paths:
        path = Path(text).resolve()
        if root not in path.parents:
            logger.warning("recording %s is outside %s: not deleted", path, root)
            continue
        try:
            path.unlink()
            gone += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("recording %s could not be deleted: %s", path, exc)
    return gone


class Governance:
    """The functions above, each in its own transaction (blocking)."""

    def __init__(self, engine: Engine, region: str, recordings: Path) -> None:
        self._engine = engine
        self._region = region
        self._recordings = recordings

    def recording_seconds(self) -> float:
        with Session(self._engine) as session:
            return recording_seconds(session)

    def expire(self, cutoff: datetime) -> float:
        """One retention pass (all due recordings, in batches); returns seconds freed."""
        freed = 0.0
        while True:
            with Session(self._engine) as session, session.begin():
                found = expire_recordings(session, cutoff)
            if not found:
                return freed
            delete_files([p for _, p, _ in found], self._recordings)
            freed += sum(s for _, _, s in found)
            logger.info("retention: %d recordings older than %s deleted", len(found),
                        cutoff.date())

    def erase(self, number: str, actor: str) -> Erasure:
        with Session(self._engine) as session, session.begin():
            result, paths = erase_number(session, number, self._region, actor)
        delete_files(paths, self._recordings)
        logger.info("erasure of %s by %s: %d calls anonymised, %d recordings deleted, "
                    "%d held", result.number, actor, result.calls, result.recordings,
                    result.held)
        return result

    def hold(self, call_id: str, hold: bool, actor: str) -> None:
        with Session(self._engine) as session, session.begin():
            set_legal_hold(session, call_id, hold, actor)

    def audit(self, limit: int = 100) -> list[AuditView]:
        with Session(self._engine) as session:
            rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())
                                   .limit(limit)).all()
            return [AuditView(r.id, r.at, r.actor, r.action, r.target,
                              json.loads(r.details or "{}")) for r in rows]
