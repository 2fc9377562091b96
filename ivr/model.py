"""The IVR menu model: plain frozen values, independent of how the configuration is written.

A :class:`Menu` is a tree: each :class:`Option` on a phone key either routes the call
(:class:`Route`, opaque to this package) or opens a submenu. What is played is named by
:class:`Prompt` handles that the host resolves to audio; this package never touches audio.

The constructors accept anything of the right type and never raise for a bad *value*:
:func:`menu_problems` walks a whole tree and returns every problem with its path, in the same
shape the configuration uses (``main.options.3.menu.timeout``), so the configuration loader can
point at the file and line. :class:`~ivr.session.IvrSession` refuses a tree with problems
(:class:`IvrConfigError`), so a running menu never meets one.

Every menu carries all of its settings: a submenu inherits nothing from its parent, so whoever
builds the tree from a configuration copies the settings it wants shared (timeouts, keys, the
goodbye and unavailable prompts) into each level.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from .errors import IvrConfigError

__all__ = [
    "DIRECT_DIAL_KIND",
    "DTMF_KEYS",
    "MAX_DEPTH",
    "MAX_RETRIES_LIMIT",
    "MAX_TIMEOUT",
    "MENU_KEYS",
    "IvrConfigError",
    "Menu",
    "MenuProblem",
    "Option",
    "Prompt",
    "Route",
    "check_menu",
    "key_order",
    "menu_problems",
]

MENU_KEYS = "1234567890*#"
"""Keys a menu may put options on, in the order their prompts are played (the keypad's order:
1-9, then 0, then star and pound)."""

DTMF_KEYS = "0123456789*#ABCD"
"""Every key a phone can send (RFC 4733 3.2: events 0-15). A, B, C and D are accepted as input
and count as invalid entries: no menu can use them."""

MAX_DEPTH = 5
"""Menus nest at most this many levels deep, the top menu being level 1."""

MAX_RETRIES_LIMIT = 20
"""Largest ``max_retries``: more replays than this keep a silent line open for many minutes."""

MAX_TIMEOUT = 300.0
"""Longest ``timeout`` / ``inter_digit_timeout`` in seconds."""

_Report = Callable[[str, str], None]
"""``problem(field, message)``: how the checks below report."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """Something to play, resolved to audio by the host.

    ``kind`` says how the host finds the audio and ``value`` what to look up, for example
    ``Prompt("text", "Thank you for calling.")`` (spoken by text-to-speech) or
    ``Prompt("clip", "main.welcome")`` (a prepared recording). The option prompts the menu
    generates from its template are always of kind ``"text"``.
    """

    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class Route:
    """Where a call goes when it leaves the menu, opaque to the menu: ``Route("queue",
    "support")``, ``Route("user", "alice")``. Direct dialling routes to
    ``Route(DIRECT_DIAL_KIND, <digits>)``."""

    kind: str
    target: str


DIRECT_DIAL_KIND = "extension"
"""The :attr:`Route.kind` of a route to an extension the caller typed (direct dialling)."""


@dataclass(frozen=True, slots=True)
class Option:
    """One key of a menu: exactly one of ``route`` or ``submenu``.

    ``label`` fills the menu's option prompt template; ``prompt``, when given, is played
    instead of the generated one.
    """

    label: str
    route: Route | None = None
    submenu: Menu | None = None
    prompt: Prompt | None = None


@dataclass(frozen=True)
class Menu:
    """One menu level.

    Attributes:
        name: the menu's name; the top menu's name starts every problem path (``main``).
        welcome: played on the first entry to this menu only.
        options: phone key (one of :data:`MENU_KEYS`) to option. Copied into a read-only
            mapping, so a tree cannot change (or become a cycle) after it is built.
        option_prompt: ``str.format`` template of an option's prompt, with ``{label}`` and
            ``{key}`` (the key as pressed: ``1``, ``*``, ``#``).
        timeout: seconds to wait for a key once the prompts have played.
        max_retries: how many times the menu is replayed after a timeout or an invalid entry;
            the next one fails the menu.
        on_failure: where a failed menu routes the call; ``None`` hangs up with ``goodbye``.
        back_key: goes one level up (at the top, replays the menu); ``None``: no back key.
        repeat_key: replays the menu; ``None``: no repeat key.
        direct_dial: digits may also spell an extension, collected until
            ``inter_digit_timeout`` passes without a digit, or ``#``.
        inter_digit_timeout: seconds between the digits of a dialled extension.
        invalid: played before the menu replays after an invalid entry.
        goodbye: played before the call is hung up.
        unavailable: played when the chosen target has nobody available.
        after_unavailable: ``"menu"`` replays this menu after ``unavailable``; ``"hangup"``
            ends the call with it.
        barge_in: a key stops the menu's prompts at once and counts (type-ahead). When
            ``False`` the prompts play to the end and keys pressed meanwhile are ignored.
    """

    name: str
    welcome: Prompt | None = None
    options: Mapping[str, Option] = field(default_factory=dict, hash=False)
    option_prompt: str = "For {label}, press {key}."
    timeout: float = 5.0
    max_retries: int = 3
    on_failure: Route | None = None
    back_key: str | None = None
    repeat_key: str | None = None
    direct_dial: bool = False
    inter_digit_timeout: float = 3.0
    invalid: Prompt | None = None
    goodbye: Prompt | None = None
    unavailable: Prompt | None = None
    after_unavailable: Literal["menu", "hangup"] = "menu"
    barge_in: bool = True

    def __post_init__(self) -> None:
        # A private copy: the caller's dict could otherwise be changed under a running menu.
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def option_prompt_for(self, key: str) -> Prompt:
        """The prompt of the option on ``key``: its own, or the template filled in."""
        option = self.options[key]
        if option.prompt is not None:
            return option.prompt
        return Prompt("text", self.option_prompt.format(label=option.label, key=key))

    def menu_prompts(self) -> tuple[Prompt, ...]:
        """The option prompts in keypad order (the welcome is not included)."""
        return tuple(self.option_prompt_for(key) for key in key_order(self.options))


def key_order(keys: Mapping[str, object] | str) -> list[str]:
    """``keys`` sorted in keypad order (:data:`MENU_KEYS`); unknown keys last."""
    def place(key: object) -> tuple[int, str]:
        found = MENU_KEYS.find(key) if isinstance(key, str) and len(key) == 1 else -1
        return (found if found >= 0 else len(MENU_KEYS), str(key))

    return sorted(keys, key=place)


@dataclass(frozen=True, slots=True)
class MenuProblem:
    """One problem of a menu tree.

    ``menu_name`` is the top menu's name, ``keys`` the keys leading from it to the menu with the
    problem (``"31"``), ``field`` the field of that menu (``"timeout"``, ``"options.2"``,
    ``"options.2.label"``; ``""`` for the menu itself).
    """

    menu_name: str
    keys: str
    field: str
    message: str

    @property
    def path(self) -> str:
        """The problem's place as the configuration writes it: ``main.options.3.menu.timeout``."""
        parts = [self.menu_name]
        parts += [f"options.{k}.menu" for k in self.keys]
        if self.field:
            parts.append(self.field)
        return ".".join(parts)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def menu_problems(root: Menu, *, max_depth: int = MAX_DEPTH) -> list[MenuProblem]:
    """Every problem of the tree under ``root``: depth, keys, values. Empty when it can run."""
    out: list[MenuProblem] = []
    if not isinstance(root.name, str) or not root.name.strip():
        out.append(MenuProblem(str(root.name), "", "name", "a menu needs a name"))
    _walk(root, root.name, "", 1, max_depth, out)
    return out


def check_menu(root: Menu, *, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`IvrConfigError` listing :func:`menu_problems`, if there are any."""
    problems = menu_problems(root, max_depth=max_depth)
    if problems:
        raise IvrConfigError(problems)


def _walk(
    menu: Menu, name: str, keys: str, depth: int, max_depth: int, out: list[MenuProblem]
) -> None:
    def problem(where: str, message: str) -> None:
        out.append(MenuProblem(name, keys, where, message))

    if depth > max_depth:
        problem("", f"menus nest at most {max_depth} levels deep; this one is level {depth}")
        return
    _check_values(menu, problem)
    _check_keys(menu, problem)
    for key in key_order(menu.options):
        option = menu.options[key]
        where = f"options.{key}"
        if not isinstance(option, Option):
            problem(where, f"expected an Option, not {type(option).__name__}")
            continue
        _check_option(option, where, problem)
        if isinstance(option.submenu, Menu) and option.route is None:
            _walk(option.submenu, name, keys + key, depth + 1, max_depth, out)


def _check_values(menu: Menu, problem: _Report) -> None:
    for where in ("timeout", "inter_digit_timeout"):
        value = getattr(menu, where)
        if isinstance(value, bool) or not isinstance(value, int | float):
            problem(where, f"expected seconds, not {value!r}")
        elif not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT):
            problem(where, f"must be more than 0 and at most {MAX_TIMEOUT:g} seconds")
    retries = menu.max_retries
    if isinstance(retries, bool) or not isinstance(retries, int):
        problem("max_retries", f"expected a whole number, not {retries!r}")
    elif not 0 <= retries <= MAX_RETRIES_LIMIT:
        problem("max_retries", f"must be 0 to {MAX_RETRIES_LIMIT}")
    if menu.after_unavailable not in ("menu", "hangup"):
        problem("after_unavailable", "must be 'menu' or 'hangup'")
    if not menu.options and not menu.direct_dial:
        problem("options", "a menu needs at least one option (or direct dialling)")
    _check_template(menu.option_prompt, problem)
    for where in ("welcome", "invalid", "goodbye", "unavailable"):
        _check_prompt(getattr(menu, where), where, problem)
    if menu.on_failure is not None:
        _check_route(menu.on_failure, "on_failure", problem)


def _check_keys(menu: Menu, problem: _Report) -> None:
    for key in menu.options:
        if not isinstance(key, str) or len(key) != 1 or key not in MENU_KEYS:
            problem(f"options.{key}", f"{key!r} is not a menu key; keys are 0-9, * and #")
    for where in ("back_key", "repeat_key"):
        key = getattr(menu, where)
        if key is None:
            continue
        if not isinstance(key, str) or len(key) != 1 or key not in MENU_KEYS:
            problem(where, f"{key!r} is not a menu key; keys are 0-9, * and #")
        elif key in menu.options:
            problem(where, f"key {key} is also an option of this menu")
    if menu.back_key is not None and menu.back_key == menu.repeat_key:
        problem("repeat_key", f"key {menu.repeat_key} is also the back key")


def _check_option(option: Option, where: str, problem: _Report) -> None:
    if (option.route is None) == (option.submenu is None):
        problem(where, "an option needs exactly one of a route or a submenu")
    if option.route is not None:
        _check_route(option.route, f"{where}.route", problem)
    if option.submenu is not None and not isinstance(option.submenu, Menu):
        problem(f"{where}.menu", f"expected a Menu, not {type(option.submenu).__name__}")
    if option.prompt is not None:
        _check_prompt(option.prompt, f"{where}.prompt", problem)
        return
    if not isinstance(option.label, str) or not option.label.strip():
        problem(f"{where}.label", "an option without its own prompt needs a label")


def _check_template(template: object, problem: _Report) -> None:
    if not isinstance(template, str):
        problem("option_prompt", "expected a template text")
        return
    try:
        # What the fields hold does not change whether a template can be filled.
        text = template.format(label="x", key="1")
    except (KeyError, IndexError, AttributeError, ValueError) as exc:
        problem("option_prompt", f"cannot fill {template!r} ({exc!r}): it may use only "
                "{label} and {key}")
        return
    if not text.strip():
        problem("option_prompt", "the template makes an empty prompt")


def _check_prompt(prompt: object, where: str, problem: _Report) -> None:
    if prompt is None:
        return
    if not isinstance(prompt, Prompt):
        problem(where, f"expected a Prompt, not {type(prompt).__name__}")
    elif not isinstance(prompt.kind, str) or not prompt.kind:
        problem(where, "a prompt needs a kind")
    elif not isinstance(prompt.value, str) or not prompt.value.strip():
        problem(where, "a prompt needs a value")


def _check_route(route: object, where: str, problem: _Report) -> None:
    if not isinstance(route, Route):
        problem(where, f"expected a Route, not {type(route).__name__}")
    elif not isinstance(route.kind, str) or not route.kind:
        problem(where, "a route needs a kind")
    elif not isinstance(route.target, str) or not route.target:
        problem(where, "a route needs a target")


