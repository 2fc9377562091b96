"""Event loops for async tests: the default asyncio loop and uvloop.

``tests/conftest.py`` offers both to pytest-asyncio through its
``pytest_asyncio_loop_factories`` hook (pytest-asyncio 1.4+). Tests run on
the default loop only, unless they opt in with :data:`on_all_loops`::

    @on_all_loops
    async def test_something() -> None: ...
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import uvloop

LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
"""Loop factory by name; the first one is the default for every async test."""


def _loop_factories_supported() -> bool:
    # The hook and the marker's loop_factories argument arrived in 1.4.
    import pytest_asyncio

    parts = str(getattr(pytest_asyncio, "__version__", "0")).split(".")[:2]
    return tuple(int(p) for p in parts if p.isdigit()) >= (1, 4)


LOOP_FACTORIES_SUPPORTED = _loop_factories_supported()
"""Whether the installed pytest-asyncio can run a test on several loops."""

on_all_loops = (
    pytest.mark.asyncio(loop_factories=list(LOOP_FACTORIES))
    if LOOP_FACTORIES_SUPPORTED
    else pytest.mark.asyncio
)
"""Marker: run this async test once per loop in :data:`LOOP_FACTORIES`
(on the default loop only with pytest-asyncio older than 1.4)."""


def running_loop_name() -> str:
    """``"uvloop"`` or ``"asyncio"``: which kind of loop runs the caller."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
