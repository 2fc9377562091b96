"""Assignment rules of a queue: which agents may take a caller, chosen by what is known of the call.

Each ``queues.<name>`` entry may list ``rules``. They are tried top-down and the first rule
whose conditions all hold decides; when none matches, every member may take the caller with the
queue's own strategy. A rule looks like this::

    rules:
      - name: vip                       # optional, shown in logs and records
        when:                           # all given conditions must hold; omitted: always
          did: ["+81312345678"]         # the number called, in E.164
          caller: ["+8190", "+81312"]   # caller numbers or prefixes, in E.164
          days: [mon-fri]               # mon tue wed thu fri sat sun, or ranges
          hours: "09:00-18:00"          # local time, end excluded; may wrap midnight
          crm: known                    # known | unknown | contact | lead
          owner: alice                  # the caller's contact or lead belongs to this user
        target: {agents: [bob, carol]}  # or {department: NAME} | crm_owner | last_agent
                                        #    | all | none
        strategy: round_robin           # default: the queue's strategy
        fallback_after: 30s             # how long the target is tried (default: no limit)
        fallback: all                   # all: every member | none: end the call politely

A window that wraps midnight belongs to the day it starts: ``days: [fri]`` with
``hours: "22:00-06:00"`` holds from Friday 22:00 to Saturday 06:00. ``hours`` may also be a
list of windows (``["09:00-12:00", "13:00-18:00"]``).

Targets are restricted to the queue's members. A target that leaves nobody to ring (``crm_owner``
when the caller matches no contact or lead, or it has no owner; an owner or last agent who is
not a member; a department without members) behaves as "nobody available in time": the fallback
applies at once. ``none`` ends the call politely without ringing anyone.

Everything here is pure: :func:`assign` takes the facts of one call and returns an
:class:`Assignment` (or :class:`NoOne`) for :meth:`pbx.acd.QueueState.arrive`. What needs the
rest of the configuration (members, users, departments) is checked by :func:`rule_problems` on
the plain data, so the loader can report each problem where the admin wrote it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator, model_validator

from pbx.acd import Strategy
from pbx.durations import parse_duration

__all__ = [
    "CRM_FACTS", "DAYS", "TARGET_WORDS", "Assignment", "AssignmentRule", "CallFacts", "CrmFacts",
    "NoOne", "Problem", "RuleConditions", "RuleTarget", "assign", "rule_problems",
]

_FROZEN = ConfigDict(extra="forbid", frozen=True)

Duration = Annotated[float, BeforeValidator(parse_duration)]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names as rules write them, Monday first (``datetime.weekday()`` order)."""
TARGET_WORDS = ("all", "none", "crm_owner", "last_agent")
"""Targets written as a single word; the others are ``{agents: [...]}`` and
``{department: NAME}``."""
CRM_FACTS = ("known", "unknown", "contact", "lead")
"""What the ``crm`` condition may ask: any match, no match, a contact, a lead."""

TargetWord = Literal["all", "none", "crm_owner", "last_agent"]
Fallback = Literal["all", "none"]
Problem = tuple[tuple[str | int, ...], str]

_TARGET_HELP = "use all, none, crm_owner, last_agent, {agents: [ID, ...]} or {department: NAME}"
_USER_ID = re.compile(r"[a-z0-9._-]{1,64}")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_PREFIX = re.compile(r"\+[0-9]{1,15}")
_WINDOW = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FULL_DAYS = {
    "monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu",
    "friday": "fri", "saturday": "sat", "sunday": "sun",
}


def _listed(value: object) -> object:
    # One value may be written without the list brackets.
    return [value] if isinstance(value, str | int) and not isinstance(value, bool) else value


def _strings(value: object, what: str, example: str) -> list[str]:
    items = _listed(value)
    if not isinstance(items, list | tuple):
        raise ValueError(f"expected a list of {what}, such as [{example}], got {items!r}")
    if not items:
        raise ValueError(f"the list of {what} is empty: give at least one, or leave it out")
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and what == "numbers":
            # A number written without quotes loses its "+" and leading zeros in YAML.
            raise ValueError(f"write {item} in quotes with its +, such as \"{example}\"")
        if not isinstance(item, str):
            raise ValueError(f"expected {what} as strings, such as [{example}], got {item!r}")
    return [item.strip() for item in items]


def _day(text: str) -> int:
    word = text.strip().lower()
    word = _FULL_DAYS.get(word, word)
    if word not in DAYS:
        raise ValueError(
            f"unknown day {text!r}: use mon, tue, wed, thu, fri, sat or sun, "
            "or a range such as mon-fri"
        )
    return DAYS.index(word)


