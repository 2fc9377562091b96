"""Errors of the PBX configuration: one ``ConfigIssue`` per problem, all raised together.

Every issue names where the admin has to look, compiler style::

    pbx.yaml:14:5: users[2].extension: duplicate extension "101" (also users[0])

so an editor or ``grep`` can jump to it, and ``pbx check`` shows every problem in one run.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic_core import ErrorDetails

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "IssueLocator",
    "KeyPath",
    "Position",
    "describe_error",
    "format_key_path",
]


@dataclass(frozen=True, order=True)
class ConfigIssue:
    """One problem in the configuration.

    ``line`` and ``column`` are 1-based; 0 means the position is not known (for example a file
    that cannot be parsed at all). ``key`` is the dotted path (``users[2].extension``), empty
    when the problem is not about one key.
    """

    file: str
    line: int
    column: int
    key: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line > 0:
            where = f"{where}:{self.line}:{self.column}"
        if self.key:
            return f"{where}: {self.key}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; ``issues`` lists every problem found, in file order."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


_IDENTIFIER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


def format_key_path(path: Sequence[str | int]) -> str:
    """``("users", 2, "extension")`` -> ``"users[2].extension"``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


# Pydantic error types whose message is about the kind of value, worth showing the value for.
_TYPE_MESSAGES = {
    "model_type": "expected a mapping of keys",
    "model_attributes_type": "expected a mapping of keys",
    "dict_type": "expected a mapping of keys",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "string_type": "expected a string",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
}


def _short_repr(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe_error(error: ErrorDetails, known_keys: Iterable[str] = ()) -> str:
    """Turn one pydantic error into a message for the admin.

    ``known_keys`` are the keys allowed where an unknown key was found; the closest one is
    suggested, since most unknown keys are typos.
    """
    kind = error["type"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        loc = error["loc"]
        name = str(loc[-1]) if loc else ""
        close = difflib.get_close_matches(name, list(known_keys), n=1, cutoff=0.6)
        if close:
            return f"unknown key (did you mean {close[0]!r}?)"
        allowed = sorted(known_keys)
        if allowed:
            return "unknown key (allowed here: " + ", ".join(allowed) + ")"
        return "unknown key"
    if kind in _TYPE_MESSAGES:
        return f"{_TYPE_MESSAGES[kind]}, got {_short_repr(error.get('input'))}"
    message = error["msg"]
    if kind in ("value_error", "assertion_error"):
        # Our own validators write complete messages; drop pydantic's prefix.
        return message.split(", ", 1)[1] if ", " in message else message
    message = message.replace("Input should be", "must be").replace("Value should", "must")
    if kind in ("literal_error", "enum", "string_pattern_mismatch"):
        return f"{message}, got {_short_repr(error.get('input'))}"
    return message


KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Position:
    """Where a key or list item was written (1-based line and column)."""

    file: str
    line: int
    column: int


class IssueLocator:
    """Maps key paths of the loaded data back to where the admin wrote them."""

    def __init__(self, root: Position) -> None:
        self.root = root
        self.positions: dict[KeyPath, Position] = {}
        self.known_keys: dict[KeyPath, tuple[str, ...]] = {}

    def position(self, path: KeyPath) -> Position:
        """The position of ``path`` or of its nearest written ancestor."""
        for end in range(len(path), 0, -1):
            found = self.positions.get(path[:end])
            if found is not None:
                return found
        return self.root

    def issue_at(self, path: KeyPath, message: str) -> ConfigIssue:
        """An issue about ``path``, placed where it (or its parent) was written."""
        where = self.position(path)
        return ConfigIssue(where.file, where.line, where.column, format_key_path(path), message)

    def error_issue(self, error: ErrorDetails, data: object) -> ConfigIssue:
        """Turn one pydantic error about ``data`` into an issue with file, line and key."""
        path: list[str | int] = []
        current = data
        loc = error["loc"]
        for index, part in enumerate(loc):
            if isinstance(current, dict) and isinstance(part, str):
                if part in current:
                    path.append(part)
                    current = current[part]
                    continue
                if error["type"] == "missing" and index == len(loc) - 1:
                    path.append(part)
            elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
                path.append(part)
                current = current[part]
                continue
            # The rest of a pydantic location names validators, not keys.
            break
        key_path = tuple(path)
        known = self.known_keys.get(key_path[:-1], ())
        return self.issue_at(key_path, describe_error(error, known))
