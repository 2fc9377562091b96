"""The CRM store's read side on a real SQLite file and on PostgreSQL: the forms a number is
searched in, the indexes the searches use, keyset pages, batches that hold no connection
between them, one call's legs and records, and the checks on what the API hands in."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert, select, text
from sqlalchemy.orm import Session

from crmsync import queries
from crmsync.contacts import ContactError, RecordNotFound, create_contact
from crmsync.models import Base, Call
from crmsync.queries import (
    CallFilter,
    CrmQueries,
    get_call,
    iter_calls,
    list_calls,
    number_forms,
    search_records,
)

T0 = datetime(2026, 11, 2, 9, 0, 0)



@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'pbx.db'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()




def seed(engine: Engine, count: int, **fields: Any) -> list[str]:
    rows = []
    for i in range(count):
        row: dict[str, Any] = {
            "id": str(uuid.uuid4()), "sip_call_id": "x", "direction": "inbound",
            "from_number": "+81312345678", "to_number": "+81355550000",
            "started_at": T0 + timedelta(seconds=i // 3), "disposition": "answered",
            "duration": 5.0,
        }
        row.update(fields)
        rows.append(row)
    with Session(engine) as s, s.begin():
        s.execute(insert(Call), rows)
    return [row["id"] for row in rows]


def plan(engine: Engine, stmt: Any) -> str:
    sql = stmt.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        return "\n".join(row[3] for row in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))


def test_a_number_is_searched_in_every_form_it_may_be_stored_in() -> None:
    assert number_forms("03-1234-5678", "JP") == [
        "+81312345678", "0081312345678", "01081312345678", "03-1234-5678", "0312345678",
        "81312345678"]
    # A foreign number has no national form of ours; the region's own prefix is US 011.
    assert number_forms("+1 212 555 0100", "us") == [
        "+1 212 555 0100", "+12125550100", "0012125550100", "01112125550100", "12125550100",
        "2125550100"]
    assert number_forms(" 101 ", "JP") == ["101"]
    for bad in ("alice", "", "+", "03-1234-5678; DROP TABLE calls", "1" * 41):
        with pytest.raises(ContactError, match="is not a phone number or an extension"):
            number_forms(bad, "JP")


def test_number_searches_go_through_the_indexes(sqlite_engine: Engine) -> None:
    engine = sqlite_engine
    seed(engine, 10)
    conditions = queries.call_conditions(CallFilter(number="03-1234-5678"), "JP")
    calls_plan = plan(engine, select(Call.id).where(*conditions))
    assert "ix_calls_from_number" in calls_plan and "ix_calls_to_number" in calls_plan
    assert "SCAN calls" not in calls_plan
    with Session(engine) as s:
        contacts_plan = plan(engine, select(text("1")).select_from(queries._phones).where(
            queries._phones.c.number_e164 == "+81312345678"))
        assert "ix_phone_numbers_number_e164" in contacts_plan
        # The search itself finds records by the indexed E.164 column.
        create_contact(s, first_name="A", phones=[("03-1234-5678", "")], region="JP")
        s.commit()
        assert [r.first_name for r in search_records(s, "contact", region="JP",
                                                     number="0081312345678")] == ["A"]


def test_owner_filter_goes_through_its_index(sqlite_engine: Engine) -> None:
    seed(sqlite_engine, 10, answered_by="alice")
    conditions = queries.call_conditions(CallFilter(owner="alice", call_type="inbound",
                                                    status="completed"), "JP")
    owner_plan = plan(sqlite_engine, select(Call.id).where(*conditions))
    assert "ix_calls_owner" in owner_plan and "SCAN calls" not in owner_plan
    with Session(sqlite_engine) as s:
        page = list_calls(s, CallFilter(owner="alice", call_type="inbound"), region="JP")
        assert len(page.items) == 10
        assert {(item["owner"], item["call_type"], item["who"]) for item in page.items} == {
            ("alice", "inbound", None)}
        with pytest.raises(ContactError, match="unknown call_type 'lost'"):
            list_calls(s, CallFilter(call_type="lost"), region="JP")  # type: ignore[arg-type]
        with pytest.raises(ContactError, match="unknown status 'done'"):
            list_calls(s, CallFilter(status="done"), region="JP")  # type: ignore[arg-type]


def test_pages_by_keyset_with_shared_start_times(engine: Engine) -> None:
    ids = set(seed(engine, 25))  # three calls per second: ties everywhere
    with Session(engine) as s:
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            page = list_calls(s, CallFilter(), region="JP", limit=7, cursor=cursor,
                              order="oldest", count=True)
            assert page.total == 25
            seen += [item["id"] for item in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert len(seen) == 25 and set(seen) == ids
        with pytest.raises(ContactError, match="limit must be 1 to 500"):
            list_calls(s, CallFilter(), region="JP", limit=501)
        with pytest.raises(ContactError, match="cursor is not one"):
            list_calls(s, CallFilter(), region="JP", cursor="%%%")
        with pytest.raises(ContactError, match="unknown call type 'lost'"):
            list_calls(s, CallFilter(kind="lost"), region="JP")  # type: ignore[arg-type]


def test_times_with_a_zone_compare_as_utc(engine: Engine) -> None:
    seed(engine, 6)  # 09:00:00 and 09:00:01 UTC
    tokyo = timezone(timedelta(hours=9))
    with Session(engine) as s:
        late = CallFilter(started_from=datetime(2026, 11, 2, 18, 0, 1, tzinfo=tokyo))
        assert len(list_calls(s, late, region="JP").items) == 3
        early = CallFilter(started_to=datetime(2026, 11, 2, 9, 0, 1, tzinfo=UTC))
        assert len(list_calls(s, early, region="JP").items) == 3


def test_batches_hold_no_connection_between_them(engine: Engine) -> None:
    seed(engine, 10)
    seed(engine, 5, direction="outbound")
    batches = iter_calls(engine, CallFilter(kind="inbound"), region="JP", batch=4)
    sizes = []
    for rows in batches:
        sizes.append(len(rows))
        # A slow reader of an export keeps no transaction (or WAL snapshot) open.
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert all(row["direction"] == "inbound" for row in rows)
    assert sizes == [4, 4, 2]
    # The filter is checked when the walk is asked for, not at its first batch.
    with pytest.raises(ContactError, match="'x-y'"):
        iter_calls(engine, CallFilter(number="x-y"), region="JP")


def test_one_call_its_legs_records_and_users(engine: Engine) -> None:
    (call_id,) = seed(engine, 1, caller_user=None, callee_user="alice", answered_by="bob",
                      transferred_to="carol", recording_path="/r/a.wav",
                      from_number="0312345678", from_name="Hanako")
    with Session(engine) as s, s.begin():
        contact = create_contact(s, first_name="Hanako", phones=[("+81312345678", "")],
                                 region="JP")
    with Session(engine) as s:
        detail = get_call(s, call_id, region="JP")
        assert detail.recording_path == "/r/a.wav" and "recording_path" not in detail.call
        assert detail.call["has_recording"] is True and detail.call["missed"] is False
        # A record without stored legs: the summary of the record (legs without an id).
        assert [(leg.role, leg.number, leg.user, leg.id) for leg in detail.legs] == [
            ("caller", "0312345678", None, None), ("callee", "+81355550000", "bob", None),
            ("transfer", None, "carol", None)]
        assert [r.id for r in detail.records] == [contact]
        assert detail.participants == {"alice", "bob", "carol"}
        with pytest.raises(RecordNotFound, match="no call with id 'nope'"):
            get_call(s, "nope", region="JP")


def test_the_store_checks_what_it_is_handed(engine: Engine) -> None:
    store = CrmQueries(engine, "jp")
    with pytest.raises(ValueError, match="unknown region 'XX'"):
        CrmQueries(engine, "xx")
    with pytest.raises(ContactError, match="a contact has no field 'status'"):
        store.create_record("contact", {"status": "new"})
    with pytest.raises(ContactError, match="first_name must be text"):
        store.create_record("lead", {"first_name": 5})
    with pytest.raises(ContactError, match="phones must be a list of"):
        store.create_record("lead", {"phones": "03-1234-5678"})
    lead = store.create_record("lead", {"company": "ACME", "owner": "bob",
                                        "phones": [("03-1234-5678", "work")]})
    assert (lead.kind, lead.first_name, lead.status, lead.owner) == ("lead", "", "new", "bob")
    changed = store.update_record("lead", lead.id, {"owner": None, "status": "won"})
    assert (changed.owner, changed.status, changed.phones) == (None, "won", lead.phones)
    with pytest.raises(RecordNotFound):
        store.update_record("contact", lead.id, {"first_name": "x"})
    assert store.search_records("lead", number="+81312345678", q="acm", limit=5) == [changed]
    with pytest.raises(ContactError, match="'12' is not a valid phone number in region JP"):
        store.search_records("lead", number="12", q=None, limit=5)
