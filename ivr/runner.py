"""A thin asyncio driver of :class:`~ivr.session.IvrSession` over a host's :class:`Channel`.

The session decides; the runner only waits. It plays what the session asks for through
:meth:`Channel.play` (which returns the key that interrupted a barge-in prompt), waits for keys
with :meth:`Channel.key` until the session's timer, feeds what happened back with the time of
``clock`` (the event loop's clock by default) and returns when the menu ends:

* :class:`~ivr.actions.RouteTo`: the host connects the call; if the target turns out to have
  nobody, :meth:`IvrRunner.target_unavailable` takes the caller back into the menu and runs it
  to its next end.
* :class:`~ivr.actions.Hangup`: its prompt has already been played (to the end, no barge-in);
  the host only ends the call.

How a :class:`~ivr.model.Prompt` becomes audio is the channel's business. Every wait is bounded
by the session's timers; a channel that keeps returning at once without the clock moving is
stopped after ``max_steps`` inputs with :class:`~ivr.errors.IvrError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from .actions import Action, Hangup, Play, RouteTo, StartTimer, StopPlaying
from .errors import IvrError
from .model import Prompt
from .session import IvrSession

__all__ = ["Channel", "IvrRunner", "Outcome"]

logger = logging.getLogger(__name__)

Outcome = RouteTo | Hangup
"""How a menu ends."""

DEFAULT_MAX_STEPS = 10_000
"""Inputs one :meth:`IvrRunner.run` feeds at most; a real caller needs a few dozen."""


class Channel(Protocol):
    """The caller's side of the call, implemented by the host."""

    async def play(self, prompts: tuple[Prompt, ...], barge_in: bool) -> str | None:
        """Play ``prompts`` in order. With ``barge_in``, stop at the first key and return it;
        return ``None`` when everything played. Without ``barge_in``, play to the end and
        return ``None``."""
        ...

    async def key(self, timeout: float) -> str | None:
        """The next key the caller presses (a key pressed since the last ``play`` or ``key``
        returned counts), or ``None`` when ``timeout`` seconds pass without one."""
        ...


class IvrRunner:
    """Runs ``session`` on ``channel`` until the menu ends."""

    def __init__(
        self,
        session: IvrSession,
        channel: Channel,
        *,
        clock: Callable[[], float] | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
    ) -> None:
        self._session = session
        self._channel = channel
        self._clock = clock
        self._max_steps = max_steps

    @property
    def session(self) -> IvrSession:
        """The session being driven."""
        return self._session

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        return asyncio.get_running_loop().time()

    async def run(self) -> Outcome:
        """Start the menu and run it to its end."""
        return await self._drive(self._session.start(self._now()))

    async def target_unavailable(self) -> Outcome:
        """The target of the returned :class:`~ivr.actions.RouteTo` had nobody available:
        go back into the menu (or hang up, as the menu says) and run it to its next end."""
        return await self._drive(self._session.target_unavailable(self._now()))

    async def _drive(self, first: list[Action]) -> Outcome:
        session = self._session
        actions: deque[Action] = deque(first)
        for _ in range(self._max_steps):
            while actions:
                action = actions.popleft()
                if isinstance(action, RouteTo):
                    return action
                if isinstance(action, Hangup):
                    if action.prompt is not None:
                        await self._channel.play((action.prompt,), False)
                    return action
                if isinstance(action, Play):
                    pressed = await self._channel.play(action.prompts, action.barge_in)
                    if pressed is not None and action.barge_in:
                        actions.extend(session.key(pressed, self._now()))
                    else:
                        actions.extend(session.prompt_done(self._now()))
                    break
                # StartTimer: the wait below asks get_timer(). StopPlaying: the channel's
                # play already returned at the key that stopped it.
                assert isinstance(action, StartTimer | StopPlaying)
            else:
                actions.extend(await self._wait())
        raise IvrError(f"IVR did not end after {self._max_steps} inputs "
                       f"(state {session.state.value}, path {session.path!r})")

    async def _wait(self) -> list[Action]:
        """Wait for a key until the session's timer; feed whichever comes first."""
        session = self._session
        deadline = session.get_timer()
        if deadline is None:
            # Only PLAYING has no timer, and a Play is always followed by its answer above.
            raise IvrError(f"IVR session waits with no timer in state {session.state.value}")
        pressed = await self._channel.key(max(0.0, deadline - self._now()))
        now = self._now()
        if pressed is not None:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("IVR key %s at %r in state %s", pressed, session.path,
                             session.state.value)
            return session.key(pressed, now)
        # The channel's clock may run a hair ahead of ours: fire at the deadline anyway, since
        # the channel has waited the full time (asking again would wait ~0 s in a loop).
        return session.timer(max(now, deadline))
