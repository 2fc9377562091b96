"""The IVR package's errors: one base, :class:`IvrError`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import MenuProblem

__all__ = ["IvrConfigError", "IvrError", "IvrStateError"]


class IvrError(Exception):
    """Base of every error this package raises."""


class IvrConfigError(IvrError, ValueError):
    """A menu tree that cannot run; ``problems`` lists every problem found, with its path."""

    def __init__(self, problems: list[MenuProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class IvrStateError(IvrError):
    """The host called an input the session does not accept in its state (``start`` twice,
    ``target_unavailable`` with no route pending). The session's state does not change."""

    def __init__(self, state: str, event: str) -> None:
        self.state = state
        self.event = event
        super().__init__(f"IVR session in state {state} cannot take {event}")