def _window(text: str) -> tuple[int, int]:
    """``"HH:MM-HH:MM"`` as (start, end) seconds since midnight; end may be 24:00."""
    match = _WINDOW.fullmatch(text.strip())
    h1, m1, h2, m2 = (int(part) for part in match.groups()) if match else (-1, 0, 0, 0)
    if h1 < 0:
        problem = "use HH:MM-HH:MM"
    elif h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        problem = "times go from 00:00 to 24:00"
    elif (h1, m1) == (h2, m2) or (h1, m1, h2, m2) == (0, 0, 24, 0):
        problem = "start and end are the same; for the whole day leave hours out"
    else:
        return h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60
    raise ValueError(
        f"invalid hours {text!r}: {problem}, such as 09:00-18:00 "
        "(the end is excluded; 22:00-06:00 wraps midnight)"
    )


def _user_id(value: str, what: str) -> str:
    if not _USER_ID.fullmatch(value):
        raise ValueError(
            f"invalid {what} {value!r}: a user id is 1 to 64 of a-z, 0-9, '.', '_', '-'"
        )
    return value


class RuleConditions(BaseModel):
    """The ``when:`` of a rule: every condition given must hold; none given holds always."""

    model_config = _FROZEN

    did: tuple[str, ...] | None = None
    """Numbers called (E.164); the call's DID must be one of them."""
    caller: tuple[str, ...] | None = None
    """Caller numbers or prefixes (E.164); the caller's number must start with one of them."""
    days: tuple[str, ...] | None = None
    """Day names (``mon`` ... ``sun``) after ranges are expanded, in week order."""
    hours: tuple[str, ...] | None = None
    """Local time windows ``HH:MM-HH:MM``, end excluded, normalised."""
    crm: Literal["known", "unknown", "contact", "lead"] | None = None
    owner: str | None = None
    """User id who owns the caller's contact or lead."""

    @field_validator("did", mode="before")
    @classmethod
    def _check_did(cls, value: object) -> object:
        if value is None:
            return value
        numbers = _strings(value, "numbers", "+81312345678")
        for number in numbers:
            if not _E164.fullmatch(number):
                raise ValueError(f"invalid DID {number!r}: use E.164, such as +81312345678")
        return numbers

    @field_validator("caller", mode="before")
    @classmethod
    def _check_caller(cls, value: object) -> object:
        if value is None:
            return value
        prefixes = _strings(value, "numbers", "+8190")
        for prefix in prefixes:
            if not _PREFIX.fullmatch(prefix):
                raise ValueError(
                    f"invalid caller {prefix!r}: use an E.164 number or prefix, such as +8190"
                )
        return prefixes

    @field_validator("days", mode="before")
    @classmethod
    def _check_days(cls, value: object) -> object:
        if value is None:
            return value
        chosen: set[int] = set()
        for item in _strings(value, "days", "mon-fri"):
            first, dash, last = item.partition("-")
            start = _day(first)
            end = _day(last) if dash else start
            # A range may wrap the weekend: fri-mon is fri, sat, sun, mon.
            chosen.update((start + step) % 7 for step in range((end - start) % 7 + 1))
        return [DAYS[index] for index in sorted(chosen)]

    @field_validator("hours", mode="before")
    @classmethod
    def _check_hours(cls, value: object) -> object:
        if value is None:
            return value
        windows = []
        for item in _strings(value, "hours", "09:00-18:00"):
            start, end = _window(item)
            windows.append(f"{_clock(start)}-{_clock(end)}")
        return windows

    @field_validator("owner")
    @classmethod
    def _check_owner(cls, value: str | None) -> str | None:
        return None if value is None else _user_id(value, "owner")

    @model_validator(mode="after")
    def _owner_needs_a_match(self) -> RuleConditions:
        if self.owner is not None and self.crm == "unknown":
            raise ValueError("owner asks for the caller's contact or lead; crm: unknown has none")
        return self

    def matches(self, facts: CallFacts) -> bool:
        """Whether the call meets every condition given."""
        if self.did is not None and facts.did not in self.did:
            return False
        if self.caller is not None and not facts.caller.startswith(self.caller):
            return False
        if (self.days is not None or self.hours is not None) and not self._in_time(
            facts.local_time
        ):
            return False
        crm = facts.crm
        if self.crm == "unknown" and crm is not None:
            return False
        if self.crm in ("known", "contact", "lead") and (
            crm is None or self.crm not in ("known", crm.kind)
        ):
            return False
        return self.owner is None or (crm is not None and crm.owner == self.owner)

    def _in_time(self, when: datetime) -> bool:
        today = when.weekday()
        if self.hours is None:
            return self.days is None or DAYS[today] in self.days
        now = when.hour * 3600 + when.minute * 60 + when.second
        for text in self.hours:
            start, end = _window(text)
            if start < end:
                day = today if start <= now < end else None
            elif now >= start:
                day = today
            else:
                # Past midnight in a wrapping window: it belongs to the day it started.
                day = (today - 1) % 7 if now < end else None
            if day is not None and (self.days is None or DAYS[day] in self.days):
                return True
        return False


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


