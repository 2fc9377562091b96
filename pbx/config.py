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
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pbx.config_crm import CrmSection
from pbx.config_errors import ConfigError, ConfigIssue, IssueLocator, KeyPath, format_key_path
from pbx.config_http import HttpSection, http_problems
from pbx.config_prompts import (
    FetchSection,
    MusicSource,
    PromptSource,
    PromptsSection,
)
from pbx.config_queues import QueueConfig, queue_problems
from pbx.config_routing import (
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
from pbx.config_sections import (
    FROZEN,
    FeaturesSection,
    ListenAddress,
    LoggingSection,
    MediaSection,
    RecordingSection,
    SipSection,
    StorageSection,
    User,
    parse_listen,
)
from pbx.config_yaml import Tree, config_files

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

class Config(BaseModel):
    """The whole, validated PBX configuration. Frozen: a reload builds a new one."""

    model_config = FROZEN

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
    queues: dict[Name, QueueConfig] = Field(default_factory=dict)
    http: HttpSection = HttpSection()
    crm: CrmSection = CrmSection()

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
    "storage.journal", "http.listen", "http.enabled",
)
"""Keys a reload cannot change: sockets, the port pool and the database stay as started."""


def merge_reload(running: Config, new: Config) -> tuple[Config, tuple[str, ...]]:
    """The configuration a reload applies, and the restart-only keys it had to keep.

    Returns ``new`` with the keys of :data:`RESTART_KEYS` taken from ``running``, plus the
    dotted names of those that differ (to log as needing a restart).
    """
    kept = tuple(
        key
        for key, old, fresh in (
            ("sip.listen", running.sip.listen, new.sip.listen),
            ("media.rtp_ports", running.media.rtp_ports, new.media.rtp_ports),
            ("media.shared_port", running.media.shared_port, new.media.shared_port),
            ("storage.database", running.storage.database, new.storage.database),
            ("storage.journal", running.storage.journal, new.storage.journal),
            ("http.listen", running.http.listen, new.http.listen),
            ("http.enabled", running.http.enabled, new.http.enabled),
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
            "storage": new.storage.model_copy(update={"database": running.storage.database,
                                                      "journal": running.storage.journal}),
            "http": new.http.model_copy(update={"listen": running.http.listen,
                                                "enabled": running.http.enabled}),
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
    problems.extend(queue_problems(data))
    problems.extend(http_problems(data))
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
