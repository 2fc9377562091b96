"""The real PBX registering a trunk with a provider's registrar (SIPp on 127.0.0.1).

The registrar challenges every REGISTER with MD5 digest, checks the answer with SIPp's
``verifyauth`` and grants a 4 s lifetime, so refreshes come within the test; a wrong password
gets 403, after which the PBX must back off instead of retrying at once.
"""

from __future__ import annotations

import asyncio
import re
import signal
import textwrap
import time
from pathlib import Path

import pytest

from tests.integration.pbx_process import run_pbx
from tests.peers.sipp import SippProcess, SippRun, start_sipp

pytestmark = pytest.mark.integration

SCENARIO = Path(__file__).parent / "scenarios" / "uas_trunk_registrar.xml"
ACCOUNT = "acct7"
PASSWORD = "right-pass-7"


def _trunk_yaml(port: int, password: str) -> str:
    return textwrap.dedent(
        f"""\
        trunks:
          - name: carrier
            host: 127.0.0.1
            port: {port}
            username: {ACCOUNT}
            password: {password}
            register: true
            expires: 60
            from_domain: provider.test
        """
    )


async def _registrar(trace: Path, grant: int = 4) -> SippProcess:
    return await start_sipp(SippRun(
        SCENARIO, None, timeout=60,
        keys={"realm": "provider.test", "auth_user": ACCOUNT, "auth_pass": PASSWORD,
              "expires": str(grant)},
        trace_msg=False, extra_args=["-trace_msg", "-message_file", str(trace)],
    ))  # fmt: skip


def _registers(trace: Path) -> list[str]:
    """The REGISTER requests SIPp received, in order, as text."""
    try:
        text = trace.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    found = []
    for block in re.split(r"-{20,}[^\n]*\n", text):
        if "message received" in block:
            start = block.find("REGISTER ")
            if start >= 0:
                found.append(block[start:])
    return found


def _header(message: str, name: str) -> str | None:
    m = re.search(rf"^{name}:[ \t]*(.*?)\s*$", message, re.I | re.M)
    return m.group(1) if m else None


async def _wait_registers(trace: Path, count: int, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _registers(trace)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"the registrar got {len(_registers(trace))} REGISTERs, not {count}")


@pytest.mark.asyncio
async def test_trunk_registers_refreshes_and_unbinds_at_shutdown(tmp_path: Path) -> None:
    trace = tmp_path / "registrar.log"
    registrar = await _registrar(trace)
    try:
        with run_pbx(tmp_path / "pbx", extra_top=_trunk_yaml(registrar.local_port,
                                                             PASSWORD)) as pbx:
            await asyncio.to_thread(pbx.wait_log,
                                    "trunk carrier: registered, expires in 4 s", 10)
            # Granted 4 s, the PBX refreshes after 2 s: two more rounds of challenge + answer.
            await _wait_registers(trace, 6, 12)
            assert "registration failed" not in pbx.log_text()
        # The PBX has stopped: it unbound its Contact (Expires: 0) and the scenario ended.
        result = await registrar.wait(15)
        assert result.ok, result.describe() + "\n" + pbx.log_text()[-3000:]
    finally:
        await registrar.stop()
    registers = _registers(trace)
    call_ids = {_header(r, "Call-ID") for r in registers}
    assert len(call_ids) == 1, "refreshes must keep the Call-ID (RFC 3261 10.2.4)"
    cseqs = [int((_header(r, "CSeq") or "0").split()[0]) for r in registers]
    assert cseqs == sorted(cseqs) and len(set(cseqs)) == len(cseqs), cseqs
    contact = _header(registers[0], "Contact") or ""
    assert contact.startswith(f"<sip:{ACCOUNT}@127.0.0.1:{pbx.port}"), contact
    assert registers[0].startswith(f"REGISTER sip:127.0.0.1:{registrar.local_port} SIP/2.0")
    assert _header(registers[0], "To") == f"<sip:{ACCOUNT}@provider.test>"
    assert _header(registers[0], "Expires") == "60"
    # Every second REGISTER answers the challenge; the last pair unbinds.
    assert all(_header(r, "Authorization") is None for r in registers[::2])
    assert all(_header(r, "Authorization") for r in registers[1::2])
    assert [_header(r, "Expires") for r in registers[-2:]] == ["0", "0"]
    assert len(registers) >= 8


@pytest.mark.asyncio
async def test_wrong_password_stops_after_one_challenge_and_backs_off(tmp_path: Path) -> None:
    trace = tmp_path / "registrar.log"
    registrar = await _registrar(trace)
    try:
        with run_pbx(tmp_path / "pbx", extra_top=_trunk_yaml(registrar.local_port,
                                                             "wrong-pass")) as pbx:
            needle = "trunk carrier: registration failed: 403 Forbidden, next try in "
            await asyncio.to_thread(pbx.wait_log, needle, 10)
            line = next(x for x in pbx.log if needle in x)
            wait = int(line.split(needle, 1)[1].split()[0])
            assert 24 <= wait <= 30, line
            # The registrar listens 6 s more and fails its call if another REGISTER comes.
            result = await registrar.wait(20)
            assert result.ok, result.describe() + "\n" + pbx.log_text()[-3000:]
            assert pbx.log_text().count("registration failed") == 1
        assert len(_registers(trace)) == 2
    finally:
        await registrar.stop()


@pytest.mark.asyncio
async def test_reload_adds_and_removes_a_trunk(tmp_path: Path) -> None:
    trace = tmp_path / "registrar.log"
    registrar = await _registrar(trace, grant=3600)
    try:
        with run_pbx(tmp_path / "pbx") as pbx:
            plain = pbx.config_path.read_text()
            pbx.config_path.write_text(plain + _trunk_yaml(registrar.local_port, PASSWORD))
            pbx.signal(signal.SIGHUP)
            await asyncio.to_thread(pbx.wait_log,
                                    "trunk carrier: registered, expires in 3600 s", 10)
            pbx.config_path.write_text(plain)
            pbx.signal(signal.SIGHUP)
            await asyncio.to_thread(pbx.wait_log, "trunk carrier: unregistered", 10)
            result = await registrar.wait(10)
            assert result.ok, result.describe() + "\n" + pbx.log_text()[-3000:]
    finally:
        await registrar.stop()
    assert [_header(r, "Expires") for r in _registers(trace)] == ["60", "60", "0", "0"]
