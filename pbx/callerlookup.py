"""CRM look-ups of callers' numbers, off the event loop, bounded in threads and in time.

The look-up itself is blocking (a database query, see ``crmsync.lookup``). Every caller of the
PBX that needs one (a queue's assignment rules, the name an outside caller's phones show) runs
it here: in a small pool of its own rather than the default one, so a database that hangs keeps
at most these threads busy (callers then go on without a look-up) instead of starving prompts
and reloads; and never more than a few look-ups pending at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="crm-lookup")
#: Look-ups running or waiting for a thread; beyond this, callers go on without one (a
#: look-up takes a millisecond or two: this many pending means the database is in trouble).
MAX_PENDING = 64
_pending = 0
#: Slow or failed look-ups are logged at most once per this many seconds (with a count).
_LOG_EVERY = 10.0
_quiet_until = 0.0
_unlogged = 0


def start_lookup(lookup: Callable[[str], T], number: str) -> asyncio.Future[T] | None:
    """Start ``lookup(number)`` in the pool; None when too many are pending already."""
    global _pending
    if _pending >= MAX_PENDING:
        return None
    _pending += 1
    future = asyncio.get_running_loop().run_in_executor(_POOL, lookup, number)

    def done(f: asyncio.Future[T]) -> None:
        global _pending
        _pending -= 1
        if not f.cancelled():
            f.exception()  # seen here: a look-up given up on must not log "never retrieved"

    future.add_done_callback(done)
    return future


async def wait_lookup(future: asyncio.Future[T] | None, number: str, timeout: float,
                      default: T, what: str) -> T:
    """The look-up's answer, or ``default`` after ``timeout`` seconds or on an error (the
    look-up goes on in its thread and is dropped). ``what`` says what goes on without it."""
    if future is None:
        return default
    if timeout <= 0 and not future.done():
        return default  # the call's setup took the time already: not the look-up's fault
    try:
        return await asyncio.wait_for(asyncio.shield(future), max(0.0, timeout))
    except TimeoutError:
        _log(logging.WARNING, "CRM look-up of %s took over %.1f s; %s without it", number,
             timeout, what)
    except Exception as exc:
        _log(logging.ERROR, "CRM look-up of %s failed (%s); %s without it", number, exc, what)
    return default


def _log(level: int, message: str, *args: object) -> None:
    """Log, but not more than once per ``_LOG_EVERY`` seconds: under load a slow database
    would otherwise write a line per call."""
    global _quiet_until, _unlogged
    now = time.monotonic()
    if now < _quiet_until:
        _unlogged += 1
        return
    if _unlogged:
        message += f" ({_unlogged} more like it in the last {_LOG_EVERY:g} s)"
    _quiet_until = now + _LOG_EVERY
    _unlogged = 0
    logger.log(level, message, *args)


async def look_up(lookup: Callable[[str], T] | None, number: str, timeout: float,
                  default: T, what: str) -> T:
    """``lookup(number)`` in the pool, at most ``timeout`` seconds; else ``default``."""
    if lookup is None:
        return default
    return await wait_lookup(start_lookup(lookup, number), number, timeout, default, what)
