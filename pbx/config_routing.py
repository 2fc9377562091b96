"""Configuration of call routing: the dial plan, trunks, numbers (DIDs), ring groups, IVR menus.

The models here are frozen and refuse unknown keys, like every other section. What one entry
cannot check alone (a route naming a user that exists, a number listed twice once normalised,
an IVR nested too deep) is checked by :func:`pbx.config_routing_checks.routing_problems` on
the plain data, so every problem is reported with the key path where the admin wrote it.

Numbers are stored in E.164 (``+81312345678``): the admin may write them as dialled in
``dialplan.region`` (``03-1234-5678`` in JP) or internationally, and they are normalised with
``phonenumbers`` (Google's libphonenumber metadata) when the configuration is loaded.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import re
import string
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pbx.config_prompts import PromptSource
from pbx.durations import parse_duration

__all__ = [
    "IVR_KEYS",
    "MAX_IVR_DEPTH",
    "ROUTE_KINDS",
    "DialCode",
    "DialplanSection",
    "IvrMenu",
    "IvrOption",
    "Number",
    "RingGroup",
    "Route",
    "Trunk",
    "code_as_text",
    "e164",
    "ivr_prompts",
    "normalise_numbers",
]

_FROZEN = ConfigDict(extra="forbid", frozen=True)

Duration = Annotated[float, BeforeValidator(parse_duration)]

def _dial_code(value: str) -> str:
    if not re.fullmatch(r"[0-9*#]{1,16}", value):
        raise ValueError(f"invalid code {value!r}: use 1 to 16 of 0-9, * and #")
    return value


def _outside_prefix(value: str) -> str:
    if not re.fullmatch(r"[0-9]{1,4}", value):
        raise ValueError(f"invalid outside_prefix {value!r}: use 1 to 4 digits, such as 0 or 9")
    return value


def _trunk_prefix(value: str) -> str:
    if not re.fullmatch(r"[0-9*#]{0,16}", value):
        raise ValueError(f"invalid prefix {value!r}: use up to 16 of 0-9, * and #")
    return value


DialCode = Annotated[str, AfterValidator(_dial_code)]
"""What a phone dials: digits, ``*`` and ``#``."""

IVR_KEYS = "0123456789*#"
"""Keys an IVR option may sit on."""

MAX_IVR_DEPTH = 5
"""Menus nest at most this deep, the top menu being level 1."""

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_CALLER_ID = re.compile(r"\+?[0-9]{1,15}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?"
)
# Visual separators of a written or dialled number (RFC 3966 5.1.1) and blanks.
_DIALLED = re.compile(r"\+?[0-9 ()./-]{1,40}")
ROUTE_KINDS = ("user", "ring_group", "ivr", "queue")
"""The kinds of target a route may name, in the order they are checked."""
_INHERITED = (
    "option_prompt",
    "timeout",
    "max_retries",
    "on_failure",
    "back_key",
    "repeat_key",
    "direct_dial",
    "unavailable",
)
_TYPES: dict[int, str] = {
    phonenumbers.PhoneNumberType.MOBILE: "mobile",
    phonenumbers.PhoneNumberType.TOLL_FREE: "tollfree",
}


def e164(number: str, region: str) -> str | None:
    """``number`` in E.164 (``+81312345678``), or None if it is not a valid phone number.

    Takes the forms people write and phones dial: national (``03-1234-5678`` in region JP),
    international with ``+`` or without it (``81312345678``), or with the region's international
    prefix (``011 81 3 1234 5678`` in US); spaces, hyphens, dots and brackets are ignored.
    """
    text = number.strip()
    if not _DIALLED.fullmatch(text):
        return None
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"invalid name {value!r}: use 1 to 64 of A-Z, a-z, 0-9, '.', '_', '-'")
    return value


