"""A ``kill -9`` of the PBX in the middle of 100 calls, then a restart: every call still has one
final record (the calls cut off end "PBX restarted", with the recording that was on disk), and
the CRM's webhook gets every call's events, once per idempotency key."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from pbx.journal import RecordJournal, read_journal
from pbx.records import CallEnded, CallStarted
from tests.crmsync.test_webhooks import Receiver
from tests.integration.db import rows
from tests.integration.pbx_process import ROOT, USERS, run_pbx
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.peers.sipp import SippRun, registered_callee, start_sipp

pytestmark = pytest.mark.integration

CALLS = 100


def _count(db: Path, sql: str) -> int:
    try:
        return int(rows(db, sql)[0]["n"])
    except sqlite3.OperationalError:
        return -1


async def _until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.asyncio
@pytest.mark.timeout(240)
async def test_kill_9_in_the_middle_of_100_calls_loses_no_record_event_or_recording(
        tmp_path: Path) -> None:
    receiver = Receiver()
    await receiver.start()
    top = (f"crm:\n  webhooks:\n    - {{name: crm, url: \"{receiver.url}\", "
           f"secret: webhook-secret-0123456789}}\n  retry: {{first_delay: 0.2s}}\n"
           "recording:\n  enabled: true\n")
    a_ext, a_pw, _ = USERS["alice"]
    b_ext, b_pw, _ = USERS["bob"]
    db = tmp_path / "pbx.db"
    try:
        with run_pbx(tmp_path, SIPP_AUTH, extra_top=top) as pbx:
            async with registered_callee(pbx.address, b_ext, b_pw, calls=CALLS, timeout=120,
                                         domain=pbx.address):
                caller = await start_sipp(SippRun(
                    "uac_call_auth.xml", pbx.address, users=[(a_ext, a_pw)], service=b_ext,
                    keys={"domain": pbx.address}, calls=CALLS, rate=25, limit=CALLS,
                    duration_ms=2500, timeout=120, trace_msg=False))
                try:
                    # Every call has begun; then calls are ending (about 25 a second)
                    # when the PBX is killed: some ends are only in memory and the journal.
                    try:
                        await _until(lambda: _count(db, "SELECT count(*) AS n FROM calls "
                                                        "WHERE answered_at IS NOT NULL")
                                     >= CALLS, 60, "all calls answered")
                    except AssertionError:
                        got = rows(db, "SELECT disposition, count(*) AS n FROM calls "
                                       "GROUP BY disposition")
                        raise AssertionError(f"calls: {got}; caller: "
                                             f"{(await caller.stop()).describe()}") from None
                    await _until(lambda: _count(db, "SELECT count(*) AS n FROM calls "
                                                    "WHERE ended_at IS NOT NULL") >= 30,
                                 60, "the first calls to end")
                    pbx.proc.send_signal(signal.SIGKILL)
                    pbx.proc.wait(10)
                finally:
                    await caller.stop()
        left = read_journal(tmp_path / "journal")
        before = {r["id"]: r for r in rows(db, "SELECT * FROM calls")}
        assert len(before) == CALLS
        open_before = {cid for cid, r in before.items() if r["ended_at"] is None}
        assert open_before, "the kill came after every call had ended"
        # The journal holds what the database did not: the calls open at the kill, at least,
        # and the ends of those that ended in the last moments (not yet in the database).
        assert open_before <= left.open_calls | {e.call_id for e in left.events}
        ended_in_journal = {e.call_id for e in left.events if isinstance(e, CallEnded)}
        cut_off = open_before - ended_in_journal
        assert cut_off, "the kill came after every call had ended"

        receiver.requests.clear()
        with run_pbx(tmp_path, SIPP_AUTH, extra_top=top) as again:
            assert "cut-off calls ended" in again.log_text()
            await _until(lambda: _count(db, "SELECT count(*) AS n FROM calls "
                                            "WHERE ended_at IS NULL") == 0, 10, "recovery")
            await _until(lambda: _count(db, "SELECT count(*) AS n FROM webhook_deliveries "
                                            "WHERE status != 'delivered'") == 0, 30,
                         "every webhook delivery")
        after = {r["id"]: r for r in rows(db, "SELECT * FROM calls")}
        assert set(after) == set(before)
        for cid, row in after.items():
            assert row["disposition"] == "answered", row
            assert row["answered_by"] == "bob"
            if cid in cut_off:
                assert row["hangup_cause"] == "PBX restarted" and row["hangup_by"] == "system"
            else:
                assert row["hangup_cause"] != "PBX restarted"
            # Every answered call has its recording, the cut-off ones included.
            assert row["recording_path"], row
            path = Path(row["recording_path"])
            assert path.is_file()
            info = sf.info(str(path))
            assert abs(info.frames / info.samplerate - row["recording_seconds"]) < 0.05
        cut = [after[cid] for cid in cut_off]
        assert any(r["recording_seconds"] > 0.5 for r in cut)
        # Nothing left to replay, and every event of every call is in the outbox, delivered.
        assert read_journal(tmp_path / "journal").events == ()
        outbox = rows(db, "SELECT event, call_id FROM outbox")
        kinds = Counter(r["event"] for r in outbox)
        for name in ("call.started", "call.answered", "call.ended", "recording.ready"):
            assert kinds[name] == CALLS, kinds
        # What the receiver got (before the kill, and after the restart) covers every call's
        # end; each idempotency key stands for exactly one event of one call.
        ended = {json.loads(r.body)["call"]["id"] for r in receiver.requests
                 if json.loads(r.body)["event"] == "call.ended"}
        assert open_before <= ended
        print(f"{len(open_before)} calls open in the database at the kill, "
              f"{len(ended_in_journal & open_before)} of them ended in the journal only")
    finally:
        await receiver.close()


def test_a_second_pbx_on_the_same_journal_refuses_to_start(tmp_path: Path) -> None:
    """Started by mistake beside a running PBX (same config), a second process would replay the
    first one's journal and end its live calls: it refuses to start instead."""
    with run_pbx(tmp_path) as pbx:
        second = subprocess.run(
            [sys.executable, "-m", "pbx", "run", "--config", str(pbx.config_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "in use by another PBX process" in second.stdout + second.stderr
        assert pbx.proc.poll() is None
        assert list((tmp_path / "journal").glob("*.journal"))  # the first one's, untouched


def test_a_journal_the_database_refuses_is_set_aside_and_the_pbx_starts(
        tmp_path: Path) -> None:
    """What a killed PBX left that the database will not take (here a record without a start
    time) must not stop every later start: it is moved to journal/failed, and said so."""
    journal = RecordJournal(tmp_path / "journal")
    journal.open([])
    bad = CallStarted("c0ffee00-0000-4000-8000-000000000000", "x@y", "inbound", "+81", "",
                      "100", None, None, None)  # type: ignore[arg-type]
    journal.append(bad)
    os.close(journal._lock)  # the process that wrote it is gone
    with run_pbx(tmp_path) as pbx:
        assert "could not be replayed into the database" in pbx.log_text()
        assert pbx.proc.poll() is None
    assert [p.name for p in (tmp_path / "journal" / "failed").glob("*.journal")]
    assert read_journal(tmp_path / "journal").events == ()
    with run_pbx(tmp_path) as again:  # nothing left to replay: a plain start
        assert "could not be replayed" not in again.log_text()
        assert "replayed" not in again.log_text()
