"""Texts from the network longer than their columns: cut to fit, so that PostgreSQL (which
refuses them) does not lose the batch of records they were folded into."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from crmsync.fit import fit
from crmsync.models import Call
from crmsync.writer import CallRecordFolder
from pbx.records import CallEnded, CallLeg, CallQueued, CallStarted

T0 = datetime(2026, 11, 21, 9, 0, 0)





def _started(cid: str, name: str = "Caller", number: str = "+81312345678") -> CallStarted:
    return CallStarted(cid, f"sip-{cid}", "inbound", number, name, "5000", None, "bob", T0)


def test_an_event_that_fits_is_the_same_object() -> None:
    event = _started("a")
    assert fit(event) is event


def test_long_texts_are_cut_to_their_columns() -> None:
    event = fit(_started("a", name="N" * 1000, number="1" * 300))
    assert len(event.from_name) == 255 and len(event.from_number) == 64
    assert event.sip_call_id == "sip-a"
    ended = fit(CallEnded("a", T0, "answered", "x" * 900, "caller", 200, 1.0, 1.0,
                          keys="1" * 100))
    assert len(ended.hangup_cause) == 255 and ended.keys == "1" * 64
    queued = fit(CallQueued("a", "q" * 100, "answered", 3.0, rule="r" * 100))
    assert len(queued.queue) == 64 and len(queued.rule or "") == 64
    leg = fit(CallLeg("a", "a:1", "outside", None, "9" * 200, T0, None, T0, "failed"))
    assert len(leg.number or "") == 64


def test_texts_no_database_takes_are_made_storable() -> None:
    # A Latin-1 display name (kept by the SIP parser as surrogate escapes) and a NUL.
    event = fit(_started("a", name="M\udcfcller\x00"))
    assert event.from_name == "Müller"
    # UTF-8 bytes that came through as escapes are read as UTF-8.
    assert fit(_started("b", name="Gr\udcc3\udcbc\udcc3\udc9fe")).from_name == "Grüße"
    ended = fit(CallEnded("a", T0, "answered", "x\x00y", "caller", 200, 1.0, 1.0))
    assert ended.hangup_cause == "xy"


def test_a_batch_with_an_oversized_caller_is_written_whole(engine: Engine) -> None:
    folder = CallRecordFolder()
    for event in (_started("good-1"), _started("huge", name="Ä" * 2000, number="5" * 500),
                  _started("latin", name="M\udcfcller\x00"), _started("good-2")):
        folder.add(fit(event))
    job = folder.flush()
    assert job is not None
    with Session(engine) as s, s.begin():
        job(s)
    with Session(engine) as s:
        rows = {r.id: r for r in s.scalars(select(Call))}
    assert set(rows) == {"good-1", "huge", "latin", "good-2"}
    assert rows["latin"].from_name == "Müller"
    assert rows["huge"].from_name == "Ä" * 255 and rows["huge"].from_number == "5" * 64
