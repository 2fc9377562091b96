"""The PBX configuration: YAML the admin writes, validated into frozen objects.

``load_config(path)`` reads one YAML file, or a directory whose ``*.yaml`` / ``*.yml`` files are
merged by top-level key, and returns a frozen ``Config``. Nothing else in the PBX reads the YAML or
sees a raw dict. Any problem raises ``ConfigError`` listing *every* issue as
``FILE:LINE:COL: key.path: message``, so a reload that fails can be refused with a precise
report while the running configuration stays in place.

Theory of operation: ``pbx.config_yaml`` *composes* (not constructs) the YAML with
ruamel.yaml, so every value keeps its node and position, and turns nodes into plain data guided
by the model's field types: a plain scalar that lands in a ``str`` field keeps its text exactly
as written (``0123`` stays ``"0123"``, never the integer 123 or 83). It records where each key
path was written; pydantic errors are then mapped back to file, line and column through that
table. Adding a configuration section is one more model and one more field on ``Config``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pbx.config_errors import ConfigError, ConfigIssue, IssueLocator, KeyPath, format_key_path
from pbx.config_prompts import (
    FetchSection,
    MusicSource,
    PromptSource,
    PromptsSection,
    base_dir,
    check_language,
)
from pbx.config_routing import (
    DialCode,
    DialplanSection,
    IvrMenu,
    Name,
    Number,
    RingGroup,
    Route,
    Trunk,
    normalise_numbers,
)
from pbx.config_routing_checks import routing_problems
from pbx.config_yaml import Tree, config_files
from pbx.durations import parse_duration

if TYPE_CHECKING:
    from pbx.prompts import Prompts

__all__ = [
    "RESTART_KEYS",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DialplanSection",
    "FetchSection",
    "IvrMenu",
    "ListenAddress",
    "LoggingSection",
    "MediaSection",
    "MusicSource",
    "Number",
    "PromptSource",
    "PromptsSection",
    "RingGroup",
    "Route",
    "SipSection",
    "StorageSection",
    "Trunk",
    "User",
    "load_config",
    "merge_reload",
    "parse_listen",
]

_FROZEN = ConfigDict(extra="forbid", frozen=True)

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

    model_config = _FROZEN

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

    model_config = _FROZEN

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

    model_config = _FROZEN

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

    model_config = _FROZEN

    database: str = "sqlite:////var/lib/pbx/pbx.db"
    recordings: Path = Path("/var/lib/pbx/recordings")
    cache: Path | None = None
    """Where fetched and spoken prompts are kept; ``prompt-cache`` next to ``recordings``."""

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

    @field_validator("cache", mode="before")
    @classmethod
    def _check_cache(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str | Path):
            return value
        if not str(value).strip():
            raise ValueError("cache must name a directory")
        return cls._check_recordings(value, info)

    @property
    def cache_dir(self) -> Path:
        """``cache``, or ``prompt-cache`` beside the recordings directory."""
        if self.cache is not None:
            return self.cache
        return self.recordings.parent / "prompt-cache"


_LEVELS = ("debug", "info", "warning", "error")


class RecordingSection(BaseModel):
    """``recording:`` — stereo recordings of answered calls under ``storage.recordings``."""

    model_config = _FROZEN

    enabled: bool = False
    format: Literal["wav", "flac"] = "wav"
    """WAV stays playable up to the last second if the PBX is killed; FLAC is smaller."""


class FeaturesSection(BaseModel):
    """``features:`` — the codes phones dial to reach the PBX's own services; ``null`` turns a
    service off."""

    model_config = _FROZEN

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

    @field_validator("echo_test", "key_test", "available", "do_not_disturb", "offline",
                     mode="before")
    @classmethod
    def _code_as_text(cls, value: object) -> object:
        # A code written without quotes may arrive as a number (`43`); it means the same.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class LoggingSection(BaseModel):
    """``logging:`` — how much the PBX logs."""

    model_config = _FROZEN

    level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in _LEVELS:
            return value.strip().lower()
        return value


class User(BaseModel):
    """One entry of ``users:``: a person with an extension and SIP credentials."""

    model_config = _FROZEN

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


class Config(BaseModel):
    """The whole, validated PBX configuration. Frozen: a reload builds a new one."""

    model_config = _FROZEN

    sip: SipSection
    media: MediaSection = MediaSection()
    storage: StorageSection = StorageSection()
    logging: LoggingSection = LoggingSection()
    recording: RecordingSection = RecordingSection()
    prompts: PromptsSection = PromptsSection()
    features: FeaturesSection = FeaturesSection()
    users: tuple[User, ...] = ()
    dialplan: DialplanSection = DialplanSection()
    trunks: tuple[Trunk, ...] = ()
    numbers: tuple[Number, ...] = ()
    ring_groups: dict[Name, RingGroup] = Field(default_factory=dict)
    ivr: dict[Name, IvrMenu] = Field(default_factory=dict)

    _by_extension: dict[str, User] = PrivateAttr(default_factory=dict)
    _by_id: dict[str, User] = PrivateAttr(default_factory=dict)
    _by_number: dict[str, Number] = PrivateAttr(default_factory=dict)
    _by_trunk: dict[str, Trunk] = PrivateAttr(default_factory=dict)
    _codes: dict[str, str] = PrivateAttr(default_factory=dict)
    _locator: IssueLocator | None = PrivateAttr(default=None)
    _prompts: Prompts | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _unique(self) -> Config:
        problems = [message for _path, message in _duplicates(self.model_dump(mode="json"))]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("numbers", mode="before")
    @classmethod
    def _normalise_numbers(cls, value: object, info: ValidationInfo) -> object:
        # Declared after `dialplan`, so its validated region is at hand here.
        dialplan = info.data.get("dialplan")
        region = dialplan.region if isinstance(dialplan, DialplanSection) else None
        return normalise_numbers(value, region)

    def model_post_init(self, context: Any, /) -> None:
        self._by_extension = {user.extension: user for user in self.users}
        self._by_id = {user.id: user for user in self.users}
        self._by_number = {number.number: number for number in self.numbers}
        self._by_trunk = {trunk.name: trunk for trunk in self.trunks}
        self._codes = {
            code: name
            for name, code in self.features.model_dump().items()
            if isinstance(code, str)
        }

    def number(self, e164: str) -> Number | None:
        """The ``numbers:`` entry for ``e164`` (``+81312345678``), or None."""
        return self._by_number.get(e164)

    def trunk(self, name: str) -> Trunk | None:
        """The trunk called ``name``, or None."""
        return self._by_trunk.get(name)

    def outbound_trunks(self) -> tuple[Trunk, ...]:
        """The trunks for outside calls, in the order they are tried."""
        names = self.dialplan.outbound
        if names is None:
            return self.trunks
        return tuple(self._by_trunk[name] for name in names if name in self._by_trunk)

    def feature_for_code(self, code: str) -> str | None:
        """The ``features:`` key whose code is ``code`` (``"*43"`` -> ``"echo_test"``)."""
        return self._codes.get(code)

    def user_by_extension(self, extension: str) -> User | None:
        """The user who owns ``extension``, or None."""
        return self._by_extension.get(extension)

    def user_by_id(self, user_id: str) -> User | None:
        """The user with id ``user_id``, or None."""
        return self._by_id.get(user_id)

    def user_index(self) -> dict[str, User]:
        """Every user under both their id and their extension (phones log in and dial with
        either; validation forbids an id equal to another user's extension). A plain dict for
        the SIP path, where a pydantic attribute look-up per message would cost more than the
        rest of the look-up."""
        return {**self._by_id, **self._by_extension}

    def issue(self, key_path: KeyPath, message: str) -> ConfigIssue:
        """A problem with ``key_path`` found after validation (a prompt that cannot be
        fetched, say), placed at the file and line where that key was written."""
        if self._locator is None:
            return ConfigIssue("config", 0, 0, format_key_path(key_path), message)
        return self._locator.issue_at(key_path, message)

    def written(self, key_path: KeyPath) -> bool:
        """Whether ``key_path`` was written in the files (not a default)."""
        return self._locator is not None and key_path in self._locator.positions

    @property
    def resolved_prompts(self) -> Prompts | None:
        """The prompts and music, decoded and ready to play, once :func:`pbx.prompts.resolve`
        has accepted this configuration (``None`` before)."""
        return self._prompts

    def attach_prompts(self, prompts: Prompts) -> None:
        """Record the resolved prompts of this configuration (done once, by the loader)."""
        if self._prompts is not None and self._prompts is not prompts:
            raise ValueError("this configuration's prompts are already resolved")
        self._prompts = prompts

    def advertised_address(self) -> str:
        """The IP address to put in SDP (``media.address`` or one derived from ``sip.listen``).

        Without ``media.address``: the host of the first ``sip.listen`` entry, or, when that is
        a wildcard (0.0.0.0 or ::), the address of the interface that routes outward. Call it
        once at start and on reload, not per call: it may open a socket.
        """
        if self.media.address is not None:
            return self.media.address
        host = self.sip.listen[0].host
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return socket.gethostbyname(host)
        if not address.is_unspecified:
            return str(address)
        return _outbound_address(address.version)


def _outbound_address(version: int) -> str:
    # Connecting a UDP socket sends nothing; it only asks the kernel which source address it
    # would route from. The targets are documentation prefixes (RFC 5737, RFC 3849).
    family, target, fallback = (
        (socket.AF_INET, "192.0.2.1", "127.0.0.1")
        if version == 4
        else (socket.AF_INET6, "2001:db8::1", "::1")
    )
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((target, 9))
            return str(probe.getsockname()[0])
    except OSError:
        return fallback


RESTART_KEYS: tuple[str, ...] = (
    "sip.listen", "media.rtp_ports", "media.shared_port", "storage.database",
)
"""Keys a reload cannot change: sockets, the port pool and the database stay as started."""


def merge_reload(running: Config, new: Config) -> tuple[Config, tuple[str, ...]]:
    """The configuration a reload applies, and the restart-only keys it had to keep.

    Returns ``new`` with ``sip.listen``, ``media.rtp_ports`` and ``storage.database`` taken from
    ``running``, plus the dotted names of those that differ (to log as needing a restart).
    """
    kept = tuple(
        key
        for key, old, fresh in (
            ("sip.listen", running.sip.listen, new.sip.listen),
            ("media.rtp_ports", running.media.rtp_ports, new.media.rtp_ports),
            ("media.shared_port", running.media.shared_port, new.media.shared_port),
            ("storage.database", running.storage.database, new.storage.database),
        )
        if old != fresh
    )
    if not kept:
        return new, ()
    # A copy keeps everything else of ``new``, including its resolved prompts and where its
    # keys were written.
    applied = new.model_copy(
        update={
            "sip": new.sip.model_copy(update={"listen": running.sip.listen}),
            "media": new.media.model_copy(update={"rtp_ports": running.media.rtp_ports,
                                                  "shared_port": running.media.shared_port}),
            "storage": new.storage.model_copy(update={"database": running.storage.database}),
        }
    )
    return applied, kept


def _duplicates(data: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-entry uniqueness problems, as (key path, message); works on plain data."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    users = data.get("users")
    if isinstance(users, list | tuple):
        for field, what in (("id", "user id"), ("extension", "extension")):
            seen: dict[str, int] = {}
            for index, user in enumerate(users):
                value = user.get(field) if isinstance(user, Mapping) else None
                if not isinstance(value, str):
                    continue
                if value in seen:
                    problems.append(
                        (
                            ("users", index, field),
                            f'duplicate {what} "{value}" (also users[{seen[value]}])',
                        )
                    )
                else:
                    seen[value] = index
        # Phones may name themselves by id or by extension, so an id that is another user's
        # extension would make `102@domain` mean two people.
        extensions = {
            user.get("extension"): index
            for index, user in enumerate(users)
            if isinstance(user, Mapping) and isinstance(user.get("extension"), str)
        }
        for index, user in enumerate(users):
            user_id = user.get("id") if isinstance(user, Mapping) else None
            owner = extensions.get(user_id)
            if isinstance(user_id, str) and owner is not None and owner != index:
                problems.append(
                    (
                        ("users", index, "id"),
                        f'id "{user_id}" is also the extension of users[{owner}]',
                    )
                )
    features = data.get("features")
    codes: dict[str, Any] = {
        name: field.default for name, field in FeaturesSection.model_fields.items()
    }
    if isinstance(features, Mapping):
        codes.update({k: v for k, v in features.items() if isinstance(k, str)})
    taken: dict[str, str] = {}
    for name, code in codes.items():
        if not isinstance(code, str | int) or isinstance(code, bool):
            continue
        code = str(code)
        where = ("features", name)
        if code in taken:
            problems.append((where, f'code "{code}" is also features.{taken[code]}'))
            continue
        taken[code] = name
        if isinstance(users, list | tuple):
            for index, user in enumerate(users):
                if isinstance(user, Mapping) and code in (user.get("extension"), user.get("id")):
                    problems.append((where, f'code "{code}" is also users[{index}]\'s '
                                     "extension or id"))
    sip = data.get("sip")
    listen = sip.get("listen") if isinstance(sip, Mapping) else None
    media = data.get("media")
    if (isinstance(media, Mapping) and media.get("shared_port") is True
            and isinstance(listen, list | tuple) and listen and isinstance(listen[0], str)
            and "[" in listen[0]):
        problems.append((("media", "shared_port"),
                         "the shared RTP port is IPv4 only, and sip.listen[0] is IPv6"))
    if isinstance(listen, list | tuple):
        seen_specs: dict[str, int] = {}
        for index, spec in enumerate(listen):
            try:
                text = str(ListenAddress.model_validate(spec))
            except (ValueError, ValidationError):
                continue  # reported by validation
            if text in seen_specs:
                problems.append(
                    (
                        ("sip", "listen", index),
                        f"duplicate listen address {text} (also sip.listen[{seen_specs[text]}])",
                    )
                )
            else:
                seen_specs[text] = index
    problems.extend(routing_problems(data))
    return problems


def load_config(path: str | Path) -> Config:
    """Load and validate the configuration at ``path`` (a YAML file or a directory of them).

    A directory contributes its ``*.yaml`` and ``*.yml`` files (not subdirectories, not hidden
    files) in name order; each top-level key must come from one file. Raises
    ``FileNotFoundError`` if ``path`` does not exist, ``OSError`` if it cannot be read, and
    ``ConfigError`` listing every problem if the configuration is invalid.
    """
    path = Path(path)
    files = config_files(path)
    tree = Tree(path, files, Config)
    if not files:
        raise ConfigError([ConfigIssue(str(path), 0, 0, "", "no *.yaml or *.yml files here")])
    issues = list(tree.issues)
    for key_path, message in _duplicates(tree.data):
        issues.append(tree.locator.issue_at(key_path, message))
    duplicates_found = len(issues) > len(tree.issues)
    try:
        config = Config.model_validate(tree.data, context={"base_dir": tree.base_dir("storage")})
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            if not error["loc"] and duplicates_found:
                continue  # the uniqueness problems again, already reported per entry
            if tree.broken and error["type"] == "missing" and len(error["loc"]) == 1:
                continue  # the section may well be in the file that could not be read
            issues.append(tree.locator.error_issue(error, tree.data))
    if issues:
        raise ConfigError(sorted(set(issues), key=_issue_order))
    config._locator = tree.locator
    return config


def _issue_order(issue: ConfigIssue) -> tuple[str, int, int, str, str]:
    return (issue.file, issue.line, issue.column, issue.key, issue.message)
