"""A forked phone that has sent only 100 Trying is cancelled when another phone answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.pbx_process import PbxProcess, run_pbx
from tests.integration.test_sipp_edge import (
    COMPLETED_ELSEWHERE,
    SIPP_AUTH,
    _one,
    _record,
    _scenario,
    _why,
    dial,
    phone,
    trace,
)

pytestmark = pytest.mark.integration
TRYING = _scenario("uas_trying_noanswer.xml")


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with run_pbx(tmp_path_factory.mktemp("c100"), SIPP_AUTH) as p:
        yield p


@pytest.mark.asyncio
async def test_fork_that_sent_only_100_is_cancelled_when_another_answers(pbx: PbxProcess) -> None:
    async with (
        phone(pbx, "bob", TRYING, timeout=10) as trying,
        phone(pbx, "bob", _scenario("uas_answer_slow.xml")) as answerer,
    ):
        res = await dial(pbx, "uac_call_auth.xml", "102", duration_ms=500)
        won = await answerer.wait(10)
        quiet = await trying.wait(12)
    assert res.ok, _why(res, won, pbx=pbx)
    assert won.ok, _why(won, pbx=pbx)
    assert quiet.ok, _why(quiet, pbx=pbx)
    cancel = _one(trace(quiet.messages), sent=False, method="CANCEL")
    assert cancel.header("Reason") == COMPLETED_ELSEWHERE
    assert _record(pbx, res)["answered_by"] == "bob"
