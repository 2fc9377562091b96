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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, delete, func, or_, select, update
from sqlalchemy.orm import Session

from .contacts import normalise
from .models import AuditEntry, Call, PhoneNumber
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
                                  Call.to_number)
                           .where(matches, Call.legal_hold.is_(False))).all()
    paths = [str(r[1]) for r in rows if r[1]]
    stamp = _now(now)
    for call_id, path, from_number, to_number in rows:
        values: dict[str, object] = {"callback_number": None}
        if from_number in forms:
            values.update(from_number=ERASED, from_name="")
        if to_number in forms:
            values["to_number"] = ERASED
        if path:
            values.update(recording_path=None, recording_state=ERASED,
                          recording_deleted_at=stamp)
        session.execute(update(Call).where(Call.id == call_id).values(**values))
    removed = session.execute(delete(PhoneNumber).where(PhoneNumber.number_e164 == e164))
    result = Erasure(e164, len(rows), len(paths), int(held),
                     int(removed.rowcount or 0))  # type: ignore[attr-defined]
    _audit(session, actor, "erase_number", e164, {
        "calls": result.calls, "recordings": result.recordings, "held": result.held,
        "phone_numbers": result.phone_numbers}, now)
    return result, paths


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
