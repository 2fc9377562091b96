"""The sections of the PBX configuration: ``sip``, ``media``, ``storage``, ``recording``,
``features``, ``logging`` and ``users`` (routing is in :mod:`pbx.config_routing`, prompts in
:mod:`pbx.config_prompts`); :class:`pbx.config.Config` puts them together."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pbx.config_prompts import (
    FetchSection,
    MusicSource,
    base_dir,
    check_language,
)
from pbx.config_routing import (
    DialCode,
)
from pbx.durations import parse_duration

FROZEN = ConfigDict(extra="forbid", frozen=True)

Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds as a float; the YAML may say ``30``, ``"500ms"``, ``"20s"``, ``"5m"`` or ``"1h"``."""

_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?"
)
_USER_ID = re.compile(r"[a-z0-9._-]{1,64}")
_EXTENSION = re.compile(r"[0-9]{1,15}")
_CALLER_ID = re.compile(r"\+?[0-9]{1,15}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _normal_host(host: str) -> str | None:
    """``host`` as an IP address or lower-case DNS name, or None if it is neither."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    return host.lower() if _HOSTNAME.fullmatch(host) else None


def parse_listen(spec: str) -> dict[str, Any]:
    """Parse ``transport:host:port`` (IPv6 as ``udp:[::1]:5060``) into its three parts.

    Raises ``ValueError`` with a message fit to show the admin.
    """
    transport, sep, rest = spec.strip().partition(":")
    transport = transport.lower()
    if not sep or not rest:
        raise ValueError(f"invalid listen address {spec!r}: expected transport:host:port")
    if transport not in ("udp", "tcp"):
        raise ValueError(f"unknown transport {transport!r} in {spec!r}: use udp or tcp")
    if rest.startswith("["):
        host, bracket, port_text = rest[1:].partition("]")
        if not bracket or not port_text.startswith(":"):
            raise ValueError(f"invalid listen address {spec!r}: expected udp:[::1]:5060")
        port_text = port_text[1:]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError(f"invalid IPv6 address {host!r} in {spec!r}") from None
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon or not host:
            raise ValueError(f"invalid listen address {spec!r}: expected transport:host:port")
        if ":" in host:
            raise ValueError(f"IPv6 address in {spec!r} needs brackets, as in udp:[::1]:5060")
        normal = _normal_host(host)
        if normal is None:
            raise ValueError(f"invalid host {host!r} in {spec!r}")
        host = normal
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or int(port_text) > 65535:
        raise ValueError(f"invalid port {port_text!r} in {spec!r}: expected 0 to 65535")
    return {"transport": transport, "host": host, "port": int(port_text)}


class ListenAddress(BaseModel):
    """One SIP listening socket, written ``transport:host:port``. Port 0 binds a free port."""

    model_config = FROZEN

    transport: Literal["udp", "tcp"]
    host: str
    port: int = Field(ge=0, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _from_spec(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_listen(value)
        if isinstance(value, Mapping):
            return value
        raise ValueError(f"expected a string transport:host:port, got {value!r}")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def _printable(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    if _CONTROL.search(value):
        # It ends up in a SIP header; a line break there would forge headers.
        raise ValueError(f"{what} must not contain control characters or line breaks")
    return value


class SipSection(BaseModel):
    """``sip:`` — signalling: sockets, domain, registrar limits and RFC 3261 timers."""

    model_config = FROZEN

    listen: tuple[ListenAddress, ...]
    domain: str
    realm: str = ""
    """Digest realm (RFC 3261 22.1); filled from ``domain`` when not given."""
    user_agent: str = "PBX"
    min_expires: int = Field(default=60, ge=1)
    max_expires: int = Field(default=3600, ge=1)
    default_expires: int = Field(default=3600, ge=1)
    nonce_ttl: Duration = Field(default=300.0, gt=0)
    auth_algorithms: tuple[Literal["SHA-256", "MD5"], ...] = Field(
        default=("SHA-256", "MD5"), min_length=1
    )
    """Digest algorithms offered in every challenge, most preferred first (RFC 8760 2.4)."""
    ring_timeout: Duration = Field(default=60.0, gt=0)
    max_message_size: int = Field(default=65535, ge=1500, le=1_048_576)
    t1: Duration = Field(default=0.5, gt=0)
    t2: Duration = Field(default=4.0, gt=0)
    t4: Duration = Field(default=5.0, gt=0)

    @field_validator("auth_algorithms")
    @classmethod
    def _unique_algorithms(
        cls, value: tuple[str, ...]
    ) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("each algorithm may be listed once")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_realm(cls, data: object) -> object:
        # The digest realm defaults to the domain (RFC 3261 22.1: the realm is usually the
        # domain the user registers under), normalised the same way.
        if isinstance(data, Mapping) and data.get("realm") is None:
            data = dict(data)
            data.pop("realm", None)
            domain = data.get("domain")
            if isinstance(domain, str):
                data["realm"] = domain.strip().lower()
        return data

    @field_validator("listen", mode="before")
    @classmethod
    def _some_listen(cls, value: object) -> object:
        if isinstance(value, list | tuple) and not value:
            raise ValueError("give at least one address to listen on, e.g. udp:0.0.0.0:5060")
        return value

    @field_validator("domain")
    @classmethod
    def _check_domain(cls, value: str) -> str:
        normal = _normal_host(value.strip())
        if normal is None:
            raise ValueError(f"invalid domain {value!r}: expected a DNS name or an IP address")
        return normal

    @field_validator("realm")
    @classmethod
    def _check_realm(cls, value: str) -> str:
        _printable(value, "realm")
        if '"' in value or "\\" in value:
            raise ValueError('realm must not contain " or \\')
        return value

    @field_validator("user_agent")
    @classmethod
    def _check_user_agent(cls, value: str) -> str:
        return _printable(value, "user_agent")

    @field_validator("max_expires")
    @classmethod
    def _check_max_expires(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_expires")
        if isinstance(low, int) and value < low:
            raise ValueError(f"max_expires ({value}) must be >= min_expires ({low})")
        return value

    @field_validator("default_expires")
    @classmethod
    def _check_default_expires(cls, value: int, info: ValidationInfo) -> int:
        low, high = info.data.get("min_expires"), info.data.get("max_expires")
        if isinstance(low, int) and isinstance(high, int) and not low <= value <= high:
            raise ValueError(
                f"default_expires ({value}) must lie between min_expires ({low}) "
                f"and max_expires ({high})"
            )
        return value

    @field_validator("t2")
    @classmethod
    def _check_t2(cls, value: float, info: ValidationInfo) -> float:
        t1 = info.data.get("t1")
        # RFC 3261 17.1.2.2: retransmissions double from T1 up to T2, so T2 < T1 is meaningless.
        if isinstance(t1, float) and value < t1:
            raise ValueError(f"t2 ({value:g}s) must not be shorter than t1 ({t1:g}s)")
        return value

    @property
    def digest_realm(self) -> str:
        """The realm offered in digest challenges: ``realm``, which defaults to ``domain``."""
        return self.realm or self.domain


class MediaSection(BaseModel):
    """``media:`` — RTP port range, the address put in SDP, the dead-media timeout, and what
    the PBX plays: hold music, the default prompt language, how URLs are fetched."""

    model_config = FROZEN

    rtp_ports: tuple[int, int] = (10000, 20000)
    address: str | None = None
    rtp_timeout: Duration = Field(default=60.0, ge=0)
    language: str = "en"
    """Language of text prompts that do not name one."""
    hold_music: MusicSource = MusicSource.model_validate("default")
    """What a held party hears."""
    fetch: FetchSection = FetchSection()
    shared_port: bool = False
    """Relay every call's RTP through one UDP port (IPv4 only), telling the legs apart by the
    phones' addresses: about twice the calls per core, but a phone behind NAT that sends from
    another address than its SDP says cannot be reached. Changing it needs a restart."""

    @field_validator("language")
    @classmethod
    def _check_language(cls, value: str) -> str:
        return check_language(value)

    @field_validator("rtp_ports", mode="before")
    @classmethod
    def _two_ports(cls, value: object) -> object:
        if isinstance(value, list | tuple) and len(value) != 2:
            raise ValueError(f"expected [first, last], two port numbers, got {len(value)} items")
        return value

    @field_validator("rtp_ports")
    @classmethod
    def _check_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not (1024 <= low <= 65535 and 1024 <= high <= 65535):
            raise ValueError(f"ports must lie within 1024..65535, got [{low}, {high}]")
        if low >= high:
            raise ValueError(f"first port must be below the last, got [{low}, {high}]")
        if low % 2:
            # RFC 3550 11: RTP takes an even port and RTCP the odd one above it.
            raise ValueError(f"first port must be even (RTP uses even ports), got {low}")
        return value

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            address = ipaddress.ip_address(value.strip())
        except ValueError:
            raise ValueError(f"expected an IP address, got {value!r}") from None
        if address.is_unspecified:
            raise ValueError(f"{value} cannot be advertised in SDP; give this host's address")
        return str(address)


def _resolve_sqlite(url: str, base: Path) -> str:
    match = re.fullmatch(r"(sqlite(?:\+\w+)?:///)([^?]*)(\?.*)?", url)
    if not match:
        return url
    prefix, path, query = match.group(1), match.group(2), match.group(3) or ""
    # sqlite:////abs stays absolute; "" and ":memory:" are in-memory databases.
    if not path or path.startswith("/") or path == ":memory:" or path.startswith("file:"):
        return url
    return prefix + os.path.normpath(base / os.path.expanduser(path)) + query


class StorageSection(BaseModel):
    """``storage:`` — where call records, CRM data and recordings live.

    Relative paths (and ``sqlite:///relative.db``) resolve against the directory of the config
    file when loaded with ``load_config``.
    """

    model_config = FROZEN

    database: str = "sqlite:////var/lib/pbx/pbx.db"
    recordings: Path = Path("/var/lib/pbx/recordings")
    cache: Path | None = None
    """Where fetched and spoken prompts are kept; ``prompt-cache`` next to ``recordings``."""
    journal: Path | None = None
    """The call-record journal (what a killed PBX had not yet written to the database);
    ``journal`` next to ``recordings``. One per PBX node."""

    @field_validator("database")
    @classmethod
    def _check_database(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(\+[A-Za-z0-9_]+)?://.*", value):
            raise ValueError(
                f"expected an SQLAlchemy URL such as sqlite:////var/lib/pbx/pbx.db or "
                f"postgresql://user:pass@host/db, got {value!r}"
            )
        base = base_dir(info)
        return _resolve_sqlite(value, base) if base is not None else value

    @field_validator("recordings", mode="before")
    @classmethod
    def _check_recordings(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str | Path):
            return value
        if not str(value).strip():
            raise ValueError("recordings must name a directory")
        path = Path(os.path.expanduser(str(value).strip()))
        base = base_dir(info)
        if base is not None and not path.is_absolute():
            path = Path(os.path.normpath(base / path))
        return path

    @field_validator("cache", "journal", mode="before")
    @classmethod
    def _check_cache(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str | Path):
            return value
        if not str(value).strip():
            raise ValueError(f"{info.field_name} must name a directory")
        return cls._check_recordings(value, info)

    @property
    def cache_dir(self) -> Path:
        """``cache``, or ``prompt-cache`` beside the recordings directory."""
        if self.cache is not None:
            return self.cache
        return self.recordings.parent / "prompt-cache"

    @property
    def journal_dir(self) -> Path:
        """``journal``, or ``journal`` beside the recordings directory."""
        if self.journal is not None:
            return self.journal
        return self.recordings.parent / "journal"


_LEVELS = ("debug", "info", "warning", "error")


def _retention(value: object) -> object:
    if isinstance(value, tuple):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if len(text) >= 2 and text[:-1].isdigit() and text[-1] in "dmy":
            amount = int(text[:-1])
            if amount < 1:
                raise ValueError("retention must be at least 1")
            return (amount, text[-1])
    raise ValueError(f"invalid retention {value!r}: write e.g. 3m or 6m (months), 90d (days) "
                     "or 1y (years), or null to keep recordings")


class RecordingSection(BaseModel):
    """``recording:`` — stereo recordings of answered calls under ``storage.recordings``."""

    model_config = FROZEN

    enabled: bool = False
    format: Literal["wav", "flac"] = "wav"
    """WAV stays playable up to the last second if the PBX is killed; FLAC is smaller."""
    quota_minutes: float | None = Field(default=1000.0, ge=0)
    """Minutes of recordings the PBX keeps at most; once reached, new calls are not recorded
    (their record says so) until recordings expire or the quota is raised. null: no quota."""
    retention: Annotated[tuple[int, str], BeforeValidator(_retention)] | None = (6, "m")
    """How long recordings are kept: ``3m``/``6m`` (calendar months), ``90d`` (days) or
    ``1y``; null keeps them. Calls under a legal hold are kept whatever this says."""

    @property
    def retention_text(self) -> str | None:
        return None if self.retention is None else f"{self.retention[0]}{self.retention[1]}"


class FeaturesSection(BaseModel):
    """``features:`` — the codes phones dial to reach the PBX's own services; ``null`` turns a
    service off."""

    model_config = FROZEN

    echo_test: DialCode | None = "*43"
    """A spoken explanation and a beep, then the caller hears their own voice."""
    key_test: DialCode | None = "*44"
    """Every key the caller presses is read back."""
    available: DialCode | None = "*21"
    """The caller's user becomes available: ring groups and queues ring them again."""
    do_not_disturb: DialCode | None = "*22"
    """The caller's user takes no ring group or queue calls until they dial ``available``."""
    offline: DialCode | None = "*23"
    """The caller's user is away: like do-not-disturb, shown as offline."""
    agent_login: DialCode | None = "*31"
    """The caller logs in to every queue they are a member of."""
    agent_logout: DialCode | None = "*32"
    """The caller logs out of their queues (after the call they are on, if any)."""
    agent_pause: DialCode | None = "*33"
    """The caller takes no queue calls for now (reason "paused from phone")."""
    agent_unpause: DialCode | None = "*34"
    """The caller takes queue calls again."""

    @field_validator("echo_test", "key_test", "available", "do_not_disturb", "offline",
                     "agent_login", "agent_logout", "agent_pause", "agent_unpause",
                     mode="before")
    @classmethod
    def _code_as_text(cls, value: object) -> object:
        # A code written without quotes may arrive as a number (`43`); it means the same.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class LoggingSection(BaseModel):
    """``logging:`` — how much the PBX logs."""

    model_config = FROZEN

    level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in _LEVELS:
            return value.strip().lower()
        return value


class User(BaseModel):
    """One entry of ``users:``: a person with an extension and SIP credentials."""

    model_config = FROZEN

    id: str
    extension: str
    password: str = Field(repr=False)
    name: str = ""
    role: Literal["agent", "supervisor", "admin"] = "agent"
    caller_id: str | None = None
    max_contacts: int = Field(default=5, ge=1, le=100)
    call_waiting: bool = True
    """Ring the user's phones even while they are on a call; False answers 486 Busy Here."""
    dtmf_mode: Literal["auto", "rfc4733", "info", "inband"] = "auto"
    """How the PBX listens for keys from this user's phone."""
    department: str | None = Field(default=None, min_length=1, max_length=64)
    """The team the user belongs to; queue assignment rules can target a department."""

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: object) -> object:
        if isinstance(data, Mapping) and data.get("name") is None:
            data = dict(data)
            data.pop("name", None)
            if isinstance(data.get("id"), str):
                data["name"] = data["id"]
        return data

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _USER_ID.fullmatch(value):
            raise ValueError(f"invalid id {value!r}: use 1 to 64 of a-z, 0-9, '.', '_' and '-'")
        return value

    @field_validator("extension")
    @classmethod
    def _check_extension(cls, value: str) -> str:
        if not _EXTENSION.fullmatch(value):
            raise ValueError(f"invalid extension {value!r}: use 1 to 15 digits")
        return value

    @field_validator("password")
    @classmethod
    def _check_password(cls, value: str) -> str:
        if not value:
            raise ValueError("password must not be empty")
        if _CONTROL.search(value):
            # Most often a YAML block scalar (`password: |`), which keeps a trailing newline.
            raise ValueError("password must not contain control characters or line breaks")
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _printable(value, "name")

    @field_validator("caller_id")
    @classmethod
    def _check_caller_id(cls, value: str | None) -> str | None:
        if value is not None and not _CALLER_ID.fullmatch(value):
            raise ValueError(f"invalid caller_id {value!r}: use digits with an optional leading +")
        return value
