"""Assignment rules in the queue core, on a virtual clock: only the allowed agents are offered a
caller, with the rule's strategy, until the fallback (all or none) at its deadline; a caller kept
for others can still be picked or moved out; random assignments never reach other agents."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx.acd import (
    AcdError,
    Admitted,
    Agent,
    AgentState,
    Connected,
    Offer,
    OfferExpired,
    QueueParams,
    QueueState,
    TimedOut,
    Unassigned,
    choose_queue_for_agent,
    tick_all,
)
from pbx.acdrules import Assignment
from tests.pbx.test_acd import agents, offers, queue


def only(*names: str, **options: Any) -> Assignment:
    return Assignment(frozenset(names), **options)


def test_only_the_allowed_agents_are_offered_the_caller() -> None:
    q = queue("longest_idle", members=("a", "b", "c"))
    q.members[2].last_call_end = 5.0  # c idle since later than b
    q.arrive("x", "+8190", 10.0, assignment=only("b", "c", rule="vip"))
    q.arrive("y", "+8170", 11.0)
    # a is idle longest but not allowed for x; y (no rule) gets a.
    assert offers(q.tick(11.0)) == [("x", ("b",)), ("y", ("a",))]
    assert [(w.call_id, w.rule) for w in q.waiting(12.0)] == [("x", "vip"), ("y", None)]
    q.offer_result("x", "b", "rejected", 12.0)
    assert offers(q.tick(12.0)) == [("x", ("c",))]
    q.offer_result("x", "c", "missed", 13.0)
    q.offer_result("y", "a", "rejected", 13.0)
    # Everyone allowed has skipped x; a is free but not allowed for x, so only y is offered.
    assert offers(q.tick(13.0)) == [("y", ("b",))]


def test_a_caller_waits_for_the_allowed_agents_while_others_are_free() -> None:
    q = queue("longest_idle", members=("a", "b"))
    q.pause("b", "lunch", 0.0)
    q.arrive("x", "1", 0.0, assignment=only("b"))
    assert offers(q.tick(100.0)) == []
    assert choose_queue_for_agent([q], "a", 100.0) is None
    q.unpause("b", 101.0)
    assert choose_queue_for_agent([q], "b", 101.0) is q
    assert offers(q.tick(101.0)) == [("x", ("b",))]


def test_agents_who_are_not_members_are_ignored() -> None:
    q = queue("simultaneous", members=("a", "b"))
    q.arrive("x", "1", 0.0, assignment=only("b", "zed"))
    assert offers(q.tick(0.0)) == [("x", ("b",))]


def test_the_rule_strategy_replaces_the_queue_strategy_for_that_caller() -> None:
    q = queue("longest_idle", members=("a", "b", "c"))
    q.arrive("x", "1", 0.0, assignment=only("a", "c", strategy="simultaneous"))
    q.arrive("y", "2", 1.0)
    assert offers(q.tick(1.0)) == [("x", ("a", "c")), ("y", ("b",))]


def test_a_round_robin_rule_uses_the_queue_cursor() -> None:
    q = queue("longest_idle", members=("a", "b", "c"))
    rr = Assignment(None, "round_robin")
    order = []
    for i in range(4):
        q.arrive(f"x{i}", "1", float(i), assignment=rr)
        (offer,) = [a for a in q.tick(float(i)) if isinstance(a, Offer)]
        q.offer_result(f"x{i}", offer.agents[0], "answered", float(i))
        q.call_ended(offer.agents[0], float(i))
        order.append(offer.agents[0])
    assert order == ["a", "b", "c", "a"]


def test_fallback_all_widens_to_every_member_at_the_deadline() -> None:
    q = queue("round_robin", members=("a", "b", "c"), ring_timeout=100.0)
    q.pause("c", "away", 0.0)
    q.arrive("first", "1", 0.0, assignment=only("c", fallback_after=30.0))
    q.arrive("second", "2", 1.0)
    assert offers(q.tick(1.0)) == [("second", ("a",))]
    assert offers(q.tick(29.9)) == []
    # At 30 s "first" may go to anyone, keeps its place and is offered by the queue strategy.
    assert offers(q.tick(30.0)) == [("first", ("b",))]
    assert [w.call_id for w in q.waiting(30.0)] == ["first", "second"]


def test_agents_ringing_at_the_deadline_keep_ringing() -> None:
    q = queue("longest_idle", members=("a", "b"), ring_timeout=60.0)
    q.members[0].last_call_end = 1.0  # b idle longer, but only a is allowed
    q.arrive("x", "1", 0.0, assignment=only("a", fallback_after=10.0))
    assert offers(q.tick(0.0)) == [("x", ("a",))]
    assert q.tick(10.0) == []
    assert q.waiting(10.0)[0].offered_to == ("a",)
    actions = q.tick(60.0)  # the offer expires: the widened caller now goes to b
    assert actions[0] == OfferExpired("x", "a")
    assert offers(actions) == [("x", ("b",))]


def test_fallback_none_ends_the_call_at_the_deadline_and_stops_ringing() -> None:
    q = queue("simultaneous", members=("a", "b"), ring_timeout=60.0)
    q.arrive("x", "1", 0.0, assignment=only("a", fallback_after=20.0, fallback="none"))
    assert offers(q.tick(0.0)) == [("x", ("a",))]
    assert q.tick(19.9) == []
    assert q.tick(20.0) == [Unassigned("x", 20.0, ("a",))]
    assert not q.has("x")
    assert q.members[0].state is AgentState.AVAILABLE
    figures = q.interval(30.0)
    assert (figures.offered, figures.overflowed, figures.abandoned) == (1, 1, 0)
    assert figures.service_level == 0.0


def test_a_target_with_nobody_falls_back_at_once() -> None:
    q = queue("longest_idle", members=("a", "b"))
    q.arrive("x", "1", 0.0, assignment=Assignment(frozenset(), fallback_after=60.0))
    assert offers(q.tick(0.0)) == [("x", ("a",))]
    q.arrive("y", "2", 5.0, assignment=only("zed", fallback="none", rule="owner"))
    assert q.tick(5.0) == [Unassigned("y", 0.0, ())]
    assert q.interval(6.0).overflowed == 1


def test_the_wait_limit_wins_over_a_fallback_due_at_the_same_time() -> None:
    q = queue(members=("a",), max_wait=30.0)
    q.arrive("x", "1", 0.0, assignment=only("zed", fallback_after=30.0, fallback="none"))
    q.logout("a", 0.0)
    q.arrive("y", "2", 0.0, assignment=only("a", fallback_after=30.0, fallback="none"))
    # x has nobody: its fallback is due at once; y's deadline and max_wait fall together.
    assert q.tick(0.0) == [Unassigned("x", 0.0, ())]
    assert q.tick(30.0) == [TimedOut("y", 30.0, ())]


def test_tick_all_applies_fallbacks_before_offering_across_queues() -> None:
    shared = Agent("a")
    sales = QueueState(QueueParams("sales"), [shared, Agent("b")])
    support = QueueState(QueueParams("support"), [shared])
    sales.pause("b", "away", 0.0)
    sales.arrive("s", "1", 0.0, assignment=only("b", fallback_after=40.0))
    support.arrive("p", "2", 10.0)
    assert offers(tick_all([sales, support], 39.0)) == [("p", ("a",))]
    support.offer_result("p", "a", "answered", 39.0)
    support.call_ended("a", 39.5)
    assert offers(tick_all([sales, support], 40.0)) == [("s", ("a",))]


def test_an_agent_may_pick_a_caller_kept_for_others() -> None:
    q = queue(members=("a", "b"))
    q.pause("b", "away", 0.0)
    q.arrive("x", "1", 0.0, assignment=only("b"))
    assert q.pick("x", "a", 3.0) == [Connected("x", "a", 3.0)]


def test_a_caller_moved_out_is_not_abandoned_and_ringing_stops() -> None:
    sales = queue("simultaneous", members=("a", "b"))
    sales.arrive("x", "+8190", 0.0, assignment=only("a", "b", rule="vip"))
    sales.tick(0.0)
    assert sales.has("x")
    entry = sales.move_out("x", 12.0)
    assert (entry.call_id, entry.caller, entry.arrived, entry.rule) == ("x", "+8190", 0.0, "vip")
    assert entry.ringing == {"a", "b"}
    assert not sales.has("x")
    assert [m.state for m in sales.members] == [AgentState.AVAILABLE, AgentState.AVAILABLE]
    figures = sales.interval(13.0)
    assert (figures.offered, figures.abandoned, figures.overflowed) == (1, 0, 0)
    with pytest.raises(AcdError, match="call x is not waiting"):
        sales.move_out("x", 13.0)
    support = queue(members=("c",))
    assert support.arrive(entry.call_id, entry.caller, 12.0) == Admitted("x", 1)
    assert offers(support.tick(12.0)) == [("x", ("c",))]


def test_a_bad_rule_strategy_is_a_clear_error() -> None:
    q = queue()
    with pytest.raises(AcdError, match="strategy 'random'"):
        q.arrive("x", "1", 0.0, assignment=Assignment(None, "random"))  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["arrive", "tick", "answer", "reject", "leave", "end",
                                   "pause", "unpause", "move"]),
                  st.integers(0, 40), st.floats(0.0, 30.0)),
        max_size=100,
    ),
    targets=st.lists(
        st.tuples(st.none() | st.frozensets(st.sampled_from(["a", "b", "c", "zed"])),
                  st.none() | st.floats(0.0, 120.0), st.sampled_from(["all", "none"])),
        min_size=1, max_size=8,
    ),
)
def test_random_assignments_offer_only_allowed_agents_until_the_fallback(
    ops: list[tuple[str, int, float]],
    targets: list[tuple[frozenset[str] | None, float | None, str]],
) -> None:
    q = QueueState(QueueParams("q", "round_robin", max_wait=300.0, retry=5.0),
                   agents("a", "b", "c"))
    rules: dict[str, tuple[Assignment, float]] = {}
    now, serial = 0.0, 0
    for op, pick, step in ops:
        now += step
        agent = q.members[pick % 3]
        line = q.waiting(now)
        entry = line[pick % len(line)] if line else None
        if op == "arrive":
            serial += 1
            allowed, after, fallback = targets[pick % len(targets)]
            assignment = Assignment(allowed, None, after, fallback)  # type: ignore[arg-type]
            if isinstance(q.arrive(f"c{serial}", "1", now, assignment=assignment), Admitted):
                rules[f"c{serial}"] = (assignment, now)
        elif op == "tick":
            for action in q.tick(now):
                if not isinstance(action, Offer | Unassigned):
                    continue
                assignment, arrived = rules[action.call_id]
                after = assignment.fallback_after
                due = now >= arrived + (1e9 if after is None else after)
                nobody = assignment.agents is not None and not assignment.agents & {"a", "b", "c"}
                if isinstance(action, Offer) and assignment.agents is not None and not (
                        due or nobody):
                    assert set(action.agents) <= assignment.agents
                if isinstance(action, Unassigned):
                    assert assignment.fallback == "none" and (due or nobody)
        elif op in ("answer", "reject") and entry is not None and entry.offered_to:
            user = entry.offered_to[pick % len(entry.offered_to)]
            q.offer_result(entry.call_id, user, "answered" if op == "answer" else "rejected",
                           now)
        elif op == "leave" and entry is not None:
            q.leave(entry.call_id, now)
        elif op == "move" and entry is not None:
            assert q.move_out(entry.call_id, now).ringing == set(entry.offered_to)
        elif op == "end" and agent.state is AgentState.ON_CALL:
            q.call_ended(agent.user_id, now)
        elif op == "pause" and agent.state is not AgentState.PAUSED:
            q.pause(agent.user_id, "break", now)
        elif op == "unpause":
            q.unpause(agent.user_id, now)
        rung = [u for w in q.waiting(now) for u in w.offered_to]
        assert len(rung) == len(set(rung))
        for member in q.members:
            assert (member.state is AgentState.RINGING) == (member.user_id in rung)


