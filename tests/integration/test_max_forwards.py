"""Max-Forwards through the B2BUA: 0 gets 483, other values are decremented (RFC 7332 3)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.pbx_process import PbxProcess, run_pbx
from tests.integration.test_sipp_edge import (
    SIPP_AUTH,
    _finals,
    _one,
    _record,
    _scenario,
    _why,
    dial,
    phone,
    trace,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with run_pbx(tmp_path_factory.mktemp("mf"), SIPP_AUTH) as p:
        yield p


@pytest.mark.asyncio
async def test_invite_with_max_forwards_zero_gets_483(pbx: PbxProcess) -> None:
    async with phone(pbx, "bob", "uas_busy.xml", timeout=5) as bob:
        res = await dial(pbx, _scenario("uac_call_refused.xml"), "102",
                         keys={"max_forwards": "0"})
        got = await bob.stop()
    assert res.ok, _why(res, pbx=pbx)
    msgs = trace(got.messages)
    forwarded = [m for m in msgs if m.method == "INVITE"]
    assert not forwarded, "the INVITE was forwarded:\n" + got.messages
    assert _finals(trace(res.messages))[-1] == 483, res.messages


@pytest.mark.asyncio
async def test_max_forwards_is_decremented_not_reset(pbx: PbxProcess) -> None:
    async with phone(pbx, "bob", "uas_busy.xml", timeout=10) as bob:
        res = await dial(pbx, _scenario("uac_call_refused.xml"), "102",
                         keys={"max_forwards": "10"})
        got = await bob.wait(10)
    assert res.ok, _why(res, got, pbx=pbx)
    assert _finals(trace(res.messages))[-1] == 486
    invite = _one(trace(got.messages), sent=False, method="INVITE")
    assert invite.header("Max-Forwards") == "9", invite.headers
    assert _record(pbx, res)["disposition"] == "busy"
