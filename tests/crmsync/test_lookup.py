"""Contacts, leads and caller lookup on a real SQLite file."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.orm import Session

from crmsync.callstore import find_links
from crmsync.contacts import (
    ContactError,
    RecordNotFound,
    create_contact,
    create_lead,
    normalise,
    update_contact,
    update_lead,
)
from crmsync.lookup import CallerLookup, Match
from crmsync.models import Base, Call, Contact, Lead, PhoneNumber

T0 = datetime(2026, 11, 21, 9, 0, 0)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{tmp_path / 'pbx.db'}")
    Base.metadata.create_all(engine)
    return engine


def _contact(engine: Engine, phones: list[tuple[str, str]], *, now: datetime = T0,
             **fields: str) -> str:
    with Session(engine) as s, s.begin():
        return create_contact(s, first_name=fields.pop("first_name", ""), phones=phones,
                              region="JP", now=now, **fields)


def _lead(engine: Engine, phones: list[tuple[str, str]], *, now: datetime = T0,
          **fields: str) -> str:
    with Session(engine) as s, s.begin():
        return create_lead(s, first_name=fields.pop("first_name", ""), phones=phones,
                           region="JP", now=now, **fields)


def _call(engine: Engine, from_number: str, answered_by: str | None, at: datetime) -> None:
    with Session(engine) as s, s.begin():
        s.add(Call(id=str(uuid.uuid4()), sip_call_id=str(uuid.uuid4()), direction="inbound",
                   from_number=from_number, to_number="+81312340000", callee_user=answered_by,
                   answered_by=answered_by, started_at=at - timedelta(seconds=5),
                   answered_at=None if answered_by is None else at,
                   disposition="answered" if answered_by else "no_answer"))


@pytest.mark.parametrize("written", [
    "03-1234-5678", "(03) 1234-5678", "03 1234 5678", "0312345678", "+81 3 1234 5678",
    "+81-3-1234-5678", "0081312345678", "010 81 3 1234 5678", "81312345678", " +81312345678 ",
])
def test_normalise_accepts_the_forms_people_write(written: str) -> None:
    assert normalise(written, "JP") == "+81312345678"


@pytest.mark.parametrize("written", ["101", "110", "", "  ", "abc", "03-1234-567x",
                                     "+81 3 1234", "12345", "0" * 41, "sip:101@pbx"])
def test_normalise_refuses_extensions_and_junk(written: str) -> None:
    assert normalise(written, "JP") is None


def test_normalise_reads_national_numbers_in_the_region_given() -> None:
    assert normalise("(212) 555-1234", "US") == "+12125551234"
    assert normalise("011 81 3 1234 5678", "us") == "+81312345678"
    assert normalise("090-1234-5678", "JP") == "+819012345678"


def test_numbers_written_in_several_forms_find_the_same_contact(engine: Engine) -> None:
    cid = _contact(engine, [("03-1234-5678", "work"), ("+81 90 1234 5678", "mobile")],
                   first_name="Hanako", last_name="Yamada", company="Yamada Shoji",
                   owner="alice")
    lookup = CallerLookup(engine, "JP")
    want = Match("contact", cid, "Hanako Yamada", "Yamada Shoji", "alice")
    for number in ("+81312345678", "81312345678", "0312345678", "0081312345678",
                   "09012345678", "+819012345678"):
        assert lookup.match(number) == want, number
    with Session(engine) as s:
        rows = {(p.number_e164, p.label, p.raw) for p in s.scalars(select(PhoneNumber))}
    assert rows == {("+81312345678", "work", "03-1234-5678"),
                    ("+819012345678", "mobile", "+81 90 1234 5678")}


def test_unknown_numbers_and_extensions_match_nothing(engine: Engine) -> None:
    _contact(engine, [("03-1234-5678", "work")], first_name="Hanako")
    lookup = CallerLookup(engine, "JP")
    assert lookup.match("03-9999-0000") is None
    assert lookup.match("101") is None
    assert lookup.match("") is None


def test_contacts_come_before_leads_unless_the_order_says_otherwise(engine: Engine) -> None:
    # The lead is the newer record: kind order still wins over recency.
    cid = _contact(engine, [("03-1234-5678", "")], first_name="Hanako", now=T0)
    lid = _lead(engine, [("+81312345678", "")], company="Prospect KK",
                now=T0 + timedelta(days=1))
    assert CallerLookup(engine, "JP").match("0312345678") == Match(
        "contact", cid, "Hanako", "", None)
    assert CallerLookup(engine, "JP", order=("lead", "contact")).match("0312345678") == Match(
        "lead", lid, "Prospect KK", "Prospect KK", None)
    only_leads = CallerLookup(engine, "JP", order=("lead",))
    assert only_leads.match("0312345678") is not None
    assert only_leads.match("0312345678").kind == "lead"  # type: ignore[union-attr]
    # A reload changes the order of a running look-up.
    only_leads.set_order(("contact",))
    assert only_leads.order == ("contact",)
    assert only_leads.match("0312345678").kind == "contact"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="listed twice"):
        only_leads.set_order(("lead", "lead"))
    assert only_leads.order == ("contact",)
    # The record a call is linked to follows the same order.
    with Session(engine) as s:
        assert find_links(s, ["+81312345678"])["+81312345678"].id == cid
        assert find_links(s, ["+81312345678"], ("lead", "contact"))["+81312345678"].id == lid
        assert find_links(s, ["+81312345678"], ("lead",))["+81312345678"].kind == "lead"


def test_a_lead_is_found_when_no_contact_has_the_number(engine: Engine) -> None:
    lid = _lead(engine, [("090-1111-2222", "mobile")], owner="bob")
    assert CallerLookup(engine, "JP").match("+819011112222") == Match(
        "lead", lid, "+819011112222", "", "bob")


def test_the_most_recently_updated_record_wins(engine: Engine) -> None:
    old = _contact(engine, [("03-1234-5678", "")], first_name="Old", now=T0)
    new = _contact(engine, [("03-1234-5678", "")], first_name="New", now=T0 + timedelta(hours=1))
    lookup = CallerLookup(engine, "JP")
    assert lookup.match("0312345678").record_id == new  # type: ignore[union-attr]
    with Session(engine) as s, s.begin():
        update_contact(s, old, last_name="Friend", region="JP", now=T0 + timedelta(hours=2))
    assert lookup.match("0312345678") == Match("contact", old, "Old Friend", "", None)


def test_updating_numbers_replaces_them(engine: Engine) -> None:
    cid = _contact(engine, [("03-1234-5678", "work")], first_name="Hanako", owner="alice")
    lookup = CallerLookup(engine, "JP")
    with Session(engine) as s, s.begin():
        update_contact(s, cid, phones=[("090-1234-5678", "mobile")], owner=None, region="JP")
    assert lookup.match("0312345678") is None
    assert lookup.match("09012345678") == Match("contact", cid, "Hanako", "", None)


def test_updating_a_lead_changes_its_status_and_keeps_its_numbers(engine: Engine) -> None:
    lid = _lead(engine, [("03-1234-5678", "")], first_name="Ken")
    with Session(engine) as s, s.begin():
        update_lead(s, lid, status="qualified", company="Ken KK", region="JP")
    with Session(engine) as s:
        lead = s.get(Lead, lid)
        assert lead is not None and (lead.status, lead.company) == ("qualified", "Ken KK")
        assert lead.updated_at > lead.created_at
    assert CallerLookup(engine, "JP").match("0312345678").record_id == lid  # type: ignore[union-attr]


def test_updating_an_unknown_record_says_so(engine: Engine) -> None:
    with Session(engine) as s, pytest.raises(RecordNotFound, match="no contact"):
        update_contact(s, "nope", first_name="X", region="JP")
    with Session(engine) as s, pytest.raises(RecordNotFound, match="no lead"):
        update_lead(s, "nope", status="lost", region="JP")


def test_a_bad_number_is_named_in_the_error(engine: Engine) -> None:
    with Session(engine) as s, s.begin(), pytest.raises(ContactError, match="'101'") as info:
        create_contact(s, first_name="Hanako", phones=[("101", "work")], region="JP")
    assert isinstance(info.value, ValueError)
    assert info.value.number == "101"


def test_a_bad_second_number_leaves_nothing_written(engine: Engine) -> None:
    with pytest.raises(ContactError, match="not a number"), Session(engine) as s, s.begin():
        create_lead(s, first_name="Ken", region="JP",
                    phones=[("03-1234-5678", "work"), ("not a number", "mobile")])
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Lead)) == 0
        assert s.scalar(select(func.count()).select_from(PhoneNumber)) == 0
    assert CallerLookup(engine, "JP").match("0312345678") is None


def test_a_bad_number_in_an_update_changes_nothing(engine: Engine) -> None:
    cid = _contact(engine, [("03-1234-5678", "work")], first_name="Hanako")
    with pytest.raises(ContactError), Session(engine) as s, s.begin():
        update_contact(s, cid, first_name="Changed", region="JP",
                       phones=[("090-1234-5678", "mobile"), ("12", "bad")])
    with Session(engine) as s:
        contact = s.get(Contact, cid)
        assert contact is not None and contact.first_name == "Hanako"
    assert CallerLookup(engine, "JP").match("0312345678") is not None


def test_bad_fields_are_refused(engine: Engine) -> None:
    with Session(engine) as s:
        with pytest.raises(ContactError, match="email"):
            create_contact(s, first_name="A", email="not-an-address", region="JP")
        with pytest.raises(ContactError, match="line breaks"):
            create_contact(s, first_name="A\r\nVia: x", region="JP")
        with pytest.raises(ContactError, match="longer than"):
            create_contact(s, first_name="A" * 300, region="JP")
        with pytest.raises(ValueError, match="unknown region"):
            create_contact(s, first_name="A", phones=[("0312345678", "")], region="XX")


def test_last_agent_is_who_answered_the_latest_call_among_the_agents(engine: Engine) -> None:
    # Trunks send the caller in different forms; all of them are the same caller.
    _call(engine, "+81312345678", "alice", T0)
    _call(engine, "81312345678", "bob", T0 + timedelta(minutes=10))
    _call(engine, "0312345678", "carol", T0 + timedelta(minutes=20))
    _call(engine, "+81312345678", None, T0 + timedelta(minutes=30))  # missed: nobody answered
    _call(engine, "+81399998888", "dave", T0 + timedelta(minutes=40))  # another caller
    lookup = CallerLookup(engine, "JP")
    assert lookup.last_agent("03-1234-5678", ["alice", "bob", "carol", "dave"]) == "carol"
    assert lookup.last_agent("+81312345678", ["alice", "bob"]) == "bob"
    assert lookup.last_agent("0081312345678", {"alice"}) == "alice"
    assert lookup.last_agent("+81312345678", ["dave"]) is None
    assert lookup.last_agent("+81312345678", []) is None
    assert lookup.last_agent("+81311112222", ["alice", "bob"]) is None


def test_last_agent_of_an_internal_caller_compares_the_extension(engine: Engine) -> None:
    _call(engine, "101", "bob", T0)
    assert CallerLookup(engine, "JP").last_agent("101", ["bob"]) == "bob"


def test_both_lookups_go_through_an_index(engine: Engine) -> None:
    executed: list[tuple[str, Any]] = []

    def capture(_conn: object, _cursor: object, statement: str, parameters: Any,
                _context: object, _many: bool) -> None:
        executed.append((statement, parameters))

    lookup = CallerLookup(engine, "JP")
    event.listen(engine, "before_cursor_execute", capture)
    try:
        lookup.match("0312345678")
        lookup.last_agent("0312345678", ["alice", "bob"])
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert len(executed) == 3  # contacts, leads, calls
    with engine.connect() as conn:
        for statement, parameters in executed:
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
            steps = [str(row[-1]) for row in plan]
            # A SCAN step reads a whole table; every table here is searched through an index.
            assert not any(step.startswith("SCAN") for step in steps), steps
            assert any("USING INDEX" in step for step in steps), steps


def test_bad_order_or_region_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="unknown record kind"):
        CallerLookup(engine, "JP", order=("contact", "account"))
    with pytest.raises(ValueError, match="twice"):
        CallerLookup(engine, "JP", order=("lead", "lead"))
    with pytest.raises(ValueError, match="at least one"):
        CallerLookup(engine, "JP", order=())
    with pytest.raises(ValueError, match="unknown region"):
        CallerLookup(engine, "Japan")
