"""The ``http:`` section of the PBX configuration: where the HTTP API listens and the API keys
it accepts, plus :func:`http_problems`, the cross-check of those keys against ``users:``.

An API key is a shared secret sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
Its role decides what it may do: ``agent`` keys act for one user only, ``supervisor`` and
``admin`` keys may do everything. Key values never appear in a repr or a validation error.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["MIN_KEY_LENGTH", "ApiKey", "HttpSection", "Problem", "http_problems",
           "parse_http_listen"]

# Key values must not leak through a validation error either (pydantic prints the input).
SECRET = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

Problem = tuple[tuple[str | int, ...], str]

MIN_KEY_LENGTH = 16
"""Shorter keys are too easy to guess; ``openssl rand -hex 24`` makes a good one."""

_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?"
)
_KEY_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# RFC 9110 5.5: a header field value; visible ASCII only, so the key survives any client's
# header handling (leading or trailing blanks would be stripped in transit).
_KEY_TEXT = re.compile(r"[\x21-\x7e]+")


def parse_http_listen(spec: str) -> tuple[str, int]:
    """Parse ``host:port`` (IPv6 as ``[::1]:8080``) into the host and the port.

    The host is an IP address (normalised) or a DNS name (lower-cased); port 0 binds a free
    port. Raises ``ValueError`` with a message fit to show the admin.
    """
    text = spec.strip()
    if text.startswith("["):
        host, bracket, port_text = text[1:].partition("]")
        if not bracket or not port_text.startswith(":"):
            raise ValueError(f"invalid listen address {spec!r}: expected [::1]:8080")
        port_text = port_text[1:]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError(f"invalid IPv6 address {host!r} in {spec!r}") from None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or not host:
            raise ValueError(f"invalid listen address {spec!r}: expected host:port, "
                             "e.g. 127.0.0.1:8080")
        if ":" in host:
            raise ValueError(f"IPv6 address in {spec!r} needs brackets, as in [::1]:8080")
        try:
            host = str(ipaddress.IPv4Address(host))
        except ValueError:
            if not _HOSTNAME.fullmatch(host) or host.replace(".", "").isdigit():
                raise ValueError(f"invalid host {host!r} in {spec!r}") from None
            host = host.lower()
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or int(port_text) > 65535:
        raise ValueError(f"invalid port {port_text!r} in {spec!r}: expected 0 to 65535")
    return host, int(port_text)


class ApiKey(BaseModel):
    """One entry of ``http.api_keys``: a named secret and what its holder may do."""

    model_config = SECRET

    name: str
    """Shown in logs and answers instead of the key itself."""
    key: str = Field(min_length=MIN_KEY_LENGTH, max_length=512, repr=False)
    """The secret, at least 16 visible ASCII characters."""
    role: Literal["agent", "supervisor", "admin"] = "admin"
    """``agent`` reads the queues and acts for ``user`` only; ``supervisor`` and ``admin`` may
    do everything, moving callers between queues included."""
    user: str | None = None
    """The user this key acts for; required for the ``agent`` role."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _KEY_NAME.fullmatch(value):
            raise ValueError(
                f"invalid key name {value!r}: use 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'"
            )
        return value

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: str) -> str:
        if not _KEY_TEXT.fullmatch(value):
            raise ValueError("key must be visible ASCII characters only (no spaces or "
                             "line breaks)")
        return value

    @model_validator(mode="after")
    def _agent_has_user(self) -> ApiKey:
        if self.role == "agent" and self.user is None:
            raise ValueError(f'agent key "{self.name}" must name the user it acts for (user:)')
        return self


class HttpSection(BaseModel):
    """``http:`` — the HTTP API (under ``/api/v1``): its socket and its API keys.

    With no keys every request except ``/api/v1/health`` is refused.
    """

    model_config = SECRET

    listen: str = "127.0.0.1:8080"
    """``host:port`` (``[::1]:8080`` for IPv6); port 0 binds a free port. Changing it needs a
    restart."""
    enabled: bool = True
    """False serves no HTTP at all."""
    api_keys: tuple[ApiKey, ...] = ()
    """The keys the API accepts; a reload applies changes at once."""

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        host, port = parse_http_listen(value)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @field_validator("api_keys")
    @classmethod
    def _unique_keys(cls, value: tuple[ApiKey, ...]) -> tuple[ApiKey, ...]:
        names: dict[str, int] = {}
        secrets: dict[str, int] = {}
        for index, entry in enumerate(value):
            if entry.name in names:
                raise ValueError(f'duplicate key name "{entry.name}" '
                                 f"(api_keys[{names[entry.name]}] and api_keys[{index}])")
            if entry.key in secrets:
                # Two holders with one secret could not be told apart (nor one revoked).
                raise ValueError(f"api_keys[{index}] has the same key as "
                                 f"api_keys[{secrets[entry.key]}]; give each its own")
            names[entry.name] = index
            secrets[entry.key] = index
        return value

    @property
    def host(self) -> str:
        """The address to bind: an IP address or a DNS name, without brackets."""
        return parse_http_listen(self.listen)[0]

    @property
    def port(self) -> int:
        """The TCP port to bind; 0 means a free one."""
        return parse_http_listen(self.listen)[1]


def http_problems(data: Mapping[str, Any]) -> list[Problem]:
    """Problems of ``http:`` against the rest of the configuration, as (key path, message),
    found on the plain data of the loaded YAML: every ``api_keys[].user`` names a user."""
    http = data.get("http")
    keys = http.get("api_keys") if isinstance(http, Mapping) else None
    if not isinstance(keys, list | tuple):
        return []
    users_data = data.get("users")
    users = {
        user.get("id")
        for user in (users_data if isinstance(users_data, list | tuple) else ())
        if isinstance(user, Mapping) and isinstance(user.get("id"), str)
    }
    problems: list[Problem] = []
    for index, entry in enumerate(keys):
        user = entry.get("user") if isinstance(entry, Mapping) else None
        if isinstance(user, str) and user not in users:
            problems.append(
                (("http", "api_keys", index, "user"), f'unknown user "{user}" (not in users)')
            )
    return problems