class RuleTarget(BaseModel):
    """A target naming people: ``{agents: [ID, ...]}`` or ``{department: NAME}``."""

    model_config = _FROZEN

    agents: tuple[str, ...] | None = None
    department: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RuleTarget:
        if (self.agents is None) == (self.department is None):
            raise ValueError(f"give either agents or department: {_TARGET_HELP}")
        return self


def _target(value: object) -> object:
    if isinstance(value, RuleTarget):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TARGET_WORDS:
            return word
        raise ValueError(f"unknown target {value!r}: {_TARGET_HELP}")
    if not isinstance(value, Mapping):
        raise ValueError(f"unknown target {value!r}: {_TARGET_HELP}")
    given = {key: item for key, item in value.items() if item is not None}
    if set(given) == {"agents"}:
        agents = _listed(given["agents"])
        if not isinstance(agents, list | tuple):
            raise ValueError(f"agents: expected a list of user ids, such as [bob], got {agents!r}")
        if not agents:
            raise ValueError("agents: the list is empty; name at least one user id")
        for agent in agents:
            if not isinstance(agent, str):
                raise ValueError(f"agents: expected user ids, got {agent!r}")
            _user_id(agent, "agent")
            if agents.count(agent) > 1:
                raise ValueError(f"agents: {agent} is listed twice")
        return {"agents": list(agents)}
    if set(given) == {"department"}:
        name = given["department"]
        if not isinstance(name, str) or not name.strip() or _CONTROL.search(name):
            raise ValueError(f"department: expected a department name, got {name!r}")
        return {"department": name.strip()}
    others = sorted(str(key) for key in given if key not in ("agents", "department"))
    if others:
        raise ValueError(f"unknown target key {others[0]!r}: {_TARGET_HELP}")
    raise ValueError(f"give either agents or department: {_TARGET_HELP}")


class AssignmentRule(BaseModel):
    """One entry of a queue's ``rules``: conditions, a target, its strategy and fallback."""

    model_config = _FROZEN

    name: str | None = None
    when: RuleConditions | None = None
    """None: the rule matches every call."""
    target: TargetWord | RuleTarget = "all"
    strategy: Strategy | None = None
    """How the target's agents are chosen; None: the queue's strategy."""
    fallback_after: Duration | None = None
    """Seconds the target is tried before the fallback; None: until the caller's max_wait."""
    fallback: Fallback = "all"
    """When the target found nobody in time: ``all`` members, or ``none`` (end politely)."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or len(value) > 64 or _CONTROL.search(value)):
            raise ValueError(f"invalid rule name {value!r}: use 1 to 64 printable characters")
        return value

    @field_validator("target", mode="before")
    @classmethod
    def _check_target(cls, value: object) -> object:
        return _target(value)

    @model_validator(mode="after")
    def _none_takes_no_options(self) -> AssignmentRule:
        if self.target == "none" and (
            self.strategy is not None or self.fallback_after is not None or self.fallback != "all"
        ):
            raise ValueError(
                "target none ends the call without ringing anyone; "
                "strategy, fallback_after and fallback do not apply"
            )
        return self

    def matches(self, facts: CallFacts) -> bool:
        """Whether this rule applies to the call."""
        return self.when is None or self.when.matches(facts)


# --- evaluation ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CrmFacts:
    """The CRM contact or lead the caller's number matched."""

    kind: Literal["contact", "lead"]
    record_id: str
    name: str
    owner: str | None
    """The user id who owns the record, if any."""


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What is known of a call when it comes to a queue."""

    did: str | None
    """The number called (E.164), None for an internal call."""
    caller: str
    """The caller's number (E.164 for outside callers)."""
    local_time: datetime
    """The PBX's local wall time (naive) when the call came to the queue."""
    crm: CrmFacts | None
    last_agent: str | None
    """The user id of the agent who last handled this caller, if known."""


