"""CRM look-ups off the event loop: bounded in time (a hung database delays nobody for longer
than asked) and in number (beyond a few pending, callers go on without one)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from pbx import callerlookup
from pbx.callerlookup import MAX_PENDING, look_up, start_lookup, wait_lookup


@pytest.fixture(autouse=True)
def _logs_not_held_back() -> None:
    """Each test sees its own first warning (they are logged once per 10 s at most)."""
    callerlookup._quiet_until = 0.0
    callerlookup._unlogged = 0


@pytest.mark.asyncio
async def test_a_slow_database_is_logged_once_per_ten_seconds(
        caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()

    def hung(number: str) -> str:
        release.wait(10)
        return number

    with caplog.at_level(logging.WARNING, logger="pbx.callerlookup"):
        for n in range(3):
            assert await look_up(hung, f"+8190000000{n}", 0.05, None, "ringing") is None
    release.set()
    assert caplog.text.count("took over") == 1
    for _ in range(200):  # the released look-ups finish (the next tests count what is pending)
        if callerlookup._pending == 0:
            break
        await asyncio.sleep(0.01)
    assert callerlookup._pending == 0
    # No time left for it (the call's setup took it): no look-up waited for, nothing logged.
    future = start_lookup(lambda n: n, "+819012345678")
    callerlookup._quiet_until = 0.0
    with caplog.at_level(logging.WARNING, logger="pbx.callerlookup"):
        caplog.clear()
        assert await wait_lookup(future, "+819012345678", 0.0, "d", "ringing") == "d"
    assert caplog.text == ""
    assert future is not None
    await future


@pytest.mark.asyncio
async def test_an_answer_in_time_is_used() -> None:
    assert await look_up(lambda n: f"name of {n}", "+819012345678", 0.5, None,
                         "ringing") == "name of +819012345678"
    assert await look_up(None, "+819012345678", 0.5, "default", "ringing") == "default"


@pytest.mark.asyncio
async def test_a_hung_lookup_is_given_up_after_the_timeout(
        caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()

    def hung(number: str) -> str:
        release.wait(10)
        return "too late"

    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="pbx.callerlookup"):
            found = await look_up(hung, "+819012345678", 0.3, None, "ringing")
        took = time.monotonic() - started
    finally:
        release.set()
    assert found is None and 0.25 <= took <= 0.6, took
    assert "took over 0.3 s; ringing without it" in caplog.text
    await _drained()


@pytest.mark.asyncio
async def test_a_failing_lookup_gives_the_default(caplog: pytest.LogCaptureFixture) -> None:
    def broken(number: str) -> str:
        raise RuntimeError("database is gone")

    with caplog.at_level(logging.ERROR, logger="pbx.callerlookup"):
        assert await look_up(broken, "+819012345678", 0.5, "x", "queued") == "x"
    assert "failed (database is gone); queued without it" in caplog.text
    await _drained()


@pytest.mark.asyncio
async def test_no_more_than_a_few_lookups_wait_at_once() -> None:
    release = threading.Event()

    def hung(number: str) -> str:
        release.wait(10)
        return number

    pending = [start_lookup(hung, str(n)) for n in range(MAX_PENDING)]
    try:
        assert all(f is not None for f in pending)
        assert start_lookup(hung, "one too many") is None
        assert await wait_lookup(None, "one too many", 0.5, "default", "ringing") == "default"
    finally:
        release.set()
    assert [await f for f in pending if f is not None] == [str(n) for n in range(MAX_PENDING)]
    await _drained()
    again = start_lookup(lambda n: n, "again")  # room again once they finished
    assert again is not None and await again == "again"


async def _drained() -> None:
    """Every look-up's thread has finished (the pool is shared by the whole process)."""
    deadline = time.monotonic() + 5
    while callerlookup._pending and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert callerlookup._pending == 0
