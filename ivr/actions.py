"""What an :class:`~ivr.session.IvrSession` asks its host to do: frozen values, one per kind.

The host performs them in the order given. ``RouteTo`` and ``Hangup`` end the menu; after a
``RouteTo`` the host may still report that the target had nobody available
(:meth:`~ivr.session.IvrSession.target_unavailable`), and the menu goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import Prompt, Route

__all__ = ["Action", "Hangup", "Play", "RouteTo", "StartTimer", "StopPlaying"]


@dataclass(frozen=True, slots=True)
class Play:
    """Play ``prompts`` one after the other, then report
    :meth:`~ivr.session.IvrSession.prompt_done`."""

    prompts: tuple[Prompt, ...]
    barge_in: bool
    """True: a key stops the playing at once (the session sends :class:`StopPlaying` when it
    gets that key). False: play to the end; keys pressed meanwhile are ignored."""


@dataclass(frozen=True, slots=True)
class StopPlaying:
    """Stop what is playing now, and do not report ``prompt_done`` for it."""


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Call :meth:`~ivr.session.IvrSession.timer` at time ``at`` (the clock of ``now``).
    It replaces any timer asked for before; a timer that fires when none is due is ignored."""

    at: float


@dataclass(frozen=True, slots=True)
class RouteTo:
    """The caller chose ``route``; ``path_keys`` are the keys that led there (``"31"``: option 3
    of the top menu, then option 1), or the menu's keys and the extension dialled."""

    route: Route
    path_keys: str


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call, after playing ``prompt`` to the end if there is one."""

    prompt: Prompt | None


Action = Play | StopPlaying | StartTimer | RouteTo | Hangup
"""Any of the actions above."""
