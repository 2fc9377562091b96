"""Recording governance in the store: retention, legal holds, erasure by number, the audit
log; files are deleted only after the rows changed, and only inside the recordings folder."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from crmsync.contacts import create_contact, create_lead
from crmsync.governance import Governance, GovernanceError
from crmsync.models import Base, Call, CallLegRecord, Lead, OutboxEvent, PhoneNumber, ScheduledCall

NOW = datetime(2026, 11, 21, 12, 0, 0)


def _call(s: Session, folder: Path, *, started: datetime, from_number: str,
          to_number: str = "+81312345600", seconds: float = 30.0, held: bool = False) -> Call:
    cid = str(uuid.uuid4())
    path = folder / f"{cid}.wav"
    path.write_bytes(b"RIFF")
    row = Call(id=cid, sip_call_id=cid, direction="inbound", from_number=from_number,
               from_name="Someone", to_number=to_number, started_at=started,
               ended_at=started, disposition="answered", hangup_cause="", transfers=0,
               callback_attempts=0, recording_path=str(path), recording_seconds=seconds,
               legal_hold=held)
    s.add(row)
    return row


@pytest.fixture
def store(tmp_path: Path) -> tuple[Governance, Path, object]:
    engine = create_engine(f"sqlite:///{tmp_path / 'pbx.db'}")
    Base.metadata.create_all(engine)
    folder = tmp_path / "recordings"
    folder.mkdir()
    return Governance(engine, "JP", folder), folder, engine


def test_retention_deletes_old_recordings_but_keeps_held_ones(
        store: tuple[Governance, Path, object]) -> None:
    gov, folder, engine = store
    with Session(engine) as s, s.begin():  # type: ignore[call-overload]
        old = _call(s, folder, started=datetime(2026, 4, 1), from_number="+819011110001")
        kept = _call(s, folder, started=datetime(2026, 4, 2), from_number="+819011110002",
                     held=True)
        new = _call(s, folder, started=datetime(2026, 10, 1), from_number="+819011110003")
        ids = (old.id, kept.id, new.id)
    assert gov.recording_seconds() == 90.0
    assert gov.expire(datetime(2026, 5, 21)) == 30.0
    with Session(engine) as s:  # type: ignore[call-overload]
        rows = {c.id: c for c in s.scalars(select(Call))}
    assert rows[ids[0]].recording_path is None and rows[ids[0]].recording_state == "expired"
    assert not (folder / f"{ids[0]}.wav").exists()
    assert rows[ids[1]].recording_path is not None and (folder / f"{ids[1]}.wav").exists()
    assert rows[ids[2]].recording_path is not None
    assert gov.recording_seconds() == 60.0


def test_erasure_by_number_in_any_form(store: tuple[Governance, Path, object]) -> None:
    gov, folder, engine = store
    with Session(engine) as s, s.begin():  # type: ignore[call-overload]
        a = _call(s, folder, started=NOW, from_number="+819012345678")
        b = _call(s, folder, started=NOW, from_number="09012345678")
        held = _call(s, folder, started=NOW, from_number="+819012345678", held=True)
        other = _call(s, folder, started=NOW, from_number="+819099999999")
        create_contact(s, first_name="Ichiro", phones=[("090-1234-5678", "mobile")],
                       region="JP")
        ids = (a.id, b.id, held.id, other.id)
    result = gov.erase("090-1234-5678", "admin-key")
    assert (result.number, result.calls, result.recordings, result.held,
            result.phone_numbers) == ("+819012345678", 2, 2, 1, 1)
    with Session(engine) as s:  # type: ignore[call-overload]
        rows = {c.id: c for c in s.scalars(select(Call))}
        assert s.scalars(select(PhoneNumber)).all() == []
    for cid in ids[:2]:
        assert rows[cid].from_number == "erased" and rows[cid].from_name == ""
        assert rows[cid].recording_path is None and rows[cid].recording_state == "erased"
        assert not (folder / f"{cid}.wav").exists()
    assert rows[ids[2]].from_number == "+819012345678" and (folder / f"{ids[2]}.wav").exists()
    assert rows[ids[3]].recording_path is not None
    [entry] = gov.audit()
    assert (entry.actor, entry.action, entry.target) == ("admin-key", "erase_number",
                                                        "+819012345678")
    assert entry.details == {"calls": 2, "held": 1, "phone_numbers": 1, "recordings": 2,
                             "events": 0, "scheduled_calls": 0}
    with pytest.raises(GovernanceError):
        gov.erase("not a number", "admin-key")


def test_erasure_leaves_the_number_nowhere_else(store: tuple[Governance, Path, object]) -> None:
    """Stored webhook payloads, scheduled calls and a lead named after the number lose it too;
    a scheduled call to it is cancelled; other calls' events are left alone."""
    gov, folder, engine = store
    with Session(engine) as s, s.begin():  # type: ignore[call-overload]
        mine = _call(s, folder, started=NOW, from_number="+819012345678")
        mine.from_name = "Ichiro Tanaka"
        mine.subject = "Inbound call from Ichiro Tanaka"
        mine.description = "He asked us to call 090-1234-5678 after six"
        s.add(CallLegRecord(id=f"{mine.id}:1", call_id=mine.id, kind="callback", user_id=None,
                            number="09012345678", started_at=NOW, answered_at=None,
                            ended_at=NOW, result="no_answer"))
        other = _call(s, folder, started=NOW, from_number="+819099999999")
        for n, call in enumerate((mine, other)):
            payload = {"event": "call.ended", "call": {
                "id": call.id, "from_number": call.from_number, "from_name": call.from_name,
                "subject": f"Inbound call from {call.from_name} ({call.from_number})",
                # A longer number holding this one's digits, and a queue named like the
                # caller: neither is the person's.
                "description": "fax +8190123456789", "queue": "Ichiro Tanaka"},
                "legs": [{"number": "09012345678"}]}
            s.add(OutboxEvent(event="call.ended", call_id=call.id, idempotency_key=f"k{n}",
                              payload=json.dumps(payload), created_at=NOW))
        for status in ("scheduled", "completed"):
            s.add(ScheduledCall(id=str(uuid.uuid4()), subject="Call back +81 90-1234-5678",
                                direction="outbound", number="+819012345678", owner="alice",
                                start_at=NOW, status=status, description="re 090-1234-5678",
                                result="", created_at=NOW, updated_at=NOW))
        create_lead(s, first_name="090-1234-5678", phones=[("+819012345678", "")],
                    region="JP")
        # Another person's call, transferred to the erased number.
        s.add(CallLegRecord(id=f"{other.id}:1", call_id=other.id, kind="outside",
                            user_id=None, number="+819012345678", started_at=NOW,
                            answered_at=NOW, ended_at=NOW, result="answered"))
        mine_id = mine.id
    result = gov.erase("+81 90 1234 5678", "admin-key")
    assert (result.events, result.scheduled_calls) == (1, 2)
    with Session(engine) as s:  # type: ignore[call-overload]
        bodies = {o.call_id: o.payload for o in s.scalars(select(OutboxEvent))}
        scheduled = s.scalars(select(ScheduledCall)).all()
        [lead] = s.scalars(select(Lead)).all()
    body = json.loads(bodies[mine_id])
    assert (body["call"]["from_number"], body["call"]["from_name"]) == ("erased", "erased")
    assert body["legs"] == [{"number": "erased"}]
    call = json.loads(bodies[mine_id])["call"]
    assert call["subject"] == "Inbound call from erased (erased)"
    assert (call["description"], call["queue"]) == ("fax +8190123456789", "Ichiro Tanaka")
    assert "+819099999999" in next(b for c, b in bodies.items() if c != mine_id)
    assert sorted(c.status for c in scheduled) == ["cancelled", "completed"]
    for call in scheduled:
        assert call.number == "erased" and "1234" not in call.subject + call.description
    assert lead.first_name == "erased"
    with Session(engine) as s:  # type: ignore[call-overload]
        call = s.get(Call, mine_id)
        found = {leg.id: leg for leg in s.scalars(select(CallLegRecord))}
        leg = found[f"{mine_id}:1"]
        assert found[next(k for k in found if not k.startswith(mine_id))].number == "erased"
        assert call is not None
        assert (call.subject, call.description) == (
            "Inbound call from erased", "He asked us to call erased after six")
    assert leg.number == "erased"


def test_legal_hold_is_audited_and_needs_a_call(store: tuple[Governance, Path, object]) -> None:
    gov, folder, engine = store
    with Session(engine) as s, s.begin():  # type: ignore[call-overload]
        call = _call(s, folder, started=NOW, from_number="+819012345678")
        cid = call.id
    gov.hold(cid, True, "supervisor-key")
    gov.hold(cid, False, "supervisor-key")
    assert [e.action for e in gov.audit()] == ["legal_hold_lifted", "legal_hold"]
    with pytest.raises(GovernanceError):
        gov.hold("no-such-call", True, "supervisor-key")


def test_files_outside_the_recordings_folder_are_never_deleted(
        store: tuple[Governance, Path, object], tmp_path: Path) -> None:
    gov, folder, engine = store
    outside = tmp_path / "precious.wav"
    outside.write_bytes(b"RIFF")
    with Session(engine) as s, s.begin():  # type: ignore[call-overload]
        call = _call(s, folder, started=datetime(2025, 1, 1), from_number="+819011110009")
        call.recording_path = str(outside)
    gov.expire(datetime(2026, 1, 1))
    assert outside.exists()
