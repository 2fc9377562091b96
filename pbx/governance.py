"""Recording governance on the running PBX: the quota gate, retention, erasure and legal holds.

- **Quota** (``recording.quota_minutes``): the PBX keeps the minutes of stored recordings in
  memory (read from the store at start, grown by every recording that ends, shrunk by
  retention and erasure). Once they reach the quota a new recording is not started: the call's
  record says ``recording_state: quota``, and the admin hears of it once per crossing (a
  warning in the log and a ``recording.quota_reached`` event on the event stream). Raising the
  quota (a reload) or recordings expiring resumes recording, said in the log once.
- **Retention** (``recording.retention``): once an hour, and once shortly after start,
  recordings older than that are deleted and their records say ``expired``; calls under a legal
  hold are kept.
- **Erasure** and **legal holds** go through :class:`GovernanceStore` in a worker thread; each
  leaves an audit entry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from .records import CallEnded, CallEvent, RecordingSkipped

logger = logging.getLogger(__name__)

#: Between two retention passes.
RETENTION_EVERY = 3600.0
#: The first pass, after start.
RETENTION_FIRST = 30.0


def months_before(moment: datetime, months: int) -> datetime:
    """The same day and time ``months`` calendar months earlier (the month's last day when
    that day does not exist: 31 August minus 6 months is 28 or 29 February)."""
    year, month = divmod(moment.year * 12 + moment.month - 1 - months, 12)
    month += 1
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
    return moment.replace(year=year, month=month, day=min(moment.day, days))


class GovernanceStore(Protocol):
    """What the PBX needs of the store (``crmsync.governance.Governance``; blocking)."""

    def recording_seconds(self) -> float: ...

    def expire(self, cutoff: datetime) -> float: ...

    def erase(self, number: str, actor: str) -> Any: ...

    def hold(self, call_id: str, hold: bool, actor: str) -> None: ...

    def audit(self, limit: int = 100) -> list[Any]: ...


class RecordingGovernance:
    """See the module docstring."""

    def __init__(self, store: GovernanceStore, emit: Callable[[CallEvent], None],
                 notify: Callable[[dict[str, Any]], None]) -> None:
        self._store = store
        self._emit = emit
        self._notify = notify
        self.used_seconds = 0.0
        self.quota_minutes: float | None = None
        self.retention: tuple[int, str] | None = None
        self._over = False
        self._task: asyncio.Task[None] | None = None

    def configure(self, quota_minutes: float | None, retention: tuple[int, str] | None) -> None:
        """Apply ``recording.quota_minutes`` and ``recording.retention`` (start and reload)."""
        self.quota_minutes = quota_minutes
        self.retention = retention
        self._check()

    async def start(self) -> None:
        self.used_seconds = await asyncio.to_thread(self._store.recording_seconds)
        self._check()
        self._task = asyncio.get_running_loop().create_task(self._retention_loop())
        logger.info("recordings: %.1f minutes stored, quota %s", self.used_seconds / 60,
                    "none" if self.quota_minutes is None else f"{self.quota_minutes:g} min")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # -- the quota ------------------------------------------------------------------------------
    def allow(self, call_id: str) -> bool:
        """Whether ``call_id`` may be recorded now (the gate of :class:`pbx.recording.
        Recordings`); a refusal is written to the call's record."""
        if not self._reached():
            return True
        self._emit(RecordingSkipped(call_id, "quota"))
        self._check()
        return False

    def on_record(self, event: CallEvent) -> None:
        """Every call-record event: a finished recording counts against the quota."""
        if isinstance(event, CallEnded) and event.recording_path and event.recording_seconds:
            self.used_seconds += event.recording_seconds
            self._check()

    def _reached(self) -> bool:
        quota = self.quota_minutes
        return quota is not None and self.used_seconds >= quota * 60.0

    def _check(self) -> None:
        reached = self._reached()
        if reached and not self._over:
            logger.warning("recording quota reached: %.1f of %g minutes stored; new calls are "
                           "not recorded until recordings expire or the quota is raised",
                           self.used_seconds / 60, self.quota_minutes or 0.0)
            self._notify({"event": "recording.quota_reached",
                          "used_minutes": round(self.used_seconds / 60, 2),
                          "quota_minutes": self.quota_minutes})
        elif self._over and not reached:
            logger.info("recording resumes: %.1f minutes stored, quota %s",
                        self.used_seconds / 60, self.quota_minutes)
            self._notify({"event": "recording.quota_resumed",
                          "used_minutes": round(self.used_seconds / 60, 2),
                          "quota_minutes": self.quota_minutes})
        self._over = reached

    def usage(self) -> dict[str, Any]:
        return {"used_minutes": round(self.used_seconds / 60, 3),
                "quota_minutes": self.quota_minutes, "recording": not self._reached(),
                "retention": None if self.retention is None
                else f"{self.retention[0]}{self.retention[1]}"}

    # -- retention ------------------------------------------------------------------------------
    def cutoff(self, now: datetime) -> datetime | None:
        """Recordings of calls started before this are due (None: kept for ever)."""
        if self.retention is None:
            return None
        amount, unit = self.retention
        if unit == "d":
            return now - timedelta(days=amount)
        return months_before(now, amount * (12 if unit == "y" else 1))

    async def expire_now(self) -> float:
        """One retention pass; returns the seconds of recordings deleted."""
        cutoff = self.cutoff(datetime.now(UTC).replace(tzinfo=None))
        if cutoff is None:
            return 0.0
        freed = await asyncio.to_thread(self._store.expire, cutoff)
        if freed:
            self.used_seconds = max(0.0, self.used_seconds - freed)
            self._check()
        return freed

    async def _retention_loop(self) -> None:
        await asyncio.sleep(RETENTION_FIRST)
        while True:
            try:
                await self.expire_now()
            except Exception:
                logger.exception("retention pass failed")
            await asyncio.sleep(RETENTION_EVERY)

    # -- erasure and holds (the API) -----------------------------------------------------------
    async def erase(self, number: str, actor: str) -> Any:
        result = await asyncio.to_thread(self._store.erase, number, actor)
        # The erased recordings no longer count; read the store's sum again.
        self.used_seconds = await asyncio.to_thread(self._store.recording_seconds)
        self._check()
        return result

    async def hold(self, call_id: str, hold: bool, actor: str) -> None:
        await asyncio.to_thread(self._store.hold, call_id, hold, actor)

    async def audit(self, limit: int) -> list[Any]:
        return await asyncio.to_thread(self._store.audit, limit)
