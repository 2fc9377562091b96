"""SIPp against the running PBX: authenticated REGISTER, calls, busy, cancel."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.integration.db import rows, wait_rows
from tests.integration.pbx_process import USERS, PbxProcess, run_pbx
from tests.peers.sipp import SippRun, registered_callee, run_sipp

pytestmark = pytest.mark.integration

# SIPp 3.6 answers only the first challenge and only MD5, so this PBX lists MD5 first; both
# algorithms are still offered (tests with softphones use the default SHA-256-first order).
SIPP_AUTH = "  auth_algorithms: [MD5, SHA-256]\n"


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with run_pbx(tmp_path_factory.mktemp("sipp"), SIPP_AUTH) as p:
        yield p


@contextlib.asynccontextmanager
async def callee(pbx: PbxProcess, uid: str, scenario: str = "uas_answer.xml"
                 ) -> AsyncIterator[object]:
    """A SIPp phone registered as ``uid``, unregistered again afterwards (so that a later test
    does not fork calls to a SIPp that is gone)."""
    ext, pw = _cred(uid)
    async with registered_callee(pbx.address, ext, pw, scenario=scenario,
                                 domain=pbx.address) as proc:
        yield proc
    res = await run_sipp(SippRun("register_auth.xml", pbx.address, local_port=proc.local_port,
                                 users=[(ext, pw)], keys={"domain": pbx.address, "expires": "0"}))
    assert res.ok, res.describe()


def _cred(uid: str) -> tuple[str, str]:
    ext, pw, _ = USERS[uid]
    return ext, pw


def _calls(db: Path, call_count: int) -> list[dict[str, object]]:
    return wait_rows(db, "SELECT * FROM calls WHERE ended_at IS NOT NULL ORDER BY started_at",
                     count=call_count)


@pytest.mark.asyncio
async def test_authenticated_register_is_stored(pbx: PbxProcess) -> None:
    ext, pw = _cred("carol")
    res = await run_sipp(SippRun("register_auth.xml", pbx.address, users=[(ext, pw)],
                                 keys={"domain": pbx.address, "expires": "300"}))
    assert res.ok, res.describe()
    reg = wait_rows(pbx.database, "SELECT * FROM registrations WHERE aor = ?", "carol")
    assert reg[0]["uri"].startswith("sip:103@127.0.0.1")
    # The 200 carried the binding back with its lifetime (RFC 3261 10.3 step 8).
    assert "expires=300" in res.messages or "expires=29" in res.messages


@pytest.mark.asyncio
async def test_register_with_wrong_password_is_refused(pbx: PbxProcess) -> None:
    res = await run_sipp(SippRun("register_auth.xml", pbx.address, users=[("103", "wrong")],
                                 keys={"domain": pbx.address, "expires": "300"}, timeout=5))
    assert not res.ok
    assert "401" in res.messages


@pytest.mark.asyncio
async def test_call_answered_and_hung_up_by_caller(pbx: PbxProcess) -> None:
    before = len(rows(pbx.database, "SELECT id FROM calls"))
    async with callee(pbx, "bob") as phone:
        res = await run_sipp(SippRun("uac_call_auth.xml", pbx.address, users=[_cred("alice")],
                                     service="102", keys={"domain": pbx.address},
                                     duration_ms=1500))
        assert res.ok, res.describe() + "\n" + pbx.log_text()[-3000:]
        got = await phone.wait(10)  # type: ignore[attr-defined]
        assert got.ok, got.describe()
    calls = _calls(pbx.database, before + 1)
    rec = calls[-1]
    assert rec["from_number"] == "101" and rec["to_number"] == "102"
    assert rec["caller_user"] == "alice" and rec["answered_by"] == "bob"
    assert rec["direction"] == "internal"
    assert rec["disposition"] == "answered" and rec["hangup_by"] == "caller"
    assert 1.0 <= rec["duration"] <= 5.0


@pytest.mark.asyncio
async def test_busy_callee_gives_486(pbx: PbxProcess) -> None:
    before = len(rows(pbx.database, "SELECT id FROM calls"))
    async with callee(pbx, "bob", "uas_busy.xml") as phone:
        res = await run_sipp(SippRun("uac_busy.xml", pbx.address, users=[_cred("alice")],
                                     service="102", keys={"domain": pbx.address}))
        assert res.ok, res.describe() + "\n" + pbx.log_text()[-3000:]
        await phone.wait(10)  # type: ignore[attr-defined]
    rec = _calls(pbx.database, before + 1)[-1]
    assert rec["disposition"] == "busy" and rec["sip_code"] == 486
    assert rec["duration"] == 0


@pytest.mark.asyncio
async def test_caller_cancels_while_ringing(pbx: PbxProcess) -> None:
    before = len(rows(pbx.database, "SELECT id FROM calls"))
    async with callee(pbx, "bob", "uas_ring_noanswer.xml") as phone:
        res = await run_sipp(SippRun("uac_cancel.xml", pbx.address, users=[_cred("alice")],
                                     service="102", keys={"domain": pbx.address},
                                     duration_ms=1000))
        assert res.ok, res.describe() + "\n" + pbx.log_text()[-3000:]
        got = await phone.wait(10)  # type: ignore[attr-defined]
        # The callee's phone was cancelled too (CANCEL -> 200, 487 -> ACK).
        assert got.ok, got.describe()
    rec = _calls(pbx.database, before + 1)[-1]
    assert rec["disposition"] == "cancelled" and rec["hangup_by"] == "caller"
    assert rec["sip_code"] == 487


@pytest.mark.asyncio
async def test_user_without_call_waiting_is_busy_while_on_a_call(tmp_path: Path) -> None:
    import asyncio
    import signal

    with run_pbx(tmp_path, SIPP_AUTH) as pbx:
        text = pbx.config_path.read_text().replace(
            "    name: Bob Tanaka\n", "    name: Bob Tanaka\n    call_waiting: false\n")
        pbx.config_path.write_text(text)
        pbx.signal(signal.SIGHUP)
        pbx.wait_log("config reloaded")
        async with callee(pbx, "bob") as phone:
            first = asyncio.create_task(run_sipp(SippRun(
                "uac_call_auth.xml", pbx.address, users=[_cred("alice")], service="102",
                keys={"domain": pbx.address}, duration_ms=3000, timeout=15)))
            await asyncio.sleep(1.5)
            second = await run_sipp(SippRun("uac_busy.xml", pbx.address, users=[_cred("carol")],
                                            service="102", keys={"domain": pbx.address}))
            assert second.ok, second.describe()
            res = await first
            assert res.ok, res.describe()
            got = await phone.wait(10)  # type: ignore[attr-defined]
            # Bob's phone saw exactly one call: the busy one never rang it.
            assert got.ok and got.successful == 1, got.describe()
        recs = _calls(pbx.database, 2)
        busy = next(r for r in recs if r["caller_user"] == "carol")
        assert busy["disposition"] == "busy" and busy["hangup_cause"] == "callee on another call"
