"""Reading the PBX configuration YAML into plain data that remembers where it was written.

The YAML is *composed* (not constructed) with ruamel.yaml, so every value keeps its node and its
position. ``Tree`` walks the nodes of one file or a directory of files into dicts, lists and
scalars, guided by the field types of the root model: a plain scalar that lands in a ``str``
field keeps its text exactly as written (``0123`` stays ``"0123"``), while other scalars get
their YAML 1.2 type. Each key path is recorded with its file, line and column in an
``IssueLocator``, so validation errors can be reported where the admin has to look.

Rejected here, with positions: YAML syntax errors, duplicate keys, unsupported tags, recursive
aliases, runaway alias expansion, and a top-level key defined in two files.
"""

from __future__ import annotations

import types
import warnings
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, ReusedAnchorWarning, YAMLError
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

from pbx.config_errors import ConfigIssue, IssueLocator, KeyPath, Position, format_key_path

__all__ = ["Tree", "config_files"]

_YAML = "tag:yaml.org,2002:"
_MAX_NODES = 100_000  # bounds alias expansion ("billion laughs") in a hostile file


def _arms(annotation: Any) -> list[Any]:
    """The alternatives a field accepts, with Annotated and unions unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _arms(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [arm for option in get_args(annotation) for arm in _arms(option)]
    return [annotation]


def _models(arms: list[Any]) -> list[type[BaseModel]]:
    return [arm for arm in arms if isinstance(arm, type) and issubclass(arm, BaseModel)]


def _item_type(arms: list[Any], index: int) -> Any:
    for arm in arms:
        origin, args = get_origin(arm), get_args(arm)
        if origin is list and args:
            return args[0]
        if origin is tuple and args:
            if len(args) == 2 and args[1] is Ellipsis:
                return args[0]
            return args[index] if index < len(args) else None
    return None


def _keys(model: type[BaseModel]) -> dict[str, Any]:
    """The keys a model takes in YAML (a field's alias where it has one) and their fields."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _field_type(arms: list[Any], key: str) -> Any:
    for model in _models(arms):
        field = _keys(model).get(key)
        if field is not None:
            return field.annotation
    for arm in arms:
        if get_origin(arm) is dict and len(get_args(arm)) == 2:
            return get_args(arm)[1]
    return None


def _parse_int(text: str) -> int | str:
    clean = text.replace("_", "")
    sign = -1 if clean.startswith("-") else 1
    digits = clean.lstrip("+-").lower()
    try:
        for prefix, base in (("0x", 16), ("0o", 8), ("0b", 2)):
            if digits.startswith(prefix):
                return sign * int(digits[2:], base)
        return sign * int(digits, 10)
    except ValueError:
        return text


def _parse_float(text: str) -> float | str:
    clean = text.replace("_", "").lower()
    special = {".inf": "inf", "+.inf": "inf", "-.inf": "-inf", ".nan": "nan"}
    try:
        return float(special.get(clean, clean))
    except ValueError:
        return text


class _TooLarge(Exception):
    pass


class _Walker:
    """Turns composed YAML nodes of one file into plain data, recording positions."""

    def __init__(self, locator: IssueLocator, issues: list[ConfigIssue], file: str) -> None:
        self._locator = locator
        self._issues = issues
        self._file = file
        self._stack: set[int] = set()
        self._count = 0

    def where(self, node: Any) -> Position:
        mark = node.start_mark
        return Position(self._file, mark.line + 1, mark.column + 1)

    def issue(self, node: Any, path: KeyPath, message: str) -> None:
        where = self.where(node)
        self._issues.append(
            ConfigIssue(where.file, where.line, where.column, format_key_path(path), message)
        )

    def convert(self, node: Any, path: KeyPath, expected: Any) -> Any:
        self._count += 1
        if self._count > _MAX_NODES:
            raise _TooLarge
        if id(node) in self._stack:
            self.issue(node, path, "recursive YAML alias")
            return None
        self._stack.add(id(node))
        try:
            arms = _arms(expected)
            if isinstance(node, ScalarNode):
                return self._scalar(node, path, arms)
            if isinstance(node, SequenceNode):
                self._check_tag(node, path, "seq")
                items = []
                for index, item in enumerate(node.value):
                    self._locator.positions[(*path, index)] = self.where(item)
                    items.append(self.convert(item, (*path, index), _item_type(arms, index)))
                return items
            if isinstance(node, MappingNode):
                self._check_tag(node, path, "map")
                return self.mapping(node, path, arms)
            return None
        finally:
            self._stack.discard(id(node))

    def _check_tag(self, node: Any, path: KeyPath, kind: str) -> None:
        if node.tag != _YAML + kind:
            self.issue(node, path, f"unsupported YAML tag {node.tag}")

    def _scalar(self, node: Any, path: KeyPath, arms: list[Any]) -> Any:
        tag, text = node.tag, node.value
        if tag == _YAML + "null":
            return None
        if not tag.startswith(_YAML):
            self.issue(node, path, f"unsupported YAML tag {tag}")
            return text
        if str in arms or Path in arms:
            # Extensions, numbers and passwords are text: keep `0123` exactly as written.
            return text
        if tag == _YAML + "bool":
            return text.lower() in ("true", "yes", "on", "y")
        if tag == _YAML + "int":
            return _parse_int(text)
        if tag == _YAML + "float":
            return _parse_float(text)
        return text

    def entries(self, node: Any, path: KeyPath) -> list[tuple[str, Any, Any]]:
        """(key, key node, value node) of a mapping, with ``<<`` merge keys applied."""
        explicit: dict[str, tuple[Any, Any]] = {}
        merged: dict[str, tuple[Any, Any]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _YAML + "merge":
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode) or id(source) in self._stack:
                        self.issue(key_node, path, "<< must merge a mapping or a list of them")
                        continue
                    self._stack.add(id(source))
                    try:
                        for key, k_node, v_node in self.entries(source, path):
                            # YAML merge: explicit keys win, earlier sources beat later ones.
                            merged.setdefault(key, (k_node, v_node))
                    finally:
                        self._stack.discard(id(source))
                continue
            if not isinstance(key_node, ScalarNode):
                self.issue(key_node, path, "keys must be plain strings")
                continue
            key = key_node.value
            if key in explicit:
                first = self.where(explicit[key][0])
                self.issue(
                    key_node, (*path, key), f"duplicate key (first written at line {first.line})"
                )
                continue
            explicit[key] = (key_node, value_node)
        merged.update(explicit)
        return [(key, k, v) for key, (k, v) in merged.items()]

    def mapping(self, node: Any, path: KeyPath, arms: list[Any]) -> dict[str, Any]:
        models = _models(arms)
        if models:
            self._locator.known_keys[path] = tuple(
                name for model in models for name in _keys(model)
            )
        out: dict[str, Any] = {}
        for key, key_node, value_node in self.entries(node, path):
            self._locator.positions[(*path, key)] = self.where(key_node)
            out[key] = self.convert(value_node, (*path, key), _field_type(arms, key))
        return out


class Tree:
    """The merged data of all config files, with where each key came from."""

    def __init__(self, path: Path, files: list[Path], root_model: type[BaseModel]) -> None:
        display = [str(f) for f in files] if files else [str(path)]
        self.locator = IssueLocator(Position(display[0], 1, 1))
        self.issues: list[ConfigIssue] = []
        self.broken = False
        """True when a file could not be read as a mapping: its sections are unknown."""
        self.data: dict[str, Any] = {}
        base = path.absolute()
        self._default_dir = base if path.is_dir() else base.parent
        self._section_dirs: dict[str, Path] = {}
        self._section_files: dict[str, Position] = {}
        self._root_model = root_model
        self.locator.known_keys[()] = tuple(root_model.model_fields)
        for file in files:
            self._read(file, str(file))

    def base_dir(self, section: str) -> Path:
        """Directory that relative paths in ``section`` are relative to (its file's)."""
        return self._section_dirs.get(section, self._default_dir)

    def _issue(self, file: str, line: int, column: int, message: str) -> None:
        self.broken = True
        self.issues.append(ConfigIssue(file, line, column, "", message))

    def _read(self, file: Path, display: str) -> None:
        try:
            text = file.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            self._issue(display, 0, 0, f"not UTF-8 text (byte {exc.start})")
            return
        try:
            with warnings.catch_warnings():
                # YAML 1.2 allows redefining an anchor; ruamel would print a warning to stderr.
                warnings.simplefilter("ignore", ReusedAnchorWarning)
                root = YAML(typ="rt").compose(text)
        except MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
            problem = " ".join(str(part) for part in (exc.context, exc.problem) if part)
            self._issue(display, line, column, f"invalid YAML: {problem}")
            return
        except YAMLError as exc:
            self._issue(display, 0, 0, f"invalid YAML: {exc}")
            return
        if root is None:
            return  # an empty file (or only comments) adds nothing
        walker = _Walker(self.locator, self.issues, display)
        if not isinstance(root, MappingNode):
            where = walker.where(root)
            self._issue(
                display,
                where.line,
                where.column,
                "the top level must be a mapping of sections (sip:, users:, ...)",
            )
            return
        try:
            for key, key_node, value_node in walker.entries(root, ()):
                where = walker.where(key_node)
                other = self._section_files.get(key)
                if other is not None:
                    walker.issue(
                        key_node,
                        (key,),
                        f"section also defined in {other.file}:"
                        f"{other.line}; each top-level key belongs in one file",
                    )
                    continue
                self._section_files[key] = where
                self._section_dirs[key] = file.absolute().parent
                self.locator.positions[(key,)] = where
                field = self._root_model.model_fields.get(key)
                self.data[key] = walker.convert(
                    value_node, (key,), field.annotation if field is not None else None
                )
        except _TooLarge:
            self._issue(
                display, 0, 0, f"too many YAML nodes (over {_MAX_NODES}); check for runaway aliases"
            )


def config_files(path: Path) -> list[Path]:
    """The files that make up the configuration at ``path``, in merge order.

    A file is itself; a directory gives its ``*.yaml`` and ``*.yml`` files sorted by name,
    skipping hidden files (editor backups) and subdirectories.
    """
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    if not path.is_dir():
        return [path]
    return sorted(
        child
        for child in path.iterdir()
        if child.suffix in (".yaml", ".yml") and not child.name.startswith(".") and child.is_file()
    )
