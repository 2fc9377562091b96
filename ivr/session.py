"""One caller in an IVR menu tree, as a sans-I/O state machine.

Theory of operation
-------------------
The host feeds five inputs, each with the current time ``now`` (any monotonic clock, in
seconds): :meth:`IvrSession.start`, :meth:`~IvrSession.prompt_done` (the last ``Play`` ended),
:meth:`~IvrSession.key` (a phone key, from whichever detector heard it),
:meth:`~IvrSession.timer` (the time of the last ``StartTimer`` came) and
:meth:`~IvrSession.target_unavailable` (the target of the last ``RouteTo`` had nobody). Each
returns the :mod:`ivr.actions` to perform, in order. The session never reads a clock.

A menu plays its welcome (on the first entry to that menu only), then each option's prompt in
keypad order, then waits ``timeout`` for a key. With ``barge_in`` a key pressed while the
prompts play stops them at once and counts, so a caller who knows the tree types ahead
(``3`` then ``1`` during the welcome walks two levels). A key that is no option, and a timeout,
are failures: the menu replays (after its ``invalid`` prompt, for a key) until ``max_retries``
replays have been used, and the next failure routes to ``on_failure`` or hangs up with
``goodbye``. The back key goes one level up, the repeat key replays the menu; both, like any
valid choice, clear the failure count.

With ``direct_dial`` a digit starts collecting an extension: each digit restarts an
``inter_digit_timeout`` timer, and the entry ends when that timer fires, on ``#``, or at
:data:`MAX_DIAL_DIGITS`. An entry of one digit that is a key of the menu is that key; otherwise
a known extension routes to it (``Route("extension", digits)``) and an unknown one is an
invalid entry. Another key while collecting drops the digits and counts on its own.

After ``RouteTo`` the host may report ``target_unavailable``: the menu the choice was made in
plays its ``unavailable`` prompt and replays (``after_unavailable: "menu"``) or hangs up with it
(``"hangup"``, and always when the route was the menu's ``on_failure``).

Rule 1 (after h11's ``_state.py``): which input a state accepts is the table ``_HANDLERS``. An
input missing from it is absorbed when it comes from the caller or the media (a key after the
menu ended, a ``prompt_done`` after ``StopPlaying``, a stale timer) and is a programming error
of the host when the host chose to send it (``start`` twice, ``target_unavailable`` with no
route pending): :class:`~ivr.errors.IvrStateError`, state unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum

from .actions import Action, Hangup, Play, RouteTo, StartTimer, StopPlaying
from .errors import IvrStateError
from .model import DIRECT_DIAL_KIND, DTMF_KEYS, Menu, Prompt, Route, check_menu

__all__ = ["MAX_DIAL_DIGITS", "IvrSession", "SessionState"]

MAX_DIAL_DIGITS = 16
"""The longest extension a caller can dial from a menu; the entry ends at this many digits
(E.164 numbers have at most 15)."""


class SessionState(Enum):
    """Where a session is."""

    IDLE = "idle"
    """Not started."""
    PLAYING = "playing"
    """A menu's prompts are playing."""
    WAITING = "waiting"
    """The prompts have played; waiting ``timeout`` for a key."""
    COLLECTING = "collecting"
    """Collecting the digits of an extension (direct dialling)."""
    ROUTED = "routed"
    """``RouteTo`` was sent; ``target_unavailable`` may still bring the caller back."""
    ENDED = "ended"
    """``Hangup`` was sent."""


class _Input(Enum):
    START = "start"
    PROMPT_DONE = "prompt_done"
    KEY = "key"
    TIMER = "timer"
    UNAVAILABLE = "target_unavailable"


_S = SessionState
_HANDLERS: dict[tuple[SessionState, _Input], str] = {
    (_S.IDLE, _Input.START): "_on_start",
    (_S.PLAYING, _Input.PROMPT_DONE): "_on_prompt_done",
    (_S.PLAYING, _Input.KEY): "_on_key_while_playing",
    (_S.WAITING, _Input.KEY): "_on_key",
    (_S.WAITING, _Input.TIMER): "_on_timeout",
    (_S.COLLECTING, _Input.KEY): "_on_dial_key",
    (_S.COLLECTING, _Input.TIMER): "_on_dial_timeout",
    (_S.ROUTED, _Input.UNAVAILABLE): "_on_unavailable",
}
# Inputs the host decides to send: refusing them points at a bug in the host.
_HOST_INPUTS = frozenset({_Input.START, _Input.UNAVAILABLE})


