"""The queue (ACD) selection core on a virtual clock: caps, the wait limit, each strategy's order
of offers, reject-skip, ring timeout, auto-pause, wrap-up, picking, fairness across queues,
figures, moving a caller out; and random arrivals, answers and departures that must keep the
queue's invariants. Assignment rules: tests/pbx/test_acd_assignment.py."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx.acd import (
    MAX_CALLERS,
    AcdError,
    Action,
    Admitted,
    Agent,
    AgentBack,
    AgentPaused,
    AgentState,
    Connected,
    Full,
    Offer,
    OfferCancelled,
    OfferExpired,
    QueueParams,
    QueueState,
    TimedOut,
    choose_queue_for_agent,
    tick_all,
)


def agents(*names: str) -> list[Agent]:
    return [Agent(name) for name in names]


def queue(strategy: str = "longest_idle", members: tuple[str, ...] = ("a", "b", "c"),
          **params: Any) -> QueueState:
    return QueueState(QueueParams("support", strategy, **params), agents(*members))  # type: ignore[arg-type]


def offers(actions: list[Action]) -> list[tuple[str, tuple[str, ...]]]:
    return [(a.call_id, a.agents) for a in actions if isinstance(a, Offer)]


def serve(q: QueueState, call: str, now: float) -> str:
    """Arrive, be offered, answered by the first agent offered; returns that agent."""
    q.arrive(call, "+15550000", now)
    (offer,) = [a for a in q.tick(now) if isinstance(a, Offer)]
    agent = offer.agents[0]
    q.offer_result(call, agent, "answered", now)
    return agent


# --- caps and the wait limit --------------------------------------------------------------


def test_the_26th_caller_finds_the_queue_full() -> None:
    q = queue(members=())
    results = [q.arrive(f"c{i}", "+1555", float(i)) for i in range(MAX_CALLERS + 1)]
    assert results[:-1] == [Admitted(f"c{i}", i + 1) for i in range(MAX_CALLERS)]
    assert results[-1] == Full("c25")
    assert [w.position for w in q.waiting(30.0)] == list(range(1, 26))
    assert q.interval(30.0).overflowed == 1


def test_a_lower_configured_cap_holds_and_a_freed_place_is_taken_again() -> None:
    q = queue(members=(), max_callers=2)
    assert isinstance(q.arrive("x", "1", 0.0), Admitted)
    assert isinstance(q.arrive("y", "2", 0.0), Admitted)
    assert q.arrive("z", "3", 0.0) == Full("z")
    assert q.leave("x", 4.0) == 4.0
    assert q.arrive("z", "3", 5.0) == Admitted("z", 2)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_callers": 26}, "max_callers 26: use 1 to 25"),
        ({"max_callers": 0}, "max_callers 0"),
        ({"max_wait": 1501.0}, "max_wait 1501.0"),
        ({"max_wait": 0.0}, "max_wait 0.0"),
        ({"ring_timeout": 0.0}, "ring_timeout"),
        ({"weight": -1.0}, "weight"),
        ({"wrap_up": -1.0}, "wrap_up"),
        ({"strategy": "random"}, "strategy 'random'"),
    ],
)
def test_parameters_beyond_the_design_caps_are_refused(params: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(AcdError, match=message):
        QueueParams("q", **params)


def test_a_caller_times_out_exactly_at_max_wait_and_ringing_stops() -> None:
    q = queue("simultaneous", members=("a",), max_wait=60.0, ring_timeout=100.0)
    q.arrive("x", "1", 0.0)
    assert offers(q.tick(0.0)) == [("x", ("a",))]
    assert q.tick(59.9) == []
    assert q.tick(60.0) == [TimedOut("x", 60.0, ("a",))]
    assert q.waiting(60.0) == []
    assert q.members[0].state is AgentState.AVAILABLE
    assert q.interval(61.0).overflowed == 1


def test_duplicate_and_unknown_calls_are_clear_errors() -> None:
    q = queue()
    q.arrive("x", "1", 0.0)
    with pytest.raises(AcdError, match="already waiting"):
        q.arrive("x", "1", 1.0)
    with pytest.raises(AcdError, match="call y is not waiting"):
        q.leave("y", 1.0)
    with pytest.raises(AcdError, match="zed is not a member"):
        q.pause("zed", "lunch", 1.0)
    with pytest.raises(AcdError, match="agent a is not being offered call x"):
        q.offer_result("x", "a", "answered", 1.0)
    with pytest.raises(AcdError, match="not on a call"):
        q.call_ended("a", 1.0)


# --- order of offers ----------------------------------------------------------------------


def test_the_longest_waiter_is_offered_first_and_priority_goes_ahead() -> None:
    q = queue(members=("a",))
    q.arrive("first", "1", 0.0)
    q.arrive("second", "2", 1.0)
    assert q.arrive("vip", "3", 2.0, priority=5) == Admitted("vip", 1)
    assert [w.call_id for w in q.waiting(3.0)] == ["vip", "first", "second"]
    assert offers(q.tick(3.0)) == [("vip", ("a",))]
    q.offer_result("vip", "a", "answered", 4.0)
    q.call_ended("a", 5.0)
    assert offers(q.tick(5.0)) == [("first", ("a",))]


def test_busy_paused_offline_and_wrapping_up_agents_are_not_offered() -> None:
    q = queue("simultaneous", members=("a", "b", "c", "d", "e"), wrap_up=30.0,
              ring_timeout=100.0)
    serve(q, "x1", 0.0)  # all five ring; a answers
    q.pause("c", "lunch", 0.0)
    q.logout("d", 0.0)
    q.arrive("x2", "2", 1.0)
    (offer,) = [a for a in q.tick(1.0) if isinstance(a, Offer)]
    assert set(offer.agents) == {"b", "e"}  # a on a call, c paused, d offline
    q.arrive("x3", "3", 2.0)
    assert offers(q.tick(2.0)) == []  # b and e are ringing for x2
    q.call_ended("a", 3.0)
    assert q.members[0].state is AgentState.WRAP_UP
    assert offers(q.tick(32.9)) == []
    actions = q.tick(33.0)
    assert AgentBack("a") in actions
    assert ("x3", ("a",)) in offers(actions)


def test_longest_idle_offers_the_agent_idle_longest() -> None:
    q = queue("longest_idle")
    a, b, c = q.members
    a.last_call_end, b.last_call_end, c.last_call_end = 50.0, 10.0, 30.0
    assert [serve(q, f"x{i}", 100.0 + i) for i in range(3)] == ["b", "c", "a"]


def test_an_agent_back_from_a_pause_counts_as_idle_from_then() -> None:
    q = queue("longest_idle")
    a, b, c = q.members
    a.last_call_end, b.last_call_end, c.last_call_end = 10.0, 20.0, 30.0
    q.pause("a", "meeting", 40.0)
    q.unpause("a", 60.0)
    assert serve(q, "x", 70.0) == "b"


def test_fewest_calls_today_offers_the_least_busy_agent() -> None:
    q = queue("fewest_calls")
    a, b, c = q.members
    a.calls_today, b.calls_today, c.calls_today = 4, 2, 3
    assert serve(q, "x", 0.0) == "b"
    assert b.calls_today == 3
    b.new_day()
    assert b.calls_today == 0


def test_round_robin_keeps_its_fixed_order_and_passes_over_the_unavailable() -> None:
    q = queue("round_robin", members=("a", "b", "c", "d"))
    order = []
    for i in range(3):
        agent = serve(q, f"x{i}", float(i))
        q.call_ended(agent, float(i))
        order.append(agent)
    assert order == ["a", "b", "c"]
    q.pause("a", "break", 3.0)
    for i in range(3, 5):
        agent = serve(q, f"x{i}", float(i))
        q.call_ended(agent, float(i))
        order.append(agent)
    assert order[3:] == ["d", "b"]  # a is passed over, its place kept
    q.unpause("a", 5.0)
    order += [serve(q, "x5", 6.0)]
    q.call_ended(order[-1], 6.0)
    order += [serve(q, "x6", 7.0)]
    assert order[5:] == ["c", "d"]
    q.call_ended("d", 8.0)
    assert serve(q, "x7", 8.0) == "a"  # back in its old place


def test_simultaneous_rings_all_and_the_first_answer_stops_the_others() -> None:
    q = queue("simultaneous")
    q.arrive("x", "1", 0.0)
    assert offers(q.tick(0.0)) == [("x", ("a", "b", "c"))]
    actions = q.offer_result("x", "b", "answered", 7.0)
    assert actions == [OfferCancelled("x", "a"), OfferCancelled("x", "c"), Connected("x", "b", 7.0)]
    assert [m.state for m in q.members] == [
        AgentState.AVAILABLE, AgentState.ON_CALL, AgentState.AVAILABLE]
    assert [m.missed_in_a_row for m in q.members] == [0, 0, 0]


def test_a_callback_keeps_its_place_and_is_offered_as_a_callback() -> None:
    q = queue(members=("a",))
    q.arrive("x", "+15551", 0.0)
    q.arrive("y", "+15552", 1.0)
    q.set_callback("x")
    view = q.waiting(2.0)
    assert (view[0].call_id, view[0].callback, view[0].position) == ("x", True, 1)
    assert [a for a in q.tick(2.0) if isinstance(a, Offer)] == [Offer("x", ("a",), True)]


# --- reject, miss, ring timeout, auto-pause --------------------------------------------------


def test_an_agent_who_rejects_is_skipped_for_that_caller_only() -> None:
    q = queue("round_robin", members=("a", "b"), retry=10.0)
    q.arrive("x", "1", 0.0)
    assert offers(q.tick(0.0)) == [("x", ("a",))]
    assert q.offer_result("x", "a", "rejected", 1.0) == []
    assert offers(q.tick(1.0)) == [("x", ("b",))]
    q.offer_result("x", "b", "missed", 2.0)
    assert offers(q.tick(2.0)) == []  # both skipped: not re-rung at once
    q.arrive("y", "2", 3.0)
    assert offers(q.tick(3.0)) == [("y", ("a",))]  # a may take another caller
    assert offers(q.tick(12.0)) == [("x", ("b",))]  # a new round after `retry`


def test_ring_timeout_expires_the_offer_and_counts_as_missed() -> None:
    q = queue("longest_idle", members=("a", "b"), ring_timeout=15.0)
    q.members[1].last_call_end = 5.0
    q.arrive("x", "1", 0.0)
    assert offers(q.tick(0.0)) == [("x", ("a",))]
    assert q.tick(14.9) == []
    actions = q.tick(15.0)
    assert actions[0] == OfferExpired("x", "a")
    assert offers(actions) == [("x", ("b",))]
    assert q.members[0].missed_in_a_row == 1


def test_missing_offers_in_a_row_pauses_the_agent_with_a_reason() -> None:
    q = queue("round_robin", members=("a",), max_missed=2, retry=10.0)
    for i, call in enumerate(("x", "y")):
        q.arrive(call, "1", float(i))
        q.tick(float(i))
    assert q.offer_result("x", "a", "missed", 2.0) == []
    assert offers(q.tick(2.0)) == [("y", ("a",))]
    assert q.offer_result("y", "a", "rejected", 3.0) == [AgentPaused("a", "missed 2 offers")]
    agent = q.members[0]
    assert (agent.state, agent.paused_reason) == (AgentState.PAUSED, "missed 2 offers")
    assert offers(q.tick(100.0)) == []
    q.unpause("a", 101.0)
    assert agent.missed_in_a_row == 0
    assert offers(q.tick(101.0)) == [("x", ("a",))]


def test_an_answer_resets_the_missed_count() -> None:
    q = queue("round_robin", members=("a",), max_missed=2, retry=0.0)
    q.arrive("x", "1", 0.0)
    q.tick(0.0)
    q.offer_result("x", "a", "missed", 1.0)
    q.tick(1.0)
    q.offer_result("x", "a", "answered", 2.0)
    assert q.members[0].missed_in_a_row == 0


# --- agents' own actions --------------------------------------------------------------------


def test_pause_and_logout_during_a_call_apply_when_it_ends() -> None:
    q = queue("round_robin", members=("a", "b"), wrap_up=10.0)
    serve(q, "x", 0.0)
    q.pause("a", "training", 1.0)
    assert q.members[0].state is AgentState.ON_CALL
    q.call_ended("a", 2.0)
    assert q.tick(12.0) == []
    assert (q.members[0].state, q.members[0].paused_reason) == (AgentState.PAUSED, "training")
    serve(q, "y", 13.0)  # b
    q.logout("b", 14.0)
    q.call_ended("b", 15.0)
    q.tick(30.0)
    assert q.members[1].state is AgentState.OFFLINE


def test_pausing_a_ringing_agent_withdraws_the_offer() -> None:
    q = queue("round_robin", members=("a", "b"))
    q.arrive("x", "1", 0.0)
    q.tick(0.0)
    assert q.pause("a", "away", 1.0) == [OfferCancelled("x", "a")]
    assert offers(q.tick(1.0)) == [("x", ("b",))]


def test_login_adds_an_agent_at_the_end_and_logout_stops_offers() -> None:
    q = queue("round_robin", members=("a",))
    q.logout("a", 0.0)
    q.arrive("x", "1", 0.0)
    assert offers(q.tick(0.0)) == []
    q.login("z", 1.0)
    assert [m.user_id for m in q.members] == ["a", "z"]
    assert offers(q.tick(1.0)) == [("x", ("z",))]


def test_an_agent_picks_a_waiting_caller_and_others_stop_ringing() -> None:
    q = queue("simultaneous", members=("a", "b"))
    q.arrive("x", "1", 0.0)
    q.arrive("y", "2", 1.0)
    q.tick(1.0)  # x rings a and b
    actions = q.pick("y", "a", 4.0)
    assert actions == [OfferCancelled("x", "a"), Connected("y", "a", 3.0)]
    assert [w.call_id for w in q.waiting(4.0)] == ["x"]
    assert q.waiting(4.0)[0].offered_to == ("b",)
    with pytest.raises(AcdError, match="on_call and cannot pick"):
        q.pick("x", "a", 5.0)


# --- fairness across queues ------------------------------------------------------------------


def two_queues(weight: float) -> tuple[QueueState, QueueState, Agent]:
    shared = Agent("a")
    sales = QueueState(QueueParams("sales", "longest_idle"), [shared])
    support = QueueState(QueueParams("support", "longest_idle", weight=weight), [shared])
    return sales, support, shared


def test_an_agent_in_two_queues_gets_the_longest_waiting_caller() -> None:
    sales, support, _ = two_queues(1.0)
    sales.arrive("s", "1", 10.0)
    support.arrive("p", "2", 0.0)
    assert choose_queue_for_agent([sales, support], "a", 40.0) is support
    actions = tick_all([sales, support], 40.0)
    assert offers(actions) == [("p", ("a",))]
    assert offers(sales.tick(40.0)) == []  # the shared agent rings for support already


def test_a_heavier_queue_wins_by_weighted_wait() -> None:
    sales, support, _ = two_queues(3.0)
    sales.arrive("s", "1", 0.0)  # waited 40 s * 1
    support.arrive("p", "2", 25.0)  # waited 15 s * 3 = 45
    assert choose_queue_for_agent([sales, support], "a", 40.0) is support
    assert offers(tick_all([sales, support], 40.0)) == [("p", ("a",))]
    assert choose_queue_for_agent([sales, support], "nobody", 40.0) is None


# --- figures --------------------------------------------------------------------------------


def test_live_and_interval_figures() -> None:
    q = queue("round_robin", members=("a", "b", "c"), service_level=20.0)
    q.pause("c", "lunch", 0.0)
    for call, t in (("x", 0.0), ("y", 0.0), ("z", 0.0)):
        q.arrive(call, "1", t)
    q.tick(0.0)  # x -> a, y -> b
    q.offer_result("x", "a", "answered", 10.0)
    q.offer_result("y", "b", "answered", 30.0)
    live = q.live(40.0)
    assert (live.waiting, live.longest_wait) == (1, 40.0)
    assert live.agents["on_call"] == 2 and live.agents["paused"] == 1
    assert q.leave("z", 40.0) == 40.0
    figures = q.interval(50.0)
    assert (figures.offered, figures.answered, figures.abandoned) == (3, 2, 1)
    assert figures.abandoned_wait == 40.0
    assert figures.average_speed_of_answer == 20.0
    assert figures.service_level == pytest.approx(1 / 3)
    empty = q.interval(60.0)
    assert (empty.start, empty.offered, empty.service_level) == (50.0, 0, None)


# --- invariants under random traffic ---------------------------------------------------------

_OPS = st.lists(
    st.tuples(
        st.sampled_from(["arrive", "tick", "answer", "reject", "leave", "end", "pause",
                         "unpause", "pick"]),
        st.integers(0, 40),
        st.floats(0.0, 30.0),
    ),
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(ops=_OPS, strategy=st.sampled_from(["simultaneous", "longest_idle", "fewest_calls",
                                           "round_robin"]), cap=st.integers(1, 25))
def test_random_traffic_keeps_the_invariants(
    ops: list[tuple[str, int, float]], strategy: str, cap: int
) -> None:
    q = QueueState(
        QueueParams("q", strategy, max_callers=cap, max_wait=300.0, ring_timeout=20.0,  # type: ignore[arg-type]
                    wrap_up=5.0, max_missed=3, retry=1e9),
        agents("a", "b", "c", "d"),
    )
    now, serial = 0.0, 0
    on_call: set[str] = set()
    for op, pick, step in ops:
        now += step
        members = q.members
        agent = members[pick % len(members)]
        line = q.waiting(now)
        entry = line[pick % len(line)] if line else None
        if op == "arrive":
            serial += 1
            result = q.arrive(f"c{serial}", "+1555", now)
            assert isinstance(result, Full) == (len(line) >= cap)
        elif op == "tick":
            ringing = {u: w.call_id for w in line for u in w.offered_to}
            actions = q.tick(now)
            after = q.waiting(now)
            for action in actions:
                if isinstance(action, OfferExpired):
                    assert ringing.pop(action.agent) == action.call_id
                elif isinstance(action, TimedOut):
                    for user in action.agents:
                        assert ringing.pop(user) == action.call_id
                elif isinstance(action, Offer):
                    # No agent is offered a call while ringing for, or on, another, and a
                    # caller is offered again only once their earlier offers ended.
                    assert not set(action.agents) & (on_call | set(ringing))
                    assert action.call_id not in ringing.values()
                    ringing.update(dict.fromkeys(action.agents, action.call_id))
                    # FIFO: every caller ahead still without an offer had skipped these agents.
                    for ahead in after:
                        if ahead.call_id == action.call_id:
                            break
                        if not ahead.offered_to:
                            for user in action.agents:
                                assert ahead.call_id in q._member(user).skipped
        elif op in ("answer", "reject") and entry is not None and entry.offered_to:
            user = entry.offered_to[pick % len(entry.offered_to)]
            q.offer_result(entry.call_id, user, "answered" if op == "answer" else "rejected",
                           now)
            if op == "answer":
                on_call.add(user)
        elif op == "leave" and entry is not None:
            assert q.leave(entry.call_id, now) == pytest.approx(entry.waited)
        elif op == "end" and agent.state is AgentState.ON_CALL:
            q.call_ended(agent.user_id, now)
            on_call.discard(agent.user_id)
        elif op == "pause" and agent.state is not AgentState.PAUSED:
            q.pause(agent.user_id, "break", now)
        elif op == "unpause":
            q.unpause(agent.user_id, now)
        elif op == "pick" and entry is not None and agent.state in (
                AgentState.AVAILABLE, AgentState.RINGING):
            q.pick(entry.call_id, agent.user_id, now)
            on_call.add(agent.user_id)
        view = q.waiting(now)
        assert len(view) <= cap
        assert [w.position for w in view] == list(range(1, len(view) + 1))
        assert all(w.waited < 300.0 or op != "tick" for w in view)
        arrivals = [w.call_id for w in view]
        assert arrivals == sorted(arrivals, key=lambda c: int(c[1:]))  # equal priority: FIFO
        rung = [u for w in view for u in w.offered_to]
        assert len(rung) == len(set(rung))  # one offer per agent at a time
        for member in q.members:
            assert (member.state is AgentState.RINGING) == (member.user_id in rung)
            assert (member.state is AgentState.ON_CALL) == (member.user_id in on_call)


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["arrive", "tick", "answer", "miss", "end"]),
                  st.integers(0, 40), st.floats(0.0, 20.0)),
        max_size=80,
    ),
    weights=st.tuples(st.floats(0.5, 3.0), st.floats(0.5, 3.0)),
)
def test_queues_sharing_agents_never_offer_one_agent_twice(
    ops: list[tuple[str, int, float]], weights: tuple[float, float]
) -> None:
    shared = agents("a", "b", "c")
    queues = [
        QueueState(QueueParams("sales", "round_robin", weight=weights[0], wrap_up=3.0),
                   shared[:2]),
        QueueState(QueueParams("support", "simultaneous", weight=weights[1], wrap_up=3.0),
                   shared[1:]),
    ]
    now, serial = 0.0, 0
    for op, pick, step in ops:
        now += step
        q = queues[pick % 2]
        line = q.waiting(now)
        entry = line[pick % len(line)] if line else None
        if op == "arrive":
            serial += 1
            q.arrive(f"c{serial}", "+1555", now)
        elif op == "tick":
            ringing = {u for queue in queues for w in queue.waiting(now) for u in w.offered_to}
            for action in tick_all(queues, now):
                if isinstance(action, OfferExpired):
                    ringing.discard(action.agent)
                elif isinstance(action, TimedOut):
                    ringing -= set(action.agents)
                elif isinstance(action, Offer):
                    assert not set(action.agents) & ringing
                    ringing |= set(action.agents)
        elif op in ("answer", "miss") and entry is not None and entry.offered_to:
            user = entry.offered_to[pick % len(entry.offered_to)]
            q.offer_result(entry.call_id, user, "answered" if op == "answer" else "missed", now)
        elif op == "end":
            busy = [a for a in q.members if a.state is AgentState.ON_CALL]
            if busy:
                q.call_ended(busy[0].user_id, now)
        rung = [u for queue in queues for w in queue.waiting(now) for u in w.offered_to]
        assert len(rung) == len(set(rung))
        for agent in shared:
            assert (agent.state is AgentState.RINGING) == (agent.user_id in rung)


def test_an_agent_in_wrap_up_may_pick_a_caller_and_ends_wrap_up() -> None:
    q = queue("round_robin", members=("a",), wrap_up=60.0)
    serve(q, "x", 0.0)
    q.call_ended("a", 10.0)
    q.arrive("y", "2", 11.0)
    assert q.pick("y", "a", 12.0) == [Connected("y", "a", 1.0)]
    assert q.members[0].state is AgentState.ON_CALL
    assert q.tick(80.0) == []


def test_a_paused_agent_may_pick_and_is_paused_again_after_the_call() -> None:
    agents = [Agent("alice"), Agent("bob")]
    q = QueueState(QueueParams("q", wrap_up=0.0), agents)
    q.arrive("c1", "+1", 0.0)
    q.pause("alice", "training", 1.0)
    acts = q.pick("c1", "alice", 2.0)
    assert [type(a).__name__ for a in acts] == ["Connected"]
    assert agents[0].state is AgentState.ON_CALL
    q.call_ended("alice", 30.0)
    assert agents[0].state is AgentState.PAUSED and agents[0].paused_reason == "training"


def test_a_readmitted_caller_gets_in_when_full_and_is_not_counted_twice() -> None:
    q = QueueState(QueueParams("q", max_callers=1), [Agent("alice")])
    assert isinstance(q.arrive("c1", "+1", 0.0), Admitted)
    assert isinstance(q.arrive("c2", "+2", 1.0), Full)
    assert isinstance(q.arrive("c3", "+3", 0.5, priority=1, readmit=True), Admitted)
    assert q.position("c3") == 1
    assert q.interval(2.0).offered == 2


def test_callbacks_keep_their_place_past_max_wait_and_offers_can_be_withdrawn() -> None:
    agent = Agent("alice")
    q = QueueState(QueueParams("q", max_wait=60.0), [agent])
    q.arrive("c1", "+1", 0.0, callback=True)
    acts = q.tick(1.0)
    assert [type(a).__name__ for a in acts] == ["Offer"]
    acts = q.withdraw_offers("c1", 2.0)
    assert [type(a).__name__ for a in acts] == ["OfferCancelled"]
    assert agent.state is AgentState.AVAILABLE and agent.missed_in_a_row == 0
    agent.state = AgentState.PAUSED
    assert not any(type(a).__name__ == "TimedOut" for a in q.tick(120.0))
    assert q.has("c1")
