"""The recording quota gate and retention cut-off on the running side (pbx.governance), with
a store in memory."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from pbx.governance import RecordingGovernance, months_before
from pbx.records import CallEnded, CallEvent, RecordingSkipped


class _Store:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def recording_seconds(self) -> float:
        return self.seconds

    def expire(self, cutoff: datetime) -> float:
        return 0.0

    def erase(self, number: str, actor: str) -> Any:
        return None

    def hold(self, call_id: str, hold: bool, actor: str) -> None:
        return None

    def audit(self, limit: int = 100) -> list[Any]:
        return []


def _ended(call_id: str, seconds: float) -> CallEnded:
    return CallEnded(call_id, datetime(2026, 11, 21), "answered", "caller hung up", "caller",
                     None, seconds, 1.0, f"/rec/{call_id}.wav", seconds)


@pytest.mark.asyncio
async def test_the_quota_stops_new_recordings_once_and_a_higher_one_resumes_them() -> None:
    emitted: list[CallEvent] = []
    notes: list[dict[str, Any]] = []
    gov = RecordingGovernance(_Store(50.0), emitted.append, notes.append)
    gov.configure(1.0, None)  # one minute
    await gov.start()
    try:
        assert gov.allow("c1")
        gov.on_record(_ended("c1", 15.0))
        assert notes and notes[-1]["event"] == "recording.quota_reached"
        assert not gov.allow("c2") and not gov.allow("c3")
        assert emitted == [RecordingSkipped("c2", "quota"), RecordingSkipped("c3", "quota")]
        assert len(notes) == 1  # said once per crossing
        assert gov.usage()["recording"] is False
        gov.configure(2.0, None)
        assert notes[-1]["event"] == "recording.quota_resumed" and gov.allow("c4")
        gov.configure(None, None)
        gov.on_record(_ended("c4", 600.0))
        assert gov.allow("c5")
    finally:
        await gov.stop()


def test_retention_counts_calendar_months_days_and_years() -> None:
    gov = RecordingGovernance(_Store(0.0), lambda _e: None, lambda _n: None)
    now = datetime(2026, 8, 31, 10, 0)
    gov.configure(None, (6, "m"))
    assert gov.cutoff(now) == datetime(2026, 2, 28, 10, 0)
    gov.configure(None, (3, "m"))
    assert gov.cutoff(now) == datetime(2026, 5, 31, 10, 0)
    gov.configure(None, (90, "d"))
    assert gov.cutoff(now) == datetime(2026, 6, 2, 10, 0)
    gov.configure(None, (1, "y"))
    assert gov.cutoff(now) == datetime(2025, 8, 31, 10, 0)
    gov.configure(None, None)
    assert gov.cutoff(now) is None
    assert months_before(datetime(2024, 3, 31), 1) == datetime(2024, 2, 29)
    assert months_before(datetime(2026, 1, 15), 2) == datetime(2025, 11, 15)


def test_recording_quota_and_retention_in_the_config(tmp_path: Any) -> None:
    from tests.pbx.test_config_routing import load, problems

    config = load(tmp_path, "recording: {enabled: true, quota_minutes: 500, retention: 3m}\n")
    assert config.recording.quota_minutes == 500 and config.recording.retention == (3, "m")
    keep = load(tmp_path, "recording: {quota_minutes: null, retention: null}\n")
    assert keep.recording.quota_minutes is None and keep.recording.retention is None
    assert load(tmp_path, "logging: {level: info}\n").recording.retention == (6, "m")
    found = problems(tmp_path, "recording: {retention: 6x, quota_minutes: -1}\n")
    assert any("recording.retention" in f and "3m or 6m" in f for f in found), found
    assert any("recording.quota_minutes" in f for f in found), found
