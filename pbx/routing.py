"""Routing decisions: what a dialled number or an inbound DID reaches, as pure functions.

Nothing here does I/O or keeps state: each function takes the validated ``Config`` (and what
the caller knows about the call) and returns a decision, so the call controller stays a thin
layer and every rule is testable without sockets.

The rules, in the order they are tried for a call from an extension: a feature code reaches
the PBX's service; an extension or a user id reaches that user; one of our DIDs (in any form the
region accepts, with or without the outside prefix) reaches its number's route; an outside number
(after ``dialplan.outside_prefix`` when one is configured) reaches the outbound trunks in order,
for an authenticated caller only. A call from a trunk reaches nothing but our DIDs: anything
else is refused, so a trunk (or someone spoofing one) cannot dial extensions or, worse, dial back
out through another trunk at our expense.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import phonenumbers

from pbx.config import Config, User
from pbx.config_routing import Number, RingGroup, Route, Trunk, e164

__all__ = [
    "AVAILABLE",
    "MEMBER_STATES",
    "Refuse",
    "Target",
    "ToIvr",
    "ToOutside",
    "ToQueue",
    "ToRingGroup",
    "ToService",
    "ToUser",
    "dial_string",
    "match_did",
    "normalise",
    "outbound_caller_id",
    "ring_plan",
    "route_dialled",
    "route_target",
    "trunk_for_source",
]

AVAILABLE: Final = "available"
"""The one member state in which a ring group rings a user."""

MEMBER_STATES: Final = (AVAILABLE, "on_call", "do_not_disturb", "offline", "unregistered")
"""States a caller of :func:`ring_plan` may report for a member; only ``available`` rings."""


@dataclass(frozen=True, slots=True)
class ToUser:
    """Ring one user's registered phones."""

    user: User


@dataclass(frozen=True, slots=True)
class ToRingGroup:
    """Ring the group ``name`` (see :func:`ring_plan`)."""

    name: str
    group: RingGroup


@dataclass(frozen=True, slots=True)
class ToIvr:
    """Answer and run the IVR menu ``ivr.<name>``."""

    name: str


@dataclass(frozen=True, slots=True)
class ToQueue:
    """Put the caller in the queue ``queues.<name>``."""

    name: str


@dataclass(frozen=True, slots=True)
class ToService:
    """Answer with one of the PBX's own services; ``feature`` is its ``features:`` key."""

    feature: str


