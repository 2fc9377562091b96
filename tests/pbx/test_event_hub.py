"""Who hears what on the event stream: an agent's key hears calls not yet given to anyone and
its own; once it has heard of a call it hears the rest of it, so the screen pop another agent's
answer made pointless is closed."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest

from pbx.events import EventHub, Subscriber
from pbx.records import CallAnswered, CallEnded, CallStarted

T0 = datetime(2026, 11, 21, 9, 0, 0)


def _drain(sub: Subscriber) -> list[tuple[str, Any]]:
    out = []
    while not sub.queue.empty():
        event = sub.queue.get_nowait()
        out.append((event["event"], event.get("answered_by")))
    return out


@pytest.mark.asyncio
async def test_an_agent_who_saw_a_call_ring_hears_that_another_agent_took_it() -> None:
    hub = EventHub()
    alice, bob, admin = hub.subscribe("alice"), hub.subscribe("bob"), hub.subscribe(None)
    try:
        hub.on_record(CallStarted("c1", "s1", "inbound", "+81312345678", "", "5000", None,
                                  None, T0))
        hub.on_record(CallAnswered("c1", T0, "bob", 2.0))
        hub.on_record(CallEnded("c1", T0, "answered", "caller hung up", "caller", None, 5.0,
                                2.0))
        assert _drain(alice) == [("call.ringing", None), ("call.answered", "bob"),
                                 ("call.ended", "bob")]
        assert _drain(bob) == _drain(admin) == [("call.ringing", None),
                                                ("call.answered", "bob"),
                                                ("call.ended", "bob")]
        assert alice.shown == set()
        # A call between two other users is none of alice's business.
        hub.on_record(CallStarted("c2", "s2", "internal", "103", "Carol", "102", "carol",
                                  "bob", T0))
        hub.on_record(CallEnded("c2", T0, "no_answer", "no answer", "system", 480, 0.0, 8.0))
        assert _drain(alice) == []
        assert [e for e, _ in _drain(bob)] == ["call.ringing", "call.ended"]
    finally:
        hub.close()
        await asyncio.sleep(0)


class _Match:
    kind, record_id, name, owner = "contact", "c-1", "Ichiro Tanaka", "carol"


async def _events(sub: Subscriber, count: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(count):
        out.append(await asyncio.wait_for(sub.queue.get(), 2))
    return out


@pytest.mark.asyncio
async def test_the_agent_whose_phone_rings_gets_call_offered_with_the_crm_match() -> None:
    hub = EventHub(lambda number: _Match())
    bob, alice, admin = hub.subscribe("bob"), hub.subscribe("alice"), hub.subscribe(None)
    try:
        hub.on_record(CallStarted("c1", "s1", "inbound", "+819012345678", "", "5000", None,
                                  None, T0))
        hub.offered("c1", "bob")  # bob's phone rings before the look-up is back
        got = await _events(bob, 2)
        assert [e["event"] for e in got] == ["call.ringing", "call.offered"]
        assert got[1]["offered_to"] == "bob" and got[1]["crm"]["name"] == "Ichiro Tanaka"
        assert "offers" not in got[1] and "crm_pending" not in got[1]
        assert [e["event"] for e in await _events(admin, 2)] == ["call.ringing", "call.offered"]
        assert [e["event"] for e in await _events(alice, 1)] == ["call.ringing"]
        assert alice.queue.empty()
        # Once the look-up is done, an offer goes out at once (the next ring-group member).
        hub.offered("c1", "alice")
        assert (await _events(alice, 1))[0]["offered_to"] == "alice"
        assert bob.queue.empty()
        hub.offered("unknown-call", "bob")  # a call the hub never saw: nothing
        assert bob.queue.empty()
    finally:
        hub.close()
