"""Shared test configuration: import path, free ports, SIPp, event loops."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

# The peers live in the ``tests.peers`` package and the phone processes are
# started as ``python -m tests.peers...``; make that importable however
# pytest was invoked (``pytest`` or ``python -m pytest``, any directory).
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.peers import ports  # noqa: E402
from tests.peers.loops import LOOP_FACTORIES, LOOP_FACTORIES_SUPPORTED  # noqa: E402


@pytest.fixture
def free_port() -> int:
    """A loopback port free for both UDP and TCP (see :func:`tests.peers.ports.free_port`)."""
    return ports.free_port()


@pytest.fixture
def free_udp_port() -> int:
    """A free loopback UDP port."""
    return ports.free_udp_port()


@pytest.fixture(scope="session")
def sipp() -> str:
    """Path of the ``sipp`` binary. A missing SIPp FAILS the test: CI installs it."""
    path = shutil.which("sipp")
    if path is None:
        pytest.fail("sipp is not installed (apt-get install sip-tester); .ci/run installs it")
    return path


if LOOP_FACTORIES_SUPPORTED:

    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
        """Offer asyncio and uvloop to tests that ask (``tests.peers.loops.on_all_loops``).

        Every other async test gets the default loop only, under its usual name.
        """
        marker = item.get_closest_marker("asyncio")
        if marker is not None and marker.kwargs.get("loop_factories"):
            return LOOP_FACTORIES
        name = next(iter(LOOP_FACTORIES))
        return {name: LOOP_FACTORIES[name]}