@dataclass(frozen=True, slots=True)
class Assignment:
    """Who may take the caller and how (see :meth:`pbx.acd.QueueState.arrive`).

    ``agents`` None means every member; an empty set means nobody could be targeted, and the
    fallback applies at once. ``fallback_after`` None means no deadline.
    """

    agents: frozenset[str] | None = None
    strategy: Strategy | None = None
    fallback_after: float | None = None
    fallback: Fallback = "all"
    rule: str | None = None
    """The matching rule's name (None: unnamed, or no rule matched)."""


@dataclass(frozen=True, slots=True)
class NoOne:
    """The matching rule's target is ``none``: end the call politely, ring nobody."""

    rule: str | None


def _targeted(
    rule: AssignmentRule,
    facts: CallFacts,
    members: Sequence[str],
    departments: Mapping[str, str | None],
) -> frozenset[str] | None:
    target = rule.target
    if target == "all":
        return None
    if isinstance(target, RuleTarget):
        if target.agents is not None:
            wanted = set(target.agents)
        else:
            wanted = {m for m in members if departments.get(m) == target.department}
    elif target == "crm_owner":
        owner = facts.crm.owner if facts.crm is not None else None
        wanted = {owner} if owner is not None else set()
    else:  # last_agent
        wanted = {facts.last_agent} if facts.last_agent is not None else set()
    return frozenset(m for m in members if m in wanted)


def assign(
    rules: Sequence[AssignmentRule],
    facts: CallFacts,
    members: Sequence[str],
    departments: Mapping[str, str | None],
) -> Assignment | NoOne:
    """The first rule matching ``facts`` decides who may take the caller.

    ``members`` are the queue's members; ``departments`` maps user ids to their department.
    The result names only members; an empty ``agents`` set (nobody to target) makes the queue
    apply the fallback at once. No matching rule: every member, with the queue's strategy.
    """
    for rule in rules:
        if not rule.matches(facts):
            continue
        if rule.target == "none":
            return NoOne(rule.name)
        return Assignment(
            agents=_targeted(rule, facts, members, departments),
            strategy=rule.strategy,
            fallback_after=rule.fallback_after,
            fallback=rule.fallback,
            rule=rule.name,
        )
    return Assignment()


# --- cross-checks on plain data -----------------------------------------------------------


def _entries(value: object) -> Iterator[tuple[int, Mapping[str, Any]]]:
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if isinstance(item, Mapping):
                yield index, item


def rule_problems(
    rules_data: list[Any], members: list[str], users: Mapping[str, str | None]
) -> list[Problem]:
    """Problems of one queue's ``rules`` that need the rest of the configuration.

    ``rules_data`` is the plain data of the list, ``members`` the queue's members, ``users``
    maps every user id to its department (or None). Each problem is (key path relative to the
    rules list, message): agents who are not members, unknown departments and owners, rule
    names used twice, and rules that can never be tried because one above matches every call.
    """
    problems: list[Problem] = []
    departments = {dept for dept in users.values() if dept is not None}
    names: dict[str, int] = {}
    catch_all: int | None = None
    for index, rule in _entries(rules_data):
        if catch_all is not None:
            problems.append(
                ((index,), f"never tried: rules[{catch_all}] above matches every call")
            )
        when = rule.get("when")
        if not isinstance(when, Mapping) or not any(v is not None for v in when.values()):
            catch_all = index if catch_all is None else catch_all
            when = {}
        name = rule.get("name")
        if isinstance(name, str):
            if name in names:
                problems.append(
                    ((index, "name"), f'duplicate rule name "{name}" (also rules[{names[name]}])')
                )
            else:
                names[name] = index
        owner = when.get("owner")
        if isinstance(owner, str) and owner not in users:
            problems.append(((index, "when", "owner"), f'unknown user "{owner}" (not in users)'))
        target = rule.get("target")
        if isinstance(target, str) and target.strip().lower() == "crm_owner" and (
            when.get("crm") == "unknown"
        ):
            problems.append(
                ((index, "target"), "crm_owner with crm: unknown: the caller has no owner")
            )
        if not isinstance(target, Mapping):
            continue
        agents = target.get("agents")
        if isinstance(agents, list | tuple):
            for position, agent in enumerate(agents):
                path: tuple[str | int, ...] = (index, "target", "agents", position)
                if not isinstance(agent, str) or agent in members:
                    continue
                if agent in users:
                    problems.append((path, f'"{agent}" is not a member of this queue'))
                else:
                    problems.append((path, f'unknown user "{agent}" (not in users)'))
        department = target.get("department")
        if isinstance(department, str):
            path = (index, "target", "department")
            if department not in departments:
                problems.append((path, f'unknown department "{department}" (no user has it)'))
            elif not any(users.get(member) == department for member in members):
                problems.append(
                    (path, f'no member of this queue is in department "{department}"')
                )
    return problems
