"""Services the PBX answers itself, reached by feature codes (``*43`` echo test, ``*44`` key test).

They let an admin or a user check a phone's audio path and key sending without calling anyone:
- echo test: a spoken explanation, a beep, then everything the caller says comes back about
  100 ms later (through the jitter buffer and the engine clock), until the caller hangs up
  (at most ``ECHO_LIMIT`` seconds);
- key test: a spoken explanation, then every key the caller presses is read back ("You pressed
  5."), whichever way the phone sends keys (RFC 4733, SIP INFO or in-band, by the user's
  ``dtmf_mode``); after ``KEY_IDLE`` seconds without a key, goodbye.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from media.player import FrameQueue
from media.sources import PlaylistSource
from media.tones import beep

from .localcall import LocalCall, Service
from .presence import PresenceState

if TYPE_CHECKING:
    from .prompts import Prompts

ECHO_LIMIT = 300.0
KEY_IDLE = 20.0
#: Frames of caller audio kept for the echo: more would only add delay.
_ECHO_DEPTH = 8


def echo_test(prompts: Callable[[], Prompts]) -> Service:
    async def run(call: LocalCall) -> None:
        await call.play(prompts().get("echo_test"))
        await call.play(PlaylistSource([np.concatenate(beep(1000.0, 0.3))]))
        echo = FrameQueue(_ECHO_DEPTH)
        call.audio_sink = echo.push
        call.stream(echo)
        await call.wait_ended(ECHO_LIMIT)

    return run


def key_test(prompts: Callable[[], Prompts]) -> Service:
    async def run(call: LocalCall) -> None:
        p = prompts()
        pressed = await call.play(p.get("dtmf_test"), barge_in=True)
        while True:
            key = pressed or await call.key(KEY_IDLE)
            if key is None:
                await call.play(prompts().get("goodbye"))
                return
            pressed = await call.play(prompts().digit(key), barge_in=True)

    return run


def set_presence(prompts: Callable[[], Prompts],
                 setter: Callable[[str, PresenceState], None],
                 state: PresenceState) -> Service:
    """The caller's presence becomes ``state``; a short announcement confirms it."""
    async def run(call: LocalCall) -> None:
        setter(call.caller.id, state)
        await call.play(prompts().get(f"presence_{state.value}"))

    return run


def builtin_services(prompts: Callable[[], Prompts],
                     presence: Callable[[str, PresenceState], None],
                     ) -> dict[str, tuple[str, Service]]:
    """``features`` key -> (name for the logs, service) for the services that ship with the
    PBX; the config says which code reaches each."""
    return {
        "echo_test": ("echo test", echo_test(prompts)),
        "key_test": ("key test", key_test(prompts)),
        "available": ("presence available",
                      set_presence(prompts, presence, PresenceState.AVAILABLE)),
        "do_not_disturb": ("presence do not disturb",
                           set_presence(prompts, presence, PresenceState.DO_NOT_DISTURB)),
        "offline": ("presence offline", set_presence(prompts, presence, PresenceState.OFFLINE)),
    }
