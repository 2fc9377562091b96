"""The Calls-module fields of call records as the record writer fills them, on a real SQLite
file and a real PostgreSQL server: subject, type, status and owner, the link to a contact
(then a lead) in one query per batch, legs written with their call and closed at its end,
annotations the call path leaves alone, and changes after the end as ``call.updated`` with
the record's revision."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session

from crmsync.callstore import annotate, find_links
from crmsync.contacts import create_contact, create_lead
from crmsync.imports import CallImports, ImportRejected
from crmsync.models import Call, CallLegRecord, Contact, OutboxEvent
from crmsync.writer import CallRecordFolder
from pbx.config_crm import Webhook
from pbx.records import CallAnswered, CallEnded, CallLeg, CallQueued, CallStarted

T0 = datetime(2026, 11, 21, 9, 0, 0)
TANAKA = "+819012345678"





def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def folder_with_hooks() -> CallRecordFolder:
    folder = CallRecordFolder(region="JP")
    folder.set_webhooks([Webhook(name="crm", url="https://crm.example/hook",
                                 secret="0123456789abcdef0123")])
    return folder


def apply(engine: Engine, folder: CallRecordFolder) -> None:
    job = folder.flush()
    assert job is not None
    with Session(engine) as s, s.begin():
        job(s)


def rows(engine: Engine) -> dict[str, dict[str, Any]]:
    with Session(engine) as s:
        return {r["id"]: dict(r) for r in s.execute(select(Call.__table__)).mappings()}


def legs(engine: Engine, call_id: str) -> list[tuple[Any, ...]]:
    with Session(engine) as s:
        return [(leg.id, leg.kind, leg.user_id, leg.result, leg.ended_at) for leg in s.scalars(
            select(CallLegRecord).where(CallLegRecord.call_id == call_id)
            .order_by(CallLegRecord.started_at, CallLegRecord.id))]


def outbox(engine: Engine) -> dict[str, dict[str, Any]]:
    with Session(engine) as s:
        return {row.idempotency_key: json.loads(row.payload)
                for row in s.scalars(select(OutboxEvent))}


def started(cid: str, direction: str = "inbound", from_number: str = TANAKA,
            to_number: str = "101", from_name: str = "", caller: str | None = None,
            callee: str | None = "alice") -> CallStarted:
    return CallStarted(cid, f"sip-{cid}", direction, from_number, from_name, to_number,
                       caller, callee, T0)


def ended(cid: str, disposition: str, seconds: float, duration: float = 0.0) -> CallEnded:
    return CallEnded(cid, at(seconds), disposition, "caller hung up", "caller", None,
                     duration, seconds)


def leg(cid: str, leg_id: str, user: str, result: str, start: float,
        answered: float | None = None, end: float | None = None) -> CallLeg:
    return CallLeg(cid, leg_id, "ring", user, None, at(start),
                   at(answered) if answered is not None else None,
                   at(end) if end is not None else None, result)


def add_people(engine: Engine) -> dict[str, str]:
    with Session(engine) as s, s.begin():
        return {
            "tanaka": create_contact(s, first_name="Ichiro", last_name="Tanaka",
                                     phones=[("090-1234-5678", "mobile")], region="JP"),
            # A lead with the same number: the contact comes first.
            "lead_tanaka": create_lead(s, first_name="I.", phones=[(TANAKA, "")],
                                       region="JP"),
            "acme": create_lead(s, first_name="", company="ACME KK", phones=[("03-1234-5678", "")],
                                region="JP"),
        }


def test_type_status_owner_subject_and_link_of_each_kind_of_call(engine: Engine) -> None:
    people = add_people(engine)
    folder = CallRecordFolder(region="JP")
    folder.add(started("in", from_name="Tanaka Ichiro"))  # the CRM's name wins over this
    folder.add(CallAnswered("in", at(3), "bob", 3.0))
    folder.add(ended("in", "answered", 63, 60.0))
    # The trunk sent the lead's number in national form.
    folder.add(started("missed", from_number="0312345678"))
    folder.add(ended("missed", "no_answer", 20))
    folder.add(started("out", "outbound", "102", "+81 6-6000-0000", caller="bob", callee=None))
    folder.add(ended("out", "busy", 4))
    folder.add(started("int", "internal", "101", "102", "Alice", "alice", "bob"))
    folder.add(ended("int", "cancelled", 5))
    folder.add(started("live", from_number="+12125550100", from_name="Jane Roe"))
    apply(engine, folder)
    got = {cid: (r["call_type"], r["status"], r["owner"], r["subject"], r["who_kind"],
                 r["who_id"], r["revision"]) for cid, r in rows(engine).items()}
    assert got == {
        "in": ("inbound", "completed", "bob", "Inbound call from Ichiro Tanaka", "contact",
               people["tanaka"], 1),
        "missed": ("missed", "completed", "alice", "Missed call from ACME KK", "lead",
                   people["acme"], 1),
        "out": ("outbound", "completed", "bob", "Outbound call to +81 6-6000-0000", None,
                None, 1),
        "int": ("missed", "completed", "bob", "Missed call from Alice", None, None, 1),
        # In progress: no subject until it ends; the owner is the user it rings for.
        "live": ("inbound", "in_progress", "alice", None, None, None, 1),
    }
    folder.add(CallAnswered("live", at(2), "carol", 2.0))
    folder.add(ended("live", "answered", 30, 28.0))
    apply(engine, folder)
    live = rows(engine)["live"]
    assert (live["status"], live["owner"], live["subject"]) == (
        "completed", "carol", "Inbound call from Jane Roe")
    # An internal call that was answered.
    folder.add(started("int2", "internal", "101", "102", "Alice", "alice", "bob"))
    folder.add(CallAnswered("int2", at(1), "bob", 1.0))
    folder.add(ended("int2", "answered", 9, 8.0))
    apply(engine, folder)
    assert rows(engine)["int2"]["subject"] == "Internal call 101 → 102"


def test_one_link_query_per_batch_and_a_lead_made_during_the_call(engine: Engine) -> None:
    add_people(engine)
    statements: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    folder = CallRecordFolder(region="JP")
    for i in range(10):
        folder.add(started(f"c{i}", from_number=TANAKA if i % 2 else f"+8131234{i:04d}"))
    folder.add(started("ext", "internal", "101", "102"))  # nothing to look up
    apply(engine, folder)
    assert sum("phone_numbers" in s for s in statements) == 1
    assert sum("INSERT INTO calls" in s for s in statements) == 1
    linked = {cid: r["who_kind"] for cid, r in rows(engine).items()}
    assert linked == {**{f"c{i}": "contact" if i % 2 else None for i in range(10)},
                      "ext": None}
    # A linked call is not looked up again; an unknown caller is, at each write, so a lead
    # made while the call rings (crm.create_leads) is linked by the end.
    with Session(engine) as s, s.begin():
        lead = create_lead(s, first_name="New", last_name="Caller",
                           phones=[("+81312340000", "")], region="JP")
    statements.clear()
    for i in range(10):
        folder.add(ended(f"c{i}", "no_answer", 10))
    apply(engine, folder)
    assert sum("phone_numbers" in s for s in statements) == 1
    c0 = rows(engine)["c0"]
    assert (c0["who_kind"], c0["who_id"], c0["subject"]) == (
        "lead", lead, "Missed call from New Caller")
    assert rows(engine)["c1"]["subject"] == "Missed call from Ichiro Tanaka"
    event.remove(engine, "before_cursor_execute", _seen)


def test_legs_are_written_with_their_call_and_end_with_it(engine: Engine) -> None:
    people = add_people(engine)
    folder = folder_with_hooks()
    folder.add(started("c1", to_number="600", callee=None))
    folder.add(leg("c1", "c1:1", "alice", "no_answer", 0.5, end=20.5))
    folder.add(leg("c1", "c1:2", "bob", "answered", 0.5, answered=21))
    apply(engine, folder)
    assert legs(engine, "c1") == [("c1:1", "ring", "alice", "no_answer", at(20.5)),
                                  ("c1:2", "ring", "bob", "answered", None)]
    folder.add(CallAnswered("c1", at(21), "bob", 21.0))
    # The same leg again replaces it; the transfer's leg is open when the call ends.
    folder.add(leg("c1", "c1:2", "bob", "answered", 0.5, answered=21, end=40))
    folder.add(CallLeg("c1", "c1:3", "transfer", "carol", None, at(40), at(41), None,
                       "answered"))
    folder.add(ended("c1", "answered", 90, 69.0))
    apply(engine, folder)
    assert legs(engine, "c1") == [("c1:1", "ring", "alice", "no_answer", at(20.5)),
                                  ("c1:2", "ring", "bob", "answered", at(40)),
                                  ("c1:3", "transfer", "carol", "answered", at(90))]
    payload = outbox(engine)["c1:call.ended"]
    assert payload["call"]["who_kind"] == "contact"
    assert payload["call"]["who_id"] == people["tanaka"]
    assert payload["call"]["subject"] == "Inbound call from Ichiro Tanaka"
    assert payload["call"]["revision"] == 1 and payload["call"]["owner"] == "bob"
    assert [(x["id"], x["user"], x["result"], x["ended_at"]) for x in payload["legs"]] == [
        ("c1:1", "alice", "no_answer", "2026-11-21T09:00:20.500Z"),
        ("c1:2", "bob", "answered", "2026-11-21T09:00:40.000Z"),
        ("c1:3", "carol", "answered", "2026-11-21T09:01:30.000Z")]
    assert "legs" not in outbox(engine)["c1:call.started"]
    # A missed call's two events both carry the legs.
    folder.add(started("c2"))
    folder.add(leg("c2", "c2:1", "alice", "no_answer", 0, end=15))
    folder.add(ended("c2", "no_answer", 15))
    apply(engine, folder)
    events = outbox(engine)
    assert [x["id"] for x in events["c2:call.missed"]["legs"]] == ["c2:1"]
    assert events["c2:call.ended"]["legs"] == events["c2:call.missed"]["legs"]


def test_a_change_after_the_end_is_a_new_revision_and_call_updated(engine: Engine) -> None:
    add_people(engine)
    folder = folder_with_hooks()
    # A queue caller the PBX answered to wait; the queue's result comes after the hang-up.
    folder.add(started("q", to_number="5000", callee=None))
    folder.add(CallAnswered("q", at(1), None, 1.0))
    folder.add(CallEnded("q", at(30), "answered", "caller hung up", "caller", None, 29.0, 1.0))
    apply(engine, folder)
    row = rows(engine)["q"]
    assert (row["call_type"], row["subject"], row["revision"]) == (
        "inbound", "Inbound call from Ichiro Tanaka", 1)
    folder.add(CallQueued("q", "support", "abandoned", 28.5))
    apply(engine, folder)
    row = rows(engine)["q"]
    assert (row["queue_result"], row["call_type"], row["subject"], row["revision"]) == (
        "abandoned", "missed", "Missed call from Ichiro Tanaka", 2)
    updated = outbox(engine)["q:call.updated:2"]
    assert updated["event"] == "call.updated" and updated["id"] == "q:call.updated:2"
    assert updated["call"] == {**updated["call"], "revision": 2, "call_type": "missed",
                               "queue_wait": 28.5}
    assert set(updated["call"]) == {c.key for c in Call.__table__.columns}
    assert updated["legs"] == []
    # The same event again (a replay) changes nothing: no revision, no event.
    folder.add(CallQueued("q", "support", "abandoned", 28.5))
    apply(engine, folder)
    assert rows(engine)["q"]["revision"] == 2
    # A leg that comes late is a change too. Begun after the end (a queue's callback, after
    # the caller hung up), it stays open until the callback's own end comes.
    folder.add(leg("q", "q:1", "bob", "answered", 40, answered=41))
    apply(engine, folder)
    assert legs(engine, "q") == [("q:1", "ring", "bob", "answered", None)]
    assert [x["id"] for x in outbox(engine)["q:call.updated:3"]["legs"]] == ["q:1"]
    folder.add(CallEnded("q", at(70), "answered", "callee hung up", "callee", None, 29.0, 1.0))
    apply(engine, folder)
    assert legs(engine, "q") == [("q:1", "ring", "bob", "answered", at(70))]
    # A subject someone wrote stays when a late change comes.
    with Session(engine) as s, s.begin():
        annotate(s, "q", {"subject": "Complaint"}, user=None, any_call=True)
    folder.add(CallQueued("q", "support", "timeout", 28.5))
    apply(engine, folder)
    row = rows(engine)["q"]
    assert (row["subject"], row["queue_result"], row["revision"]) == ("Complaint", "timeout", 6)
    # An event of a call the store does not have changes nothing.
    folder.add(CallQueued("nope", "support", "abandoned", 1.0))
    folder.add(leg("nope", "nope:1", "bob", "no_answer", 0, end=1))
    apply(engine, folder)
    assert "nope" not in rows(engine) and legs(engine, "nope") == []
    assert not [key for key in outbox(engine) if key.startswith("nope")]


def test_annotations_during_the_call_are_kept_by_the_call_path(engine: Engine) -> None:
    people = add_people(engine)
    folder = CallRecordFolder(region="JP")
    folder.add(started("c1"))
    apply(engine, folder)
    with Session(engine) as s, s.begin():
        annotate(s, "c1", {"subject": "Order 42", "purpose": "support", "result": "refund",
                           "description": "two\nlines", "cost": 1.5,
                           "who": ("lead", people["acme"])}, user="alice", any_call=False)
    folder.add(CallAnswered("c1", at(2), "alice", 2.0))
    folder.add(ended("c1", "answered", 60, 58.0))
    apply(engine, folder)
    row = rows(engine)["c1"]
    assert (row["subject"], row["purpose"], row["result"], row["description"], row["cost"],
            row["who_kind"], row["who_id"], row["revision"], row["status"]) == (
        "Order 42", "support", "refund", "two\nlines", 1.5, "lead", people["acme"], 2,
        "completed")


def test_a_call_linked_to_another_record_during_it_is_named_after_it(engine: Engine) -> None:
    people = add_people(engine)
    folder = CallRecordFolder(region="JP")
    folder.add(started("c1"))  # the number is Ichiro Tanaka's (a contact)
    folder.add(started("c2", from_name="Switchboard"))
    apply(engine, folder)
    assert rows(engine)["c1"]["who_id"] == people["tanaka"]
    with Session(engine) as s, s.begin():
        annotate(s, "c1", {"who": ("lead", people["acme"])}, user=None, any_call=True)
        annotate(s, "c2", {"who": None}, user=None, any_call=True)
    for cid in ("c1", "c2"):
        folder.add(ended(cid, "no_answer", 20))
    apply(engine, folder)
    got = {cid: (r["who_kind"], r["subject"]) for cid, r in rows(engine).items()}
    assert got == {"c1": ("lead", "Missed call from ACME KK"),
                   "c2": (None, "Missed call from Switchboard")}


def test_rows_taken_back_after_a_restart(engine: Engine) -> None:
    people = add_people(engine)
    before = folder_with_hooks()
    before.add(started("c1"))
    before.add(leg("c1", "c1:1", "alice", "answered", 1, answered=2))
    before.add(CallAnswered("c1", at(2), "alice", 2.0))
    apply(engine, before)
    with Session(engine) as s, s.begin():  # someone linked it to the lead meanwhile
        s.execute(update(Call).where(Call.id == "c1").values(who_kind="lead",
                                                             who_id=people["acme"]))
    # A new process takes the row back as read from the database, whole.
    after = folder_with_hooks()
    after.adopt([r for r in rows(engine).values() if r["ended_at"] is None])
    assert after.in_progress() == ["c1"]
    after.add(ended("c1", "answered", 50, 48.0))
    apply(engine, after)
    row = rows(engine)["c1"]
    assert (row["status"], row["who_kind"], row["subject"]) == (
        "completed", "lead", "Inbound call from ACME KK")
    # The leg written before the restart ended with the call, and is in call.ended.
    assert legs(engine, "c1") == [("c1:1", "ring", "alice", "answered", at(50))]
    assert [x["id"] for x in outbox(engine)["c1:call.ended"]["legs"]] == ["c1:1"]
    with Session(engine) as s:
        assert s.get(Contact, people["tanaka"]) is not None


def test_imported_calls_get_the_fields_and_the_link(engine: Engine) -> None:
    people = add_people(engine)
    past = f"{datetime.now(UTC) - timedelta(days=30):%Y-%m-%d %H:%M}"
    data = (
        "type,number,start,duration,agent,subject,purpose,result,cost,description\r\n"
        f"inbound,090-1234-5678,{past},65,alice,,support,solved,120.5,\r\n"
        f"missed,03-1234-5678,{past},,bob,Call back ACME,,,,note\r\n"
        f"outbound,+1 212 555 0100,{past},30,carol,,,,0,\r\n"
    ).encode()
    result = CallImports(engine, "JP").import_calls(data, "csv", filename="may.csv",
                                                    timezone="Asia/Tokyo")
    assert result.calls == 3
    got = {r["sip_call_id"]: (r["call_type"], r["status"], r["owner"], r["subject"],
                              r["who_kind"], r["who_id"], r["purpose"], r["result"], r["cost"],
                              r["description"], r["revision"])
           for r in rows(engine).values()}
    assert got == {
        "import:may.csv:2": ("inbound", "completed", "alice", "Inbound call from Ichiro Tanaka",
                             "contact", people["tanaka"], "support", "solved", 120.5, None, 1),
        "import:may.csv:3": ("missed", "completed", "bob", "Call back ACME", "lead",
                             people["acme"], None, None, None, "note", 1),
        "import:may.csv:4": ("outbound", "completed", "carol", "Outbound call to +12125550100",
                             None, None, None, None, 0.0, None, 1),
    }
    bad = (
        "type,number,start,agent,cost,purpose\r\n"
        f"inbound,0312345678,{past},alice,-3,\r\n"
        "scheduled,0312345678,2099-01-01 10:00,alice,5,sales\r\n"
    ).encode()
    with pytest.raises(ImportRejected) as raised:
        CallImports(engine, "JP").import_calls(bad, "csv", filename="bad.csv")
    assert [(p.line, p.column, p.reason) for p in raised.value.problems] == [
        (2, "cost", "the cost must be a number of at least 0"),
        (3, "purpose", "a scheduled call has no purpose; leave it empty"),
        (3, "cost", "a scheduled call has no cost; leave it empty"),
    ]


def test_of_several_records_with_a_number_the_contact_updated_last_wins(engine: Engine) -> None:
    shared = "+81312345678"
    with Session(engine) as s, s.begin():
        lead = create_lead(s, first_name="Lead", phones=[(shared, "")], region="JP",
                           now=T0 + timedelta(days=9))
        old = create_contact(s, first_name="Old", phones=[(shared, "")], region="JP", now=T0)
        new = create_contact(s, first_name="New", phones=[(shared, "")], region="JP",
                             now=T0 + timedelta(days=1))
        only_lead = create_lead(s, first_name="Only", phones=[("+81312345679", "")],
                                region="JP")
    with Session(engine) as s:
        links = find_links(s, [shared, "+81312345679", "+81399999999"])
    assert {n: (link.kind, link.id, link.name) for n, link in links.items()} == {
        shared: ("contact", new, "New"), "+81312345679": ("lead", only_lead, "Only")}
    assert lead != old


def test_the_cost_of_an_outside_call_unless_someone_wrote_one(engine: Engine) -> None:
    folder = folder_with_hooks()
    for cid in ("priced", "written"):
        folder.add(started(cid, direction="outbound", from_number="101",
                           to_number="+819012345678", caller="alice", callee=None))
    apply(engine, folder)
    with Session(engine) as s, s.begin():
        annotate(s, "written", {"cost": 9.0}, user=None, any_call=True)
    for cid in ("priced", "written"):
        folder.add(CallEnded(cid, at(70), "answered", "caller hung up", "caller", None, 61.0,
                             9.0, cost=0.24))
    apply(engine, folder)
    stored = rows(engine)
    assert (stored["priced"]["cost"], stored["written"]["cost"]) == (0.24, 9.0)
    assert outbox(engine)["priced:call.ended"]["call"]["cost"] == 0.24