def _text(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    if _CONTROL.search(value):
        # It may end up in a SIP header; a line break there would forge headers.
        raise ValueError(f"{what} must not contain control characters or line breaks")
    return value


def _host(value: str) -> str:
    text = value.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(text):
        raise ValueError(f"invalid host {value!r}: expected a DNS name or an IP address")
    return text.lower()


def _ivr_key(value: str) -> str:
    if len(value) != 1 or value not in IVR_KEYS:
        raise ValueError(f"invalid key {value!r}: use one of 0-9, * and #")
    return value


IvrKey = Annotated[str, AfterValidator(_ivr_key)]
Name = Annotated[str, AfterValidator(_name)]


def code_as_text(value: object) -> object:
    """A code written without quotes may arrive as a number (``0``); it means the same."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Route(BaseModel):
    """Where a call goes: exactly one of ``{user: ID}``, ``{ring_group: NAME}``,
    ``{ivr: NAME}`` or ``{queue: NAME}``."""

    model_config = _FROZEN

    user: str | None = None
    ring_group: str | None = None
    ivr: str | None = None
    queue: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, value: object) -> object:
        if isinstance(value, Route | Mapping):
            return value
        raise ValueError(
            "expected {user: ID}, {ring_group: NAME}, {ivr: NAME} or {queue: NAME}, "
            f"got {value!r}"
        )

    @model_validator(mode="after")
    def _exactly_one(self) -> Route:
        given = [kind for kind in ROUTE_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            if not given:
                raise ValueError("give one of user, ring_group, ivr or queue")
            raise ValueError(
                f"give only one of user, ring_group, ivr or queue, not {' and '.join(given)}"
            )
        return self

    @property
    def kind(self) -> str:
        """``"user"``, ``"ring_group"``, ``"ivr"`` or ``"queue"``."""
        return next(kind for kind in ROUTE_KINDS if getattr(self, kind) is not None)

    @property
    def target(self) -> str:
        """The user id or the name of the group, IVR or queue."""
        return str(getattr(self, self.kind))


class DialplanSection(BaseModel):
    """``dialplan:`` — how numbers are read, and which trunks carry outside calls."""

    model_config = _FROZEN

    region: str = "US"
    """ISO 3166 alpha-2 country whose national number forms are understood."""
    outbound: tuple[Name, ...] | None = None
    """Trunks for outside calls, first tried first; None: every trunk, in the listed order."""
    outside_prefix: Annotated[str, AfterValidator(_outside_prefix)] | None = None
    """What an extension dials before an outside number (``0`` or ``9``); None: nothing."""
    timezone: str = "UTC"
    """IANA time zone of the site (``Asia/Tokyo``): queue rules' days and hours use it."""

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as "
                             "Asia/Tokyo or Europe/Berlin") from None
        return value

    @field_validator("region", mode="before")
    @classmethod
    def _region(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        region = value.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(
                f"unknown region {value!r}: expected an ISO 3166 country code such as US, JP, DE"
            )
        return region

    @field_validator("outside_prefix", mode="before")
    @classmethod
    def _prefix_text(cls, value: object) -> object:
        return code_as_text(value)

    @field_validator("outbound")
    @classmethod
    def _unique(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("each trunk may be listed once")
        return value


class Rate(BaseModel):
    """One entry of a trunk's ``rates:``: the price per minute of calls to numbers starting
    with ``prefix`` (E.164, ``+`` optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str
    per_minute: float = Field(ge=0, allow_inf_nan=False)

    @field_validator("prefix", mode="before")
    @classmethod
    def _e164_prefix(cls, value: object) -> object:
        value = code_as_text(value)
        if isinstance(value, str):
            digits = value.strip().removeprefix("+")
            if not digits.isdigit() or len(digits) > 15:
                raise ValueError(f"expected the start of an E.164 number such as +8190, "
                                 f"got {value!r}")
            return "+" + digits
        return value


def call_cost(trunk: Trunk, number: str, seconds: float) -> float | None:
    """What a call of ``seconds`` to ``number`` (E.164) costs through ``trunk``: the rate of
    the longest matching prefix, per started ``billing_increment``; None without a rate."""
    best: Rate | None = None
    for rate in trunk.rates:
        if number.startswith(rate.prefix) and (best is None
                                               or len(rate.prefix) > len(best.prefix)):
            best = rate
    if best is None:
        return None
    step = trunk.billing_increment
    billed = math.ceil(seconds / step - 1e-9) * step if seconds > 0 else 0.0
    return round(billed / 60.0 * best.per_minute, 6)


class Trunk(BaseModel):
    """One entry of ``trunks:``: a SIP provider the PBX registers with or that sends calls
    from known addresses."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Name
    host: str
    port: int = Field(default=5060, ge=1, le=65535)
    transport: Literal["udp", "tcp"] = "udp"
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    registration: bool = Field(default=False, alias="register")
    """``register:`` in YAML: register with the provider (RFC 3261 10) so it sends the DIDs'
    calls here. (A field called ``register`` would shadow ``BaseModel.register``.)"""
    expires: int = Field(default=3600, ge=60, le=86400)
    inbound_ips: tuple[str, ...] | None = None
    """Addresses (IPs or CIDRs) calls from this trunk come from; None: ``host`` if an IP."""
    number_format: Literal["e164", "national", "international"] = "e164"
    prefix: Annotated[str, AfterValidator(_trunk_prefix)] = ""
    """Put in front of every number called through this trunk (a tech prefix)."""
    caller_id: str | None = None
    from_domain: str | None = None
    dtmf_mode: Literal["auto", "rfc4733", "info", "inband"] = "auto"
    """How the PBX listens for keys from callers on this trunk (IVR menus): ``auto`` takes
    RFC 4733 when the call negotiated it, else in-band tones; SIP INFO always."""
    rates: tuple[Rate, ...] = ()
    """Prices per minute of calls through this trunk by number prefix (longest wins): an
    answered outside call's record gets its ``cost``."""
    billing_increment: Annotated[Duration, Field(ge=1, le=3600)] = 60.0
    """The provider bills each started increment (``60s``: per started minute, ``1s``: per
    second)."""

    @field_validator("host", "from_domain")
    @classmethod
    def _check_host(cls, value: str | None) -> str | None:
        return None if value is None else _host(value)

    @field_validator("rates")
    @classmethod
    def _one_rate_per_prefix(cls, value: tuple[Rate, ...]) -> tuple[Rate, ...]:
        seen: set[str] = set()
        for rate in value:
            if rate.prefix in seen:
                raise ValueError(f"prefix {rate.prefix} has two rates")
            seen.add(rate.prefix)
        return value

    @field_validator("username", "password")
    @classmethod
    def _check_credential(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _text(value, str(info.field_name))

    @field_validator("prefix", mode="before")
    @classmethod
    def _prefix_text(cls, value: object) -> object:
        return code_as_text(value)

    @field_validator("caller_id")
    @classmethod
    def _check_caller_id(cls, value: str | None) -> str | None:
        if value is not None and not _CALLER_ID.fullmatch(value):
            raise ValueError(f"invalid caller_id {value!r}: use digits with an optional leading +")
        return value

    @field_validator("inbound_ips")
    @classmethod
    def _check_ips(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        networks = []
        for item in value:
            try:
                networks.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise ValueError(
                    f"invalid address {item!r}: expected an IP address or a CIDR such as "
                    "203.0.113.0/24"
                ) from None
        return tuple(networks)

    @model_validator(mode="after")
    def _credentials(self) -> Trunk:
        if self.registration and (self.username is None or self.password is None):
            raise ValueError("register: true needs a username and a password")
        return self

    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """Where this trunk's calls come from: ``inbound_ips``, or ``host`` when it is an IP."""
        if self.inbound_ips is not None:
            return tuple(ipaddress.ip_network(item) for item in self.inbound_ips)
        try:
            return (ipaddress.ip_network(self.host),)
        except ValueError:
            return ()


class _Unparsed:
    """A number that did not parse in the dial plan's region (reported by ``Number``)."""

    def __init__(self, text: str, region: str) -> None:
        self.text = text
        self.region = region


class Number(BaseModel):
    """One entry of ``numbers:``: a DID and where its calls go."""

    model_config = _FROZEN

    number: str
    """E.164, normalised at load from the form the admin wrote."""
    type: Literal["local", "mobile", "tollfree"] = "local"
    """Kind of number; when not written, what the numbering plan says it is."""
    name: str = ""
    route: Route

    @model_validator(mode="before")
    @classmethod
    def _default_type(cls, data: object) -> object:
        if isinstance(data, Mapping) and data.get("type") is None:
            data = dict(data)
            data.pop("type", None)
            number = data.get("number")
            kind = None
            if isinstance(number, str) and _E164.fullmatch(number):
                with contextlib.suppress(phonenumbers.NumberParseException):
                    kind = phonenumbers.number_type(phonenumbers.parse(number, None))
            # A number that is not valid is reported as such; its type is moot then.
            data["type"] = _TYPES.get(kind, "local") if kind is not None else "local"
        return data

    @field_validator("number", mode="before")
    @classmethod
    def _check_number(cls, value: object) -> object:
        if isinstance(value, _Unparsed):
            raise ValueError(
                f"invalid number {value.text!r}: not a valid phone number in region "
                f"{value.region}; write it as dialled there or as +<country code><number>"
            )
        if isinstance(value, str) and (not _E164.fullmatch(value) or e164(value, "US") is None):
            raise ValueError(
                f"invalid number {value!r}: expected a valid phone number as +<country "
                "code><number>"
            )
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return value if value == "" else _text(value, "name")


class RingGroup(BaseModel):
    """One entry of ``ring_groups:``: users rung together or one after another."""

    model_config = _FROZEN

    members: tuple[str, ...]
    strategy: Literal["simultaneous", "sequential"] = "simultaneous"
    ring_seconds: int = Field(default=20, ge=1, le=600)
    """How long each step rings: everyone (simultaneous) or one member (sequential)."""
    rounds: Literal[1, 2] = 1
    """How many times a sequential group goes through its members."""
    fallback: Route | None = None
    """Where the call goes when nobody answered; None: the unavailable prompt, then hang up."""

    @field_validator("members")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("give at least one member (a user id)")
        seen: set[str] = set()
        for member in value:
            if member in seen:
                raise ValueError(f'member "{member}" is listed twice')
            seen.add(member)
        return value


class IvrOption(BaseModel):
    """What one key of a menu does: ``route`` somewhere or open a submenu (``menu``)."""

    model_config = _FROZEN

    label: str | None = None
    """Fills ``{label}`` in the menu's ``option_prompt``."""
    route: Route | None = None
    menu: IvrMenu | None = None
    prompt: PromptSource | None = None
    """Played for this option instead of the menu's ``option_prompt``."""

    @field_validator("label")
    @classmethod
    def _check_label(cls, value: str | None) -> str | None:
        return None if value is None else _text(value, "label")

    @model_validator(mode="after")
    def _one_action(self) -> IvrOption:
        if (self.route is None) == (self.menu is None):
            raise ValueError("give either route or menu (a submenu), not both or neither")
        if self.label is None and self.prompt is None:
            raise ValueError("give a label (spoken through option_prompt) or a prompt")
        return self


def _check_template(value: str) -> str:
    _text(value, "option_prompt")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValueError(f"invalid option_prompt {value!r}: {exc}") from None
    unknown = fields - {"label", "key"}
    if unknown:
        raise ValueError(
            f"option_prompt may use only {{label}} and {{key}}, not {{{sorted(unknown)[0]}}}"
        )
    if "key" not in fields:
        raise ValueError('option_prompt must say the key: include {key}, as in "press {key}"')
    return value


class IvrMenu(BaseModel):
    """One IVR menu (an entry of ``ivr:``, or an option's submenu).

    A submenu takes every key it does not write (all but ``welcome`` and ``options``) from the
    menu above it.
    """

    model_config = _FROZEN

    welcome: PromptSource | None = None
    """Played when the caller enters this menu."""
    option_prompt: Annotated[str, AfterValidator(_check_template)] = "For {label}, press {key}."
    options: dict[IvrKey, IvrOption] = Field(default_factory=dict)
    timeout: Duration = Field(default=5.0, gt=0, le=60)
    """How long to wait for a key after the prompts."""
    max_retries: int = Field(default=3, ge=0, le=10)
    """Menu replays after a timeout or an invalid key before ``on_failure``."""
    on_failure: Route | None = None
    """Where the call goes after the retries; None: a goodbye, then hang up."""
    back_key: IvrKey | None = "*"
    repeat_key: IvrKey | None = "#"
    direct_dial: bool = False
    """The caller may type an extension instead of choosing an option."""
    unavailable: PromptSource | None = None
    """Played when the chosen target has nobody available; None: ``prompts.unavailable``."""

    @field_validator("back_key", "repeat_key", mode="before")
    @classmethod
    def _key_text(cls, value: object) -> object:
        return code_as_text(value)

    @model_validator(mode="after")
    def _keys(self) -> IvrMenu:
        if self.back_key is not None and self.back_key == self.repeat_key:
            raise ValueError(f'back_key and repeat_key are both "{self.back_key}"')
        if not self.options and not self.direct_dial:
            raise ValueError("a menu needs options (or direct_dial: true)")
        # Submenus take the keys they do not write from the menu above (a Japanese
        # option_prompt written once applies to the whole tree). Done after validation, so a
        # bad value is reported once, where it was written.
        return _inherit(self, {key: getattr(self, key) for key in self.model_fields_set})


    def option_text(self, key: str, spoken_key: str | None = None) -> str | None:
        """The text announcing option ``key``: ``option_prompt`` with its label and key
        (``spoken_key`` in place of the key when given: ``"star"`` for ``*``), or None when
        the option has its own ``prompt`` or there is no such option."""
        option = self.options.get(key)
        if option is None or option.prompt is not None or option.label is None:
            return None
        return self.option_prompt.format(label=option.label, key=spoken_key or key)


def ivr_prompts(
    ivr: Mapping[str, IvrMenu],
) -> Iterator[tuple[tuple[str | int, ...], PromptSource]]:
    """Every prompt source written in ``ivr:`` (welcome, option prompts, unavailable) with its
    key path, for resolving them with the other prompts when the configuration loads."""

    def walk(
        menu: IvrMenu, path: tuple[str | int, ...], above: PromptSource | None
    ) -> Iterator[tuple[tuple[str | int, ...], PromptSource]]:
        if menu.welcome is not None:
            yield (*path, "welcome"), menu.welcome
        # An inherited `unavailable` is the one above: list it once, where it was written.
        if menu.unavailable is not None and menu.unavailable != above:
            yield (*path, "unavailable"), menu.unavailable
        for key, option in menu.options.items():
            if option.prompt is not None:
                yield (*path, "options", key, "prompt"), option.prompt
            if option.menu is not None:
                yield from walk(option.menu, (*path, "options", key, "menu"), menu.unavailable)

    for name, menu in ivr.items():
        yield from walk(menu, ("ivr", name), None)


def _inherit(menu: IvrMenu, values: Mapping[str, Any]) -> IvrMenu:
    changed: dict[str, IvrOption] = {}
    for key, option in menu.options.items():
        sub = option.menu
        if sub is None:
            continue
        update = {
            name: value
            for name, value in values.items()
            if name in _INHERITED and name not in sub.model_fields_set
        }
        if update:
            sub = sub.model_copy(update=update)
        mine = {name: getattr(sub, name) for name in sub.model_fields_set}
        changed[key] = option.model_copy(update={"menu": _inherit(sub, mine)})
    if not changed:
        return menu
    return menu.model_copy(update={"options": {**menu.options, **changed}})


IvrOption.model_rebuild()


def normalise_numbers(entries: object, region: str | None) -> object:
    """``numbers:`` entries with each ``number`` in E.164, read in ``region``.

    A number that does not parse is marked so that ``Number`` reports it with the region;
    without a region (the dial plan itself is invalid) only international forms are read.
    """
    if not isinstance(entries, list | tuple):
        return entries
    out: list[object] = []
    for entry in entries:
        text = entry.get("number") if isinstance(entry, Mapping) else None
        if isinstance(entry, Mapping) and isinstance(text, str):
            normal = e164(text, region or "US")
            if normal is not None and (region is not None or text.strip().startswith("+")):
                entry = {**entry, "number": normal}
            elif region is not None:
                entry = {**entry, "number": _Unparsed(text, region)}
        out.append(entry)
    return out
