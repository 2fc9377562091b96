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