@dataclass(frozen=True, slots=True)
class ToOutside:
    """Call ``e164`` through ``trunks``, the first first, the next when one fails."""

    e164: str
    trunks: tuple[Trunk, ...]


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse the call with SIP ``status``; ``reason`` is a short token for logs and call
    records; ``prompt_name`` (a ``prompts:`` key) may be played before refusing, or None."""

    status: int
    reason: str
    prompt_name: str | None


Target = ToUser | ToRingGroup | ToIvr | ToQueue | ToService | ToOutside | Refuse
"""Where a call goes."""

_NOT_FOUND: Final = Refuse(404, "not_found", "not_found")
# RFC 3261 21.4.4: 403 Forbidden, the PBX understood and will not do it for this caller.
_FORBIDDEN: Final = Refuse(403, "forbidden", None)
_NO_TRUNK: Final = Refuse(403, "no_trunk", None)
_NON_DIGITS = re.compile(r"[^0-9]")


def normalise(number: str, region: str) -> str | None:
    """``number`` in E.164 (``+81312345678``), or None when it is not a valid phone number.

    Accepts national (``03-1234-5678`` in JP), international (``+81 3 1234 5678``,
    ``81312345678``) and international-prefix (``011 81 3 1234 5678`` in US) forms, with spaces,
    hyphens, dots and brackets. A SIP URI user's parameters (``;npdi``, RFC 4694) are ignored.
    """
    return e164(number.partition(";")[0], region)


def match_did(
    config: Config,
    request_uri_user: str | None,
    to_user: str | None,
    diversion_users: Iterable[str] = (),
) -> Number | None:
    """The DID an inbound trunk call is for: the Request-URI's user if it is one of
    ``numbers:``, else the To user's, else the first Diversion header's that is (RFC 5806:
    the number the call was diverted from, newest first). None when none matches."""
    region = config.dialplan.region
    for candidate in (request_uri_user, to_user, *diversion_users):
        if not candidate:
            continue
        normal = normalise(candidate, region)
        if normal is not None:
            number = config.number(normal)
            if number is not None:
                return number
    return None


def route_target(config: Config, route: Route) -> Target:
    """The target a configured ``route`` names (a number's, an IVR option's, a fallback)."""
    name = route.target
    if route.user is not None:
        user = config.user_by_id(name)
        return ToUser(user) if user is not None else _NOT_FOUND
    if route.ring_group is not None:
        group = config.ring_groups.get(name)
        return ToRingGroup(name, group) if group is not None else _NOT_FOUND
    if route.ivr is not None:
        return ToIvr(name) if name in config.ivr else _NOT_FOUND
    return ToQueue(name)


def route_dialled(
    config: Config, dialled: str, *, from_trunk: bool, caller: User | None
) -> Target:
    """Where a call for ``dialled`` (the Request-URI user) goes.

    ``from_trunk``: the call came in from a trunk; only our DIDs are reachable then.
    ``caller``: the authenticated user placing the call, or None; outside numbers need one.
    """
    # A telephone-subscriber user part may carry parameters (RFC 3261 19.1.6): `;isub=`,
    # `;phone-context=`; they do not change who is called here.
    text = dialled.partition(";")[0].strip()
    region = config.dialplan.region
    if from_trunk:
        number = config.number(normalise(text, region) or "")
        return route_target(config, number.route) if number is not None else _NOT_FOUND
    feature = config.feature_for_code(text)
    if feature is not None:
        return ToService(feature)
    user = config.user_by_extension(text) or config.user_by_id(text)
    if user is not None:
        return ToUser(user)
    number = config.number(normalise(text, region) or "")
    if number is not None:
        return route_target(config, number.route)
    emergency = _emergency(text, config.dialplan.outside_prefix, region)
    if emergency is not None:
        # Emergency numbers (110, 119, 911, 112, ...) are short codes, not E.164: they go out
        # through the trunks as dialled, with or without the outside prefix.
        if caller is None:
            return _FORBIDDEN
        trunks = config.outbound_trunks()
        return ToOutside(emergency, trunks) if trunks else _NO_TRUNK
    prefix = config.dialplan.outside_prefix
    if prefix is None:
        outside = normalise(text, region)
    elif text.startswith(prefix) and len(text) > len(prefix):
        outside = normalise(text[len(prefix) :], region)
    else:
        outside = None
    if outside is None:
        return _NOT_FOUND
    number = config.number(outside)
    if number is not None:
        # Our own DID dialled as an outside number stays inside: no trunk, no charge.
        return route_target(config, number.route)
    if caller is None:
        return _FORBIDDEN
    trunks = config.outbound_trunks()
    return ToOutside(outside, trunks) if trunks else _NO_TRUNK


def _emergency(text: str, prefix: str | None, region: str) -> str | None:
    """The emergency number ``text`` dials (the outside prefix dropped), or None."""
    for candidate in (text, text[len(prefix):] if prefix and text.startswith(prefix) else ""):
        if candidate.isdigit() and phonenumbers.is_emergency_number(candidate, region):
            return candidate
    return None


def dial_string(trunk: Trunk, e164: str, *, region: str) -> str:
    """``e164`` written as ``trunk`` wants the called number: its ``prefix``, then the number
    in E.164 (``+81312345678``), international (``81312345678``) or national form.

    The national form is the number as dialled from ``region`` (``dialplan.region``):
    ``0312345678`` within JP, and with the region's international prefix for a number abroad
    (``01181312345678`` from US).
    """
    if not e164.startswith("+"):
        return trunk.prefix + e164  # a short code (emergency), dialled as it is
    if trunk.number_format == "e164":
        return trunk.prefix + e164
    if trunk.number_format == "international":
        return trunk.prefix + e164.lstrip("+")
    parsed = phonenumbers.parse(e164, None)
    if parsed.country_code == phonenumbers.country_code_for_region(region):
        written = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    else:
        written = phonenumbers.format_out_of_country_calling_number(parsed, region)
    return trunk.prefix + _NON_DIGITS.sub("", written)


def outbound_caller_id(trunk: Trunk, caller: User | None) -> str | None:
    """The number presented on an outside call: the user's ``caller_id``, else the trunk's."""
    if caller is not None and caller.caller_id is not None:
        return caller.caller_id
    return trunk.caller_id


def trunk_for_source(config: Config, ip: str) -> Trunk | None:
    """The IP-authenticated trunk a request from ``ip`` came from, or None."""
    try:
        address = ipaddress.ip_address(ip.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    for trunk in config.trunks:
        for network in trunk.networks():
            if address.version == network.version and address in network:
                return trunk
    return None


def ring_plan(
    group: RingGroup, members_state: Mapping[str, str], users: Mapping[str, User]
) -> list[list[User]]:
    """The steps in which a ring group rings its members: each step is rung together for
    ``group.ring_seconds``, the next when nobody answered.

    ``members_state`` maps a user id to its state (see :data:`MEMBER_STATES`); only members
    ``available`` are rung, and a member missing from it counts as unregistered. ``users``
    maps user ids to users (``config.user_index()``). Simultaneous: one step with every
    available member. Sequential: one step per available member, in the listed order, the whole
    list ``rounds`` times. An empty plan means nobody can be rung: go to ``fallback``.
    """
    ready = [
        users[member]
        for member in group.members
        if members_state.get(member) == AVAILABLE and member in users
    ]
    if not ready:
        return []
    if group.strategy == "simultaneous":
        return [ready]
    return [[user] for _ in range(group.rounds) for user in ready]
