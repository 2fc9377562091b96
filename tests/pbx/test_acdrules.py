"""Queue assignment rules: the config shape and its error messages, every condition, first match
wins, each target, and the cross-checks against members, users and departments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from pbx.acdrules import (
    Assignment,
    AssignmentRule,
    CallFacts,
    CrmFacts,
    NoOne,
    RuleTarget,
    assign,
    rule_problems,
)

MEMBERS = ("alice", "bob", "carol", "dave")
DEPARTMENTS: dict[str, str | None] = {
    "alice": "sales", "bob": "support", "carol": "sales", "dave": None, "erin": "sales",
}
# 2024-06-03 is a Monday.
MONDAY_NOON = datetime(2024, 6, 3, 12, 0)


def rule(**data: Any) -> AssignmentRule:
    return AssignmentRule.model_validate(data)


def rules(*items: dict[str, Any]) -> list[AssignmentRule]:
    return [AssignmentRule.model_validate(item) for item in items]


def contact(owner: str | None = "bob", kind: str = "contact") -> CrmFacts:
    return CrmFacts(kind, "42", "Hanako Yamada", owner)  # type: ignore[arg-type]


def facts(
    *,
    did: str | None = "+81312345678",
    caller: str = "+819012345678",
    when: datetime = MONDAY_NOON,
    crm: CrmFacts | None = None,
    last_agent: str | None = None,
) -> CallFacts:
    return CallFacts(did, caller, when, crm, last_agent)


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        AssignmentRule.model_validate(data)
    return "\n".join(str(e["msg"]) for e in info.value.errors())


# --- config shape --------------------------------------------------------------------------


def test_a_full_rule_parses_and_normalises() -> None:
    r = rule(
        name="vip",
        when={
            "did": ["+81312345678"], "caller": "+8190", "days": ["Mon-wed", "friday"],
            "hours": "9:00-18:00", "crm": "known", "owner": "alice",
        },
        target={"agents": ["bob", "carol"]},
        strategy="round_robin",
        fallback_after="1m30s",
        fallback="none",
    )
    assert r.when is not None
    assert r.when.caller == ("+8190",)
    assert r.when.days == ("mon", "tue", "wed", "fri")
    assert r.when.hours == ("09:00-18:00",)
    assert r.target == RuleTarget(agents=("bob", "carol"))
    assert (r.strategy, r.fallback_after, r.fallback) == ("round_robin", 90.0, "none")


def test_defaults_match_every_call_and_target_everyone() -> None:
    r = rule()
    assert (r.name, r.when, r.target, r.strategy, r.fallback_after, r.fallback) == (
        None, None, "all", None, None, "all")
    assert r.matches(facts())


@pytest.mark.parametrize("word", ["all", "none", "crm_owner", "last_agent", " Last_Agent "])
def test_single_word_targets(word: str) -> None:
    assert rule(target=word).target == word.strip().lower()


def test_a_department_target_and_a_round_trip_through_plain_data() -> None:
    r = rule(name="night", when={"hours": ["22:00-06:00"], "days": "fri-mon"},
             target={"department": "sales"}, fallback_after=30)
    again = AssignmentRule.model_validate(r.model_dump())
    assert again == r
    assert r.when is not None and r.when.days == ("mon", "fri", "sat", "sun")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"target": "everyone"}, "unknown target 'everyone': use all, none, crm_owner"),
        ({"target": {"queue": "x"}}, "unknown target key 'queue'"),
        ({"target": {"agents": ["bob"], "department": "sales"}}, "give either agents or"),
        ({"target": {}}, "give either agents or department"),
        ({"target": {"agents": []}}, "agents: the list is empty"),
        ({"target": {"agents": {"bob": 1}}}, "agents: expected a list of user ids"),
        ({"target": {"agents": ["bob", "bob"]}}, "bob is listed twice"),
        ({"target": {"agents": ["Bob!"]}}, "invalid agent 'Bob!'"),
        ({"target": {"department": " "}}, "expected a department name"),
        ({"target": 5}, "unknown target 5"),
        ({"when": {"days": ["mon", "funday"]}}, "unknown day 'funday': use mon, tue"),
        ({"when": {"days": ["mon-xyz"]}}, "unknown day 'xyz'"),
        ({"when": {"days": []}}, "the list of days is empty"),
        ({"when": {"days": [1]}}, "expected days as strings, such as [mon-fri], got 1"),
        ({"when": {"hours": "9-18"}}, "invalid hours '9-18': use HH:MM-HH:MM"),
        ({"when": {"hours": "09:00-25:00"}}, "times go from 00:00 to 24:00"),
        ({"when": {"hours": "09:60-10:00"}}, "times go from 00:00 to 24:00"),
        ({"when": {"hours": "08:00-08:00"}}, "start and end are the same"),
        ({"when": {"did": ["0312345678"]}}, "invalid DID '0312345678': use E.164"),
        ({"when": {"did": [81312345678]}}, "write 81312345678 in quotes with its +"),
        ({"when": {"caller": ["81"]}}, "invalid caller '81': use an E.164 number or prefix"),
        ({"when": {"crm": "maybe"}}, "known"),
        ({"when": {"crm": "unknown", "owner": "alice"}}, "crm: unknown has none"),
        ({"when": {"owner": "Alice Sato"}}, "invalid owner"),
        ({"when": {"weekday": "mon"}}, "Extra inputs are not permitted"),
        ({"strategy": "random"}, "round_robin"),
        ({"fallback_after": "soon"}, "invalid duration 'soon'"),
        ({"fallback_after": -1}, "duration must be a finite number"),
        ({"fallback": "voicemail"}, "'all' or 'none'"),
        ({"target": "none", "fallback_after": 10}, "target none ends the call"),
        ({"target": "none", "strategy": "simultaneous"}, "strategy, fallback_after and"),
        ({"name": ""}, "invalid rule name ''"),
        ({"name": "a\nb"}, "invalid rule name"),
    ],
)
def test_bad_rules_are_refused_with_a_clear_message(data: dict[str, Any], message: str) -> None:
    assert message in error_of(data)


def test_a_rule_is_frozen() -> None:
    r = rule()
    with pytest.raises(ValidationError):
        r.fallback = "none"


# --- conditions ----------------------------------------------------------------------------


def test_did_condition_compares_exact_numbers() -> None:
    r = rule(when={"did": ["+81312345678", "+81120000000"]})
    assert r.matches(facts(did="+81120000000"))
    assert not r.matches(facts(did="+81312345679"))
    assert not r.matches(facts(did=None))  # an internal call has no DID


def test_caller_condition_takes_numbers_and_prefixes() -> None:
    r = rule(when={"caller": ["+8190", "+81312345678"]})
    assert r.matches(facts(caller="+819011112222"))
    assert r.matches(facts(caller="+81312345678"))
    assert not r.matches(facts(caller="+81312345670"))
    assert not r.matches(facts(caller="anonymous"))


def test_days_condition() -> None:
    r = rule(when={"days": ["sat", "sun"]})
    assert not r.matches(facts(when=MONDAY_NOON))
    assert r.matches(facts(when=datetime(2024, 6, 8, 10, 0)))  # Saturday
    assert r.matches(facts(when=datetime(2024, 6, 9, 23, 59)))  # Sunday


def test_hours_start_included_end_excluded() -> None:
    r = rule(when={"hours": "09:00-18:00"})
    assert not r.matches(facts(when=datetime(2024, 6, 3, 8, 59, 59)))
    assert r.matches(facts(when=datetime(2024, 6, 3, 9, 0)))
    assert r.matches(facts(when=datetime(2024, 6, 3, 17, 59, 59)))
    assert not r.matches(facts(when=datetime(2024, 6, 3, 18, 0)))


def test_hours_may_end_at_midnight_and_come_as_several_windows() -> None:
    late = rule(when={"hours": "18:00-24:00"})
    assert late.matches(facts(when=datetime(2024, 6, 3, 23, 59, 59)))
    assert not late.matches(facts(when=datetime(2024, 6, 4, 0, 0)))
    split = rule(when={"hours": ["09:00-12:00", "13:00-18:00"]})
    assert split.matches(facts(when=datetime(2024, 6, 3, 11, 0)))
    assert not split.matches(facts(when=datetime(2024, 6, 3, 12, 30)))
    assert split.matches(facts(when=datetime(2024, 6, 3, 13, 0)))


def test_hours_wrapping_midnight() -> None:
    r = rule(when={"hours": "22:00-06:00"})
    assert r.matches(facts(when=datetime(2024, 6, 3, 22, 0)))
    assert r.matches(facts(when=datetime(2024, 6, 4, 2, 0)))
    assert not r.matches(facts(when=datetime(2024, 6, 4, 6, 0)))
    assert not r.matches(facts(when=MONDAY_NOON))


def test_a_window_wrapping_midnight_belongs_to_the_day_it_starts() -> None:
    friday_night = rule(when={"days": ["fri"], "hours": "22:00-06:00"})
    assert friday_night.matches(facts(when=datetime(2024, 6, 7, 23, 0)))  # Friday 23:00
    assert friday_night.matches(facts(when=datetime(2024, 6, 8, 5, 59)))  # Saturday 05:59
    assert not friday_night.matches(facts(when=datetime(2024, 6, 7, 5, 0)))  # Friday 05:00
    assert not friday_night.matches(facts(when=datetime(2024, 6, 8, 23, 0)))  # Saturday night


@pytest.mark.parametrize(
    ("crm", "record", "expected"),
    [
        ("known", contact(), True),
        ("known", None, False),
        ("unknown", None, True),
        ("unknown", contact(), False),
        ("contact", contact(), True),
        ("contact", contact(kind="lead"), False),
        ("lead", contact(kind="lead"), True),
        ("lead", None, False),
    ],
)
def test_crm_condition(crm: str, record: CrmFacts | None, expected: bool) -> None:
    assert rule(when={"crm": crm}).matches(facts(crm=record)) is expected


def test_owner_condition_needs_a_record_owned_by_that_user() -> None:
    r = rule(when={"owner": "bob"})
    assert r.matches(facts(crm=contact("bob")))
    assert r.matches(facts(crm=contact("bob", kind="lead")))
    assert not r.matches(facts(crm=contact("alice")))
    assert not r.matches(facts(crm=contact(None)))
    assert not r.matches(facts(crm=None))


def test_every_condition_given_must_hold() -> None:
    r = rule(when={"did": ["+81312345678"], "caller": ["+8190"], "days": ["mon"],
                   "hours": "09:00-18:00", "crm": "contact", "owner": "bob"})
    good = facts(crm=contact("bob"))
    assert r.matches(good)
    assert not r.matches(facts(crm=contact("bob"), caller="+81312345678"))
    assert not r.matches(facts(crm=contact("bob"), when=datetime(2024, 6, 4, 12, 0)))
    assert not r.matches(facts(crm=contact("bob"), did="+81120000000"))
    assert not r.matches(facts(crm=contact("carol")))


# --- evaluation ----------------------------------------------------------------------------


def run(rule_list: list[AssignmentRule], call: CallFacts) -> Assignment | NoOne:
    return assign(rule_list, call, MEMBERS, DEPARTMENTS)


def test_no_rules_or_no_match_means_every_member_with_the_queue_strategy() -> None:
    assert run([], facts()) == Assignment(None, None, None, "all", None)
    only_sat = rules({"name": "weekend", "when": {"days": ["sat"]}, "target": "none"})
    assert run(only_sat, facts()) == Assignment()


def test_the_first_matching_rule_wins() -> None:
    rule_list = rules(
        {"name": "blocked", "when": {"caller": ["+8170"]}, "target": "none"},
        {"name": "vip", "when": {"caller": ["+8190"]}, "target": {"agents": ["bob"]},
         "strategy": "simultaneous", "fallback_after": "20s", "fallback": "none"},
        {"name": "mobiles", "when": {"caller": ["+819"]}, "target": {"agents": ["carol"]}},
        {"name": "rest", "target": {"department": "sales"}},
    )
    assert run(rule_list, facts(caller="+817011112222")) == NoOne("blocked")
    assert run(rule_list, facts(caller="+819011112222")) == Assignment(
        frozenset({"bob"}), "simultaneous", 20.0, "none", "vip")
    assert run(rule_list, facts(caller="+819811112222")).rule == "mobiles"
    assert run(rule_list, facts(caller="+81312345678")) == Assignment(
        frozenset({"alice", "carol"}), None, None, "all", "rest")


def test_specific_agents_are_restricted_to_members() -> None:
    result = run(rules({"target": {"agents": ["bob", "erin"]}}), facts())
    assert result == Assignment(frozenset({"bob"}))


def test_a_department_means_its_members_in_this_queue() -> None:
    # erin is in sales too, but not a member of this queue.
    assert run(rules({"target": {"department": "sales"}}), facts()) == Assignment(
        frozenset({"alice", "carol"}))
    assert run(rules({"target": {"department": "legal"}}), facts()) == Assignment(frozenset())


def test_crm_owner_target() -> None:
    owner = rules({"name": "owner", "target": "crm_owner", "fallback_after": 15})
    assert run(owner, facts(crm=contact("carol"))) == Assignment(
        frozenset({"carol"}), None, 15.0, "all", "owner")
    # No match, no owner, or an owner who is not a member: nobody to ring, so the queue
    # applies the fallback at once.
    for record in (None, contact(None), contact("erin")):
        result = run(owner, facts(crm=record))
        assert isinstance(result, Assignment) and result.agents == frozenset()


def test_last_agent_target() -> None:
    last = rules({"target": "last_agent"})
    assert run(last, facts(last_agent="dave")) == Assignment(frozenset({"dave"}))
    assert run(last, facts(last_agent=None)) == Assignment(frozenset())
    assert run(last, facts(last_agent="erin")) == Assignment(frozenset())


def test_target_all_keeps_the_rule_strategy_and_fallback() -> None:
    result = run(rules({"name": "rush", "target": "all", "strategy": "fewest_calls",
                        "fallback_after": "2m", "fallback": "none"}), facts())
    assert result == Assignment(None, "fewest_calls", 120.0, "none", "rush")


# --- cross-checks ----------------------------------------------------------------------------

USERS: dict[str, str | None] = dict(DEPARTMENTS)


def test_rule_problems_of_good_rules_are_none() -> None:
    data = [
        {"name": "vip", "when": {"owner": "alice"}, "target": {"agents": ["bob", "carol"]}},
        {"name": "sales", "when": {"crm": "known"}, "target": {"department": "sales"}},
        {"target": "crm_owner", "when": {"crm": "lead"}},
        {"name": "rest", "target": "all"},
    ]
    assert rule_problems(data, list(MEMBERS), USERS) == []


def test_rule_problems_name_each_problem_at_its_key() -> None:
    data = [
        {"name": "vip", "when": {"owner": "zed"}, "target": {"agents": ["bob", "erin", "zed"]}},
        {"name": "vip", "when": {"did": ["+81312345678"]}, "target": {"department": "legal"}},
        {"when": {"caller": ["+81"]}, "target": {"department": "sales"}},
        {"when": {"crm": "unknown"}, "target": "crm_owner"},
        {"name": "rest"},
        {"name": "late", "target": "none"},
        "not a mapping",
    ]
    problems = rule_problems(data, ["alice", "bob", "dave"], USERS)
    assert problems == [
        ((0, "when", "owner"), 'unknown user "zed" (not in users)'),
        ((0, "target", "agents", 1), '"erin" is not a member of this queue'),
        ((0, "target", "agents", 2), 'unknown user "zed" (not in users)'),
        ((1, "name"), 'duplicate rule name "vip" (also rules[0])'),
        ((1, "target", "department"), 'unknown department "legal" (no user has it)'),
        ((3, "target"), "crm_owner with crm: unknown: the caller has no owner"),
        ((5,), "never tried: rules[4] above matches every call"),
    ]  # rules[2] is fine: alice is a member in sales


def test_a_department_without_members_of_this_queue_is_reported() -> None:
    data = [{"target": {"department": "sales"}}]
    assert rule_problems(data, ["bob", "dave"], USERS) == [
        ((0, "target", "department"), 'no member of this queue is in department "sales"')]


def test_rule_problems_tolerate_plain_data_of_any_shape() -> None:
    assert rule_problems([None, 5, {"when": None, "target": None}], [], {}) == []
    dumped = AssignmentRule.model_validate(
        {"target": {"agents": ["bob"]}, "when": {"crm": "known"}}).model_dump()
    assert rule_problems([dumped], ["bob"], USERS) == []