class IvrSession:
    """One caller's walk through the menu tree under ``root``.

    ``known_extension(digits)`` says whether a dialled extension exists (direct dialling); it
    is only called for menus with ``direct_dial``. Raises :class:`~ivr.errors.IvrConfigError`
    when the tree has problems (:func:`ivr.model.menu_problems`).
    """

    def __init__(self, root: Menu, known_extension: Callable[[str], bool]) -> None:
        check_menu(root)
        self._root = root
        self._known_extension = known_extension
        self._state = SessionState.IDLE
        # The menus from the top to the current one, each with the key that opened it.
        self._frames: list[tuple[str, Menu]] = [("", root)]
        self._entered: set[str] = set()
        self._failures = 0
        self._deadline: float | None = None
        self._digits = ""
        # Keys pressed in the current menu that are part of the path (the routing option's
        # key or the dialled extension), and whether the pending route is on_failure.
        self._extra = ""
        self._from_failure = False

    # -- what the host reads -------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        """Where the session is."""
        return self._state

    @property
    def path(self) -> str:
        """The keys pressed so far that led to the current place (``"31"``); back steps and
        invalid keys are not in it."""
        return "".join(key for key, _ in self._frames) + self._extra

    @property
    def menu(self) -> Menu:
        """The current menu."""
        return self._frames[-1][1]

    @property
    def failures(self) -> int:
        """Consecutive timeouts and invalid entries in the current menu."""
        return self._failures

    def get_timer(self) -> float | None:
        """When :meth:`timer` is due, or ``None`` when no timer is running."""
        return self._deadline

    # -- inputs ----------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """The call reached the menu: play the top menu."""
        return self._dispatch(_Input.START, now, "")

    def prompt_done(self, now: float) -> list[Action]:
        """The last ``Play`` finished (not reported for one stopped by ``StopPlaying``)."""
        return self._dispatch(_Input.PROMPT_DONE, now, "")

    def key(self, digit: str, now: float) -> list[Action]:
        """The caller pressed ``digit``: one of ``0-9 * # A B C D`` (RFC 4733 3.2); any other
        value is a :class:`ValueError`."""
        if not isinstance(digit, str) or len(digit) != 1 or digit.upper() not in DTMF_KEYS:
            raise ValueError(f"{digit!r} is not a phone key (0-9, *, #, A-D)")
        return self._dispatch(_Input.KEY, now, digit.upper())

    def timer(self, now: float) -> list[Action]:
        """The time asked for by ``StartTimer`` came; early or stale calls do nothing."""
        return self._dispatch(_Input.TIMER, now, "")

    def target_unavailable(self, now: float) -> list[Action]:
        """The target of the last ``RouteTo`` had nobody available."""
        return self._dispatch(_Input.UNAVAILABLE, now, "")

    def _dispatch(self, event: _Input, now: float, digit: str) -> list[Action]:
        if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
            raise ValueError(f"now must be a finite number of seconds, not {now!r}")
        name = _HANDLERS.get((self._state, event))
        if name is None:
            if event in _HOST_INPUTS:
                raise IvrStateError(self._state.value, event.value)
            return []
        handler: Callable[[float, str], list[Action]] = getattr(self, name)
        return handler(float(now), digit)

    # -- handlers (named in _HANDLERS) ---------------------------------------------------------

    def _on_start(self, now: float, _digit: str) -> list[Action]:
        return self._enter(now)

    def _on_prompt_done(self, now: float, _digit: str) -> list[Action]:
        return self._wait(now, self.menu.timeout, SessionState.WAITING)

    def _on_key_while_playing(self, now: float, digit: str) -> list[Action]:
        if not self.menu.barge_in:
            return []
        return [StopPlaying(), *self._on_key(now, digit)]

    def _on_key(self, now: float, digit: str) -> list[Action]:
        self._deadline = None
        if self.menu.direct_dial and digit.isdigit():
            self._digits = digit
            return self._wait(now, self.menu.inter_digit_timeout, SessionState.COLLECTING)
        return self._menu_key(now, digit)

    def _on_timeout(self, now: float, _digit: str) -> list[Action]:
        if self._deadline is None or now < self._deadline:
            return []
        self._deadline = None
        return self._failure(now, notice=None)

    def _on_dial_key(self, now: float, digit: str) -> list[Action]:
        if digit.isdigit():
            self._digits += digit
            if len(self._digits) >= MAX_DIAL_DIGITS:
                return self._end_dial(now)
            return self._wait(now, self.menu.inter_digit_timeout, SessionState.COLLECTING)
        if digit == "#":
            return self._end_dial(now)
        # Another key: the caller gave up on the extension and chose something else.
        self._digits = ""
        self._deadline = None
        return self._menu_key(now, digit)

    def _on_dial_timeout(self, now: float, _digit: str) -> list[Action]:
        if self._deadline is None or now < self._deadline:
            return []
        return self._end_dial(now)

    def _on_unavailable(self, now: float, _digit: str) -> list[Action]:
        menu = self.menu
        if self._from_failure or menu.after_unavailable == "hangup":
            return self._hangup(menu.unavailable if menu.unavailable is not None
                                else menu.goodbye)
        self._extra = ""
        self._from_failure = False
        self._failures = 0
        return self._play(now, notice=menu.unavailable, welcome=False)

    # -- decisions -------------------------------------------------------------------------

    def _menu_key(self, now: float, digit: str) -> list[Action]:
        """``digit`` is a whole entry in the current menu."""
        menu = self.menu
        if digit == menu.back_key:
            if len(self._frames) > 1:
                self._frames.pop()
            self._failures = 0
            return self._play(now, notice=None, welcome=False)
        if digit == menu.repeat_key:
            self._failures = 0
            return self._play(now, notice=None, welcome=False)
        option = menu.options.get(digit)
        if option is None:
            return self._failure(now, notice=menu.invalid)
        if option.submenu is not None:
            self._frames.append((digit, option.submenu))
            return self._enter(now)
        assert option.route is not None  # check_menu: exactly one of route and submenu
        return self._route(option.route, digit, from_failure=False)

    def _end_dial(self, now: float) -> list[Action]:
        digits, self._digits = self._digits, ""
        self._deadline = None
        menu = self.menu
        if len(digits) == 1 and (
            digits in menu.options or digits in (menu.back_key, menu.repeat_key)
        ):
            return self._menu_key(now, digits)
        if self._known_extension(digits):
            return self._route(Route(DIRECT_DIAL_KIND, digits), digits, from_failure=False)
        return self._failure(now, notice=menu.invalid)

    def _failure(self, now: float, notice: Prompt | None) -> list[Action]:
        menu = self.menu
        self._failures += 1
        if self._failures <= menu.max_retries:
            return self._play(now, notice=notice, welcome=False)
        if menu.on_failure is not None:
            return self._route(menu.on_failure, "", from_failure=True)
        return self._hangup(menu.goodbye)

    # -- state changes ---------------------------------------------------------------------

    def _enter(self, now: float) -> list[Action]:
        """Enter the current menu (the last frame)."""
        self._failures = 0
        self._extra = ""
        here = self.path
        first = here not in self._entered
        self._entered.add(here)
        return self._play(now, notice=None, welcome=first)

    def _play(self, now: float, *, notice: Prompt | None, welcome: bool) -> list[Action]:
        menu = self.menu
        self._extra = ""
        self._deadline = None
        prompts: list[Prompt] = []
        if notice is not None:
            prompts.append(notice)
        if welcome and menu.welcome is not None:
            prompts.append(menu.welcome)
        prompts.extend(menu.menu_prompts())
        if not prompts:
            # Nothing to say (a direct-dial menu without prompts): wait for keys at once.
            return self._wait(now, menu.timeout, SessionState.WAITING)
        self._state = SessionState.PLAYING
        return [Play(tuple(prompts), menu.barge_in)]

    def _wait(self, now: float, seconds: float, state: SessionState) -> list[Action]:
        self._state = state
        self._deadline = now + seconds
        return [StartTimer(self._deadline)]

    def _route(self, route: Route, extra: str, *, from_failure: bool) -> list[Action]:
        self._state = SessionState.ROUTED
        self._deadline = None
        self._extra = extra
        self._from_failure = from_failure
        return [RouteTo(route, self.path)]

    def _hangup(self, prompt: Prompt | None) -> list[Action]:
        self._state = SessionState.ENDED
        self._deadline = None
        return [Hangup(prompt)]
