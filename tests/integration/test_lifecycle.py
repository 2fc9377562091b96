"""The PBX across restarts and reloads, and its media timeout."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.integration.db import rows, wait_rows
from tests.integration.pbx_process import USERS, config_text, run_pbx
from tests.peers.ports import free_port
from tests.peers.sipp import SippRun, run_sipp, start_sipp

pytestmark = pytest.mark.integration

SIPP_AUTH = "  auth_algorithms: [MD5, SHA-256]\n"


async def _register(address: str, user: str, password: str, port: int,
                    expires: int = 600) -> bool:
    res = await run_sipp(SippRun("register_auth.xml", address, local_port=port,
                                 users=[(user, password)], timeout=10,
                                 keys={"domain": address, "expires": str(expires)}))
    return res.ok


@pytest.mark.asyncio
async def test_registrations_survive_a_restart(tmp_path: Path) -> None:
    port = free_port()
    phone_port = free_port()
    ext, pw, _ = USERS["bob"]
    with run_pbx(tmp_path, SIPP_AUTH, port=port) as pbx:
        assert await _register(pbx.address, ext, pw, phone_port)
        wait_rows(pbx.database, "SELECT * FROM registrations WHERE aor = 'bob'")
        assert pbx.stop() == 0
    # Same database, new process: bob's phone is reachable without registering again.
    with run_pbx(tmp_path, SIPP_AUTH, port=port) as pbx:
        pbx.wait_log("1 registrations restored")
        callee = await start_sipp(SippRun("uas_answer.xml", None, local_port=phone_port,
                                          timeout=20))
        try:
            res = await run_sipp(SippRun("uac_call_auth.xml", pbx.address,
                                         users=[USERS["alice"][:2]], service="102",
                                         keys={"domain": pbx.address}, duration_ms=300))
            assert res.ok, res.describe() + pbx.log_text()[-2000:]
            got = await callee.wait(10)
            assert got.ok, got.describe()
        finally:
            await callee.stop()


@pytest.mark.asyncio
async def test_sighup_reload_applies_valid_and_refuses_invalid(tmp_path: Path) -> None:
    with run_pbx(tmp_path, SIPP_AUTH) as pbx:
        dave = {"dave": ("104", "dave-secret-4", "Dave Mori")}
        # A call in progress across both reloads must not be dropped.
        ext, pw, _ = USERS["bob"]
        phone_port = free_port()
        assert await _register(pbx.address, ext, pw, phone_port)
        callee = await start_sipp(SippRun("uas_answer.xml", None, local_port=phone_port,
                                          timeout=30))
        caller = asyncio.create_task(run_sipp(SippRun(
            "uac_call_auth.xml", pbx.address, users=[USERS["alice"][:2]], service="102",
            keys={"domain": pbx.address}, duration_ms=4000, timeout=20)))
        await asyncio.sleep(1.5)
        assert not await _register(pbx.address, "104", "dave-secret-4", free_port(), 60)

        pbx.config_path.write_text(config_text(pbx.port, tmp_path, SIPP_AUTH,
                                               users={**USERS, **dave}))
        pbx.signal(signal.SIGHUP)
        pbx.wait_log("config reloaded: 4 users")
        assert await _register(pbx.address, "104", "dave-secret-4", free_port(), 60)

        good = pbx.config_path.read_text()
        pbx.config_path.write_text(good + "bogus_key: 1\n")
        pbx.signal(signal.SIGHUP)
        pbx.wait_log("reload refused")
        assert "pbx.yaml:" in pbx.log_text() and "bogus_key" in pbx.log_text()
        # The running config stays: dave can still register.
        assert await _register(pbx.address, "104", "dave-secret-4", free_port(), 60)

        res = await caller
        assert res.ok, res.describe()
        got = await callee.wait(10)
        assert got.ok, got.describe()
        rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE disposition = 'answered'")
        assert rec[0]["hangup_by"] == "caller" and rec[0]["duration"] >= 3.5


@pytest.mark.asyncio
async def test_call_without_media_is_hung_up_after_rtp_timeout(tmp_path: Path) -> None:
    with run_pbx(tmp_path, SIPP_AUTH) as pbx:
        text = pbx.config_path.read_text().replace("media:\n", "media:\n  rtp_timeout: 2s\n")
        pbx.config_path.write_text(text)
        pbx.signal(signal.SIGHUP)
        pbx.wait_log("config reloaded")
        ext, pw, _ = USERS["bob"]
        phone_port = free_port()
        assert await _register(pbx.address, ext, pw, phone_port)
        callee = await start_sipp(SippRun("uas_answer.xml", None, local_port=phone_port,
                                          timeout=20))
        # SIPp sends no RTP: the PBX must end the call itself (BYE to both phones).
        caller = await run_sipp(SippRun("uac_call_auth.xml", pbx.address,
                                        users=[USERS["alice"][:2]], service="102",
                                        keys={"domain": pbx.address}, duration_ms=10000,
                                        timeout=20))
        got = await callee.wait(10)
        assert got.ok, got.describe()  # the callee got its BYE and answered it
        assert got.elapsed < 9, got.elapsed
        assert "BYE" in caller.messages
        rec = wait_rows(pbx.database, "SELECT * FROM calls WHERE ended_at IS NOT NULL")
        assert rec[0]["hangup_cause"] == "no media" and rec[0]["hangup_by"] == "system"
        assert 1.5 <= rec[0]["duration"] <= 5
        assert not rows(pbx.database, "SELECT * FROM calls WHERE disposition = 'in_progress'")


@pytest.mark.asyncio
async def test_pbx_reload_command_reloads_the_running_pbx(tmp_path: Path) -> None:
    import subprocess
    import sys

    with run_pbx(tmp_path, SIPP_AUTH) as pbx:
        pidfile = tmp_path / "pbx.pid"
        dave = {"dave": ("104", "dave-secret-4", "Dave Mori")}
        pbx.config_path.write_text(config_text(pbx.port, tmp_path, SIPP_AUTH,
                                               users={**USERS, **dave}))
        done = subprocess.run(
            [sys.executable, "-m", "pbx", "reload", "--pidfile", str(pidfile),
             "--config", str(pbx.config_path)],
            capture_output=True, text=True, timeout=30,
        )
        assert done.returncode == 0, done.stderr
        pbx.wait_log("config reloaded: 4 users")
        assert await _register(pbx.address, "104", "dave-secret-4", free_port(), 60)


@pytest.mark.asyncio
async def test_sigterm_ends_calls_cleanly_and_records_why(tmp_path: Path) -> None:
    with run_pbx(tmp_path, SIPP_AUTH) as pbx:
        ext, pw, _ = USERS["bob"]
        phone_port = free_port()
        assert await _register(pbx.address, ext, pw, phone_port)
        callee = await start_sipp(SippRun("uas_answer.xml", None, local_port=phone_port,
                                          timeout=20))
        caller = await start_sipp(SippRun(
            "uac_call_auth.xml", pbx.address, users=[USERS["alice"][:2]], service="102",
            keys={"domain": pbx.address}, duration_ms=15000, timeout=20))
        wait_rows(pbx.database, "SELECT * FROM calls WHERE answered_at IS NOT NULL")
        assert pbx.stop() == 0  # SIGTERM
        # The callee's phone was sent a BYE (its scenario ends normally on it).
        got = await callee.wait(10)
        assert got.ok, got.describe()
        assert "BYE" in (await caller.stop()).messages
    rec = rows(pbx.database, "SELECT * FROM calls")[0]
    assert rec["hangup_cause"] == "PBX shutting down" and rec["hangup_by"] == "system"
    assert rec["disposition"] == "answered" and rec["ended_at"] is not None
