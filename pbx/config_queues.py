"""Configuration of call queues (``queues:``): members, strategy, caps, music, announcements,
the caller's keys, where callers go when the queue cannot take them, and assignment rules.

The design's caps are hard limits: at most 25 callers waiting per queue and at most 25 minutes
of waiting; lower values may be configured, higher ones are refused. What needs the rest of the
configuration (members who are users, routes naming things that exist, rules naming members) is
checked by :func:`queue_problems` on the plain data, so each problem points at its key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from pbx.acd import MAX_CALLERS, MAX_WAIT, STRATEGIES
from pbx.acdrules import AssignmentRule, rule_problems
from pbx.config_prompts import MusicSource, PromptSource
from pbx.config_routing import Route
from pbx.durations import parse_duration

__all__ = ["QUEUE_KEYS", "QueueConfig", "queue_problems", "queue_prompts"]

_FROZEN = ConfigDict(extra="forbid", frozen=True)
Duration = Annotated[float, BeforeValidator(parse_duration)]
QUEUE_KEYS = "0123456789*#"
Problem = tuple[tuple[str | int, ...], str]


def _key(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and (len(value) != 1 or value not in QUEUE_KEYS):
        raise ValueError(f"invalid key {value!r}: use one of 0-9, * or #")
    return value


Key = Annotated[str, BeforeValidator(_key)]


class QueueConfig(BaseModel):
    """One entry of ``queues:``."""

    model_config = _FROZEN

    members: tuple[str, ...] = ()
    """User ids of the agents, in order (the order round robin follows). Members are logged
    in by default and take calls whenever their phone is registered and they are available."""
    strategy: Literal["simultaneous", "longest_idle", "fewest_calls", "round_robin"] = (
        "longest_idle"
    )
    max_callers: int = Field(default=MAX_CALLERS, ge=1, le=MAX_CALLERS)
    """Callers waiting at most; the next one goes to ``on_full``."""
    max_wait: Duration = Field(default=MAX_WAIT, gt=0, le=MAX_WAIT)
    """The longest a caller waits (``25m`` at most) before going to ``on_timeout``."""
    ring_timeout: Duration = Field(default=20.0, gt=0, le=300)
    """How long one offer rings an agent before it counts as missed."""
    retry: Duration = Field(default=5.0, ge=0, le=300)
    """After every free agent has missed or rejected a caller, wait this long before offering
    the caller to them again."""
    wrap_up: Duration = Field(default=0.0, ge=0, le=3600)
    """Seconds after each queue call before the agent is offered the next one."""
    max_missed: int = Field(default=3, ge=0, le=100)
    """Offers missed or rejected in a row before the agent is paused; 0 never pauses."""
    weight: float = Field(default=1.0, gt=0, le=100)
    """An agent in several queues takes the caller with the highest wait times weight."""
    service_level: Duration = Field(default=20.0, ge=0, le=3600)
    """The service level counts callers answered within this many seconds."""
    music: MusicSource | None = None
    """Music while waiting: ``default``, ``{file: ...}`` or ``{url: ...}``; unset, the PBX's
    ``media.hold_music``."""
    greeting: PromptSource | None = None
    """Played once when the caller arrives, before the music."""
    announcements: tuple[PromptSource, ...] = ()
    """Played in turn, one every ``announce_every``, between stretches of music."""
    announce_every: Duration = Field(default=60.0, ge=10, le=MAX_WAIT)
    announce_position: bool = False
    """Tell the caller their place in line (at arrival and with each announcement)."""
    announce_wait: bool = False
    """Tell the caller the estimated wait, from the queue's measured handling times."""
    announce_only_better: bool = False
    """Say position and wait only when they changed for the better since last said."""
    on_full: Route | None = None
    """Where a caller goes when ``max_callers`` are waiting; unset: a polite message."""
    on_timeout: Route | None = None
    """Where a caller goes after ``max_wait``; unset: a polite message."""
    exit_key: Key | None = None
    """A key the caller presses to leave the queue for ``on_exit``."""
    on_exit: Route | None = None
    callback_key: Key | None = None
    """A key the caller presses to be called back, keeping their place in line."""
    callback_attempts: int = Field(default=3, ge=1, le=10)
    """Times the PBX dials a callback caller who does not answer, before giving up."""
    callback_retry: Duration = Field(default=60.0, ge=5, le=3600)
    """Between two attempts to dial a callback caller."""
    rules: tuple[AssignmentRule, ...] = ()
    """Assignment rules, tried top-down; the first that matches says who is offered the
    caller (see docs/config.md)."""

    @field_validator("members", mode="before")
    @classmethod
    def _unique_members(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            seen: set[object] = set()
            for member in value:
                if member in seen:
                    raise ValueError(f"member {member!r} is listed twice")
                seen.add(member)
        return value

    @model_validator(mode="after")
    def _keys(self) -> QueueConfig:
        if self.exit_key is not None and self.on_exit is None:
            raise ValueError("exit_key needs on_exit: where the caller goes")
        if self.on_exit is not None and self.exit_key is None:
            raise ValueError("on_exit needs exit_key: the key that leaves the queue")
        if self.exit_key is not None and self.exit_key == self.callback_key:
            raise ValueError(f"exit_key and callback_key are both {self.exit_key!r}")
        return self


def queue_prompts(queues: Mapping[str, QueueConfig]) -> list[tuple[tuple[str | int, ...],
                                                                   PromptSource]]:
    """Every prompt written under ``queues:`` with its key path (resolved at load)."""
    found: list[tuple[tuple[str | int, ...], PromptSource]] = []
    for name, queue in queues.items():
        if queue.greeting is not None:
            found.append((("queues", name, "greeting"), queue.greeting))
        for index, source in enumerate(queue.announcements):
            found.append((("queues", name, "announcements", index), source))
    return found


def queue_problems(data: Mapping[str, Any]) -> list[Problem]:
    """Problems of ``queues:`` that need the rest of the config (members who are users,
    rules naming members and departments), as (key path, message). Routes are checked with
    every other route by :func:`pbx.config_routing_checks.routing_problems`."""
    problems: list[Problem] = []
    queues = data.get("queues")
    if not isinstance(queues, Mapping):
        return problems
    users: dict[str, str | None] = {}
    raw_users = data.get("users")
    if isinstance(raw_users, list):
        for user in raw_users:
            if isinstance(user, Mapping) and isinstance(user.get("id"), str):
                department = user.get("department")
                users[user["id"]] = department if isinstance(department, str) else None
    for name, queue in queues.items():
        if not isinstance(queue, Mapping):
            continue
        members = queue.get("members")
        names: list[str] = []
        if isinstance(members, list):
            for index, member in enumerate(members):
                if isinstance(member, str):
                    names.append(member)
                    if member not in users:
                        problems.append(((
                            "queues", name, "members", index),
                            f'unknown user "{member}" (not in users)'))
        strategy = queue.get("strategy")
        if isinstance(strategy, str) and strategy not in STRATEGIES:
            continue  # the model reports it
        rules = queue.get("rules")
        if isinstance(rules, list):
            for path, message in rule_problems(rules, names, users):
                problems.append((("queues", name, "rules", *path), message))
    return problems
