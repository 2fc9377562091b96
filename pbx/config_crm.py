"""The ``crm:`` section of the PBX configuration: the webhooks that receive call records, and
how long the PBX keeps retrying one that fails.

::

    crm:
      webhooks:
        - name: crm
          url: https://crm.example/hooks/calls
          secret: "a shared secret of 16 characters or more"
          events: [call.ended, call.missed]      # default: all six
          timeout: 5s
      retry: {max_attempts: 12, first_delay: 1s, max_delay: 10m}

Each webhook receives a signed JSON POST per call event (see :mod:`crmsync.webhooks` for the
signature scheme). Secrets never appear in a repr or a validation error. A reload applies
changes at once.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from pbx.durations import parse_duration

__all__ = ["EVENTS", "MIN_SECRET_LENGTH", "CrmSection", "RetrySection", "Webhook"]

# Secrets must not leak through a validation error either (pydantic prints the input).
SECRET = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)
FROZEN = ConfigDict(extra="forbid", frozen=True)

EVENTS: tuple[str, ...] = (
    "call.started", "call.answered", "call.ended", "call.missed", "recording.ready",
    "call.updated",
)
"""Every event a webhook can receive, in the order a call produces them (``call.updated``:
the record changed after it was final, or someone annotated it through the API)."""

MIN_SECRET_LENGTH = 16
"""Shorter secrets are too easy to guess; ``openssl rand -hex 32`` makes a good one."""

MAX_TIMEOUT = 120.0
"""A webhook slower than this holds a delivery slot for too long; fix the receiver instead."""

Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds as a float; the YAML may say ``30``, ``"500ms"``, ``"20s"``, ``"5m"`` or ``"1h"``."""

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?"
)
# RFC 3986 2: a URI is visible ASCII; blanks and control characters would be mangled in transit.
_URL_TEXT = re.compile(r"[\x21-\x7e]+")


def _check_url(value: str) -> str:
    """``value`` if it is an absolute http(s) URL with a host; ``ValueError`` otherwise."""
    if not _URL_TEXT.fullmatch(value):
        raise ValueError(f"invalid URL {value!r}: no spaces or non-ASCII characters")
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"invalid URL {value!r}: expected http:// or https://")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ValueError(f"invalid port in URL {value!r}") from None
    if not host:
        raise ValueError(f"invalid URL {value!r}: no host")
    if parts.username is not None or parts.password is not None:
        # They would show in logs; the signature already authenticates the PBX.
        raise ValueError(f"URL {value!r} must not carry a user name or password")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"invalid host {host!r} in URL {value!r}") from None
    if port == 0:
        raise ValueError(f"invalid port 0 in URL {value!r}")
    if parts.fragment:
        raise ValueError(f"URL {value!r} must not have a #fragment (it is never sent)")
    return value


class Webhook(BaseModel):
    """One entry of ``crm.webhooks``: where call events are POSTed and how they are signed."""

    model_config = SECRET

    name: str
    """Shown in logs and in the delivery log; rows of the outbox refer to it."""
    url: Annotated[str, AfterValidator(_check_url)]
    """An ``http://`` or ``https://`` URL; redirects are not followed."""
    secret: str = Field(min_length=MIN_SECRET_LENGTH, max_length=512, repr=False)
    """The HMAC-SHA256 key the receiver checks ``X-PBX-Signature`` with."""
    events: tuple[str, ...] = EVENTS
    """The events this webhook receives."""
    timeout: Duration = 5.0
    """How long one POST may take in all (connect, send, answer) before it counts as failed."""
    enabled: bool = True
    """False stops new events for this webhook; what is queued for it waits until it is
    enabled again."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                f"invalid webhook name {value!r}: use 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'"
            )
        return value

    @field_validator("events")
    @classmethod
    def _check_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("events must name at least one event (or set enabled: false)")
        for name in value:
            if name not in EVENTS:
                raise ValueError(f"unknown event {name!r}: use {', '.join(EVENTS)}")
        if len(set(value)) != len(value):
            raise ValueError("events lists an event twice")
        return value

    @field_validator("timeout")
    @classmethod
    def _check_timeout(cls, value: float) -> float:
        if not 0 < value <= MAX_TIMEOUT:
            raise ValueError(f"timeout must be more than 0 and at most {MAX_TIMEOUT:.0f}s")
        return value


class RetrySection(BaseModel):
    """``crm.retry``: the back-off of a failing delivery.

    Attempt ``n`` that fails is retried after ``first_delay * 2**(n-1)`` (at most ``max_delay``,
    less up to 20 % jitter); after ``max_attempts`` failed attempts the delivery is dead and
    waits for a replay. The defaults keep retrying for about 25 minutes.
    """

    model_config = FROZEN

    max_attempts: int = Field(default=12, ge=1, le=100)
    first_delay: Duration = 1.0
    max_delay: Duration = 600.0

    @field_validator("first_delay")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("first_delay must be more than 0")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> RetrySection:
        if self.max_delay < self.first_delay:
            raise ValueError("max_delay must be at least first_delay")
        return self


class CrmSection(BaseModel):
    """``crm:`` — the webhooks that receive call events, and their retry policy."""

    model_config = SECRET

    webhooks: tuple[Webhook, ...] = ()
    retry: RetrySection = RetrySection()
    create_leads: bool = False
    """A caller from outside whose number matches no contact or lead becomes a new lead
    (named by the caller's display name, else the number) when the call starts."""
    lookup_order: tuple[Literal["contact", "lead"], ...] = ("contact", "lead")
    """Which kinds of CRM record a caller's number is looked up in (screen pops, names on the
    phones, queue rules, the record a call is linked to), the first found first."""

    @field_validator("lookup_order")
    @classmethod
    def _kinds_once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one of contact, lead")
        if len(set(value)) != len(value):
            raise ValueError(f"each kind at most once, not {list(value)}")
        return value

    @field_validator("webhooks")
    @classmethod
    def _unique_names(cls, value: tuple[Webhook, ...]) -> tuple[Webhook, ...]:
        seen: dict[str, int] = {}
        for index, hook in enumerate(value):
            if hook.name in seen:
                raise ValueError(f'duplicate webhook name "{hook.name}" '
                                 f"(webhooks[{seen[hook.name]}] and webhooks[{index}])")
            seen[hook.name] = index
        return value
