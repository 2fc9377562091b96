"""The PBX's IVR: multi-level DTMF menus.

- :mod:`ivr.model` holds the menu tree (:class:`Menu`, :class:`Option`, :class:`Route`,
  :class:`Prompt`) and its validation (:func:`menu_problems`, naming each problem's path).
- :mod:`ivr.session` is the sans-I/O state machine of one caller in a tree
  (:class:`IvrSession`): keys, prompt ends, timers and unavailable targets in, the
  :mod:`ivr.actions` to perform out (:class:`Play`, :class:`StopPlaying`, :class:`StartTimer`,
  :class:`RouteTo`, :class:`Hangup`).
- :mod:`ivr.runner` drives a session over a host's :class:`Channel` with asyncio.

The package knows nothing of SIP, RTP or the configuration: prompts and routes are opaque
values the host resolves, and keys arrive as plain characters whichever detector heard them.
"""

from __future__ import annotations

from .actions import Action, Hangup, Play, RouteTo, StartTimer, StopPlaying
from .errors import IvrConfigError, IvrError, IvrStateError
from .model import (
    DIRECT_DIAL_KIND,
    DTMF_KEYS,
    MAX_DEPTH,
    MAX_RETRIES_LIMIT,
    MAX_TIMEOUT,
    MENU_KEYS,
    Menu,
    MenuProblem,
    Option,
    Prompt,
    Route,
    check_menu,
    menu_problems,
)
from .runner import Channel, IvrRunner, Outcome
from .session import IvrSession, SessionState

__all__ = [
    "DIRECT_DIAL_KIND",
    "DTMF_KEYS",
    "MAX_DEPTH",
    "MAX_RETRIES_LIMIT",
    "MAX_TIMEOUT",
    "MENU_KEYS",
    "Action",
    "Channel",
    "Hangup",
    "IvrConfigError",
    "IvrError",
    "IvrRunner",
    "IvrSession",
    "IvrStateError",
    "Menu",
    "MenuProblem",
    "Option",
    "Outcome",
    "Play",
    "Prompt",
    "Route",
    "RouteTo",
    "SessionState",
    "StartTimer",
    "StopPlaying",
    "check_menu",
    "menu_problems",
]
