"""The running PBX pushes its call records to a CRM webhook: two real phones call each other and
a real HTTP receiver gets each event of the call, signed, with its idempotency key; a call
nobody answers arrives as missed too. Delivery itself (retries, dead letters, a killed worker)
is tested in tests/crmsync/test_webhooks.py."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from crmsync.webhooks import verify
from tests.crmsync.test_webhooks import Receiver
from tests.integration.pbx_process import API_KEY, run_pbx
from tests.integration.test_ring_groups import USERS
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.peers.phone_driver import Phone

pytestmark = pytest.mark.integration

SECRET = "webhook-secret-0123456789"


async def _wait_for(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the replayed event never arrived")


async def _events(receiver: Receiver, call_id: str, want: set[str],
                  timeout: float = 10.0) -> dict[str, dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = {}
        for req in receiver.requests:
            body = json.loads(req.body)
            if body["call"]["id"] == call_id:
                got[body["event"]] = {"body": body, "headers": req.headers, "raw": req.body}
        if want <= set(got):
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"events {want} for {call_id} not all received: "
                         f"{[json.loads(r.body)['event'] for r in receiver.requests]}")


@pytest.mark.asyncio
async def test_a_call_and_a_missed_call_reach_the_crm_webhook(tmp_path_factory:
                                                               pytest.TempPathFactory) -> None:
    receiver = Receiver()
    await receiver.start()
    crm = (f"crm:\n  webhooks:\n    - {{name: crm, url: \"{receiver.url}\", "
           f"secret: {SECRET}}}\n  retry: {{first_delay: 0.2s}}\n")
    try:
        with run_pbx(tmp_path_factory.mktemp("hooks"), SIPP_AUTH, users=USERS,
                     extra_top=crm, ring_timeout="3s") as pbx:
            async with Phone.start(name="alice") as alice, Phone.start(name="bob") as bob:
                for phone, user in ((alice, "alice"), (bob, "bob")):
                    ext, pw, _ = USERS[user]
                    await phone.register(pbx.address, ext, pw, domain="pbx.test")
                await alice.dial(f"sip:102@{pbx.address}")
                await bob.wait_for("incoming", timeout=10)
                await bob.answer()
                await alice.wait_for("established", timeout=10)
                await asyncio.sleep(0.5)
                await alice.hangup()
                await bob.wait_for("closed", timeout=10)
                await receiver.arrived.wait()
                first = json.loads(receiver.requests[0].body)["call"]["id"]
                got = await _events(receiver, first,
                                    {"call.started", "call.answered", "call.ended"})
                # Nobody answers the next one: it rings out (sip.ring_timeout 3 s).
                await alice.dial(f"sip:102@{pbx.address}")
                await bob.wait_for("incoming", timeout=10)
                await alice.wait_for("closed", timeout=15)
                await asyncio.sleep(0.5)
                ids = [json.loads(r.body)["call"]["id"] for r in receiver.requests]
                second = next(i for i in ids if i != first)
                missed = await _events(receiver, second, {"call.missed", "call.ended"})
                # The same records through the API, by number written another way.
                async with httpx.AsyncClient(base_url=pbx.api, timeout=5.0,
                                             headers={"X-API-Key": API_KEY}) as api:
                    page = (await api.get("/calls", params={"agent": "bob"})).json()
                    missed_page = (await api.get("/calls", params={"type": "missed"})).json()
                    # The delivery log, and a replay that sends an event again, same key.
                    log = (await api.get("/webhooks/deliveries",
                                         params={"call_id": first})).json()
                    ended_id = next(d["id"] for d in log if d["event"] == "call.ended")
                    tries = (await api.get(f"/webhooks/deliveries/{ended_id}/attempts")).json()
                    before = len(receiver.requests)
                    replayed = await api.post("/webhooks/replay",
                                              json={"ids": [ended_id], "status": "delivered"})
                    await _wait_for(lambda: len(receiver.requests) > before)
                    again = json.loads(receiver.requests[-1].body)
                    bad = await api.post("/webhooks/replay", json={"status": "pending"})
    finally:
        await receiver.close()
    for name, event in {**got, **missed}.items():
        headers = event["headers"]
        assert isinstance(headers, dict)
        assert headers["x-pbx-event"] == name
        assert verify(SECRET, headers["x-pbx-timestamp"], event["raw"],  # type: ignore[arg-type]
                      headers["x-pbx-signature"])
        body = event["body"]
        assert isinstance(body, dict)
        assert headers["x-pbx-idempotency-key"] == body["id"] == f"{body['call']['id']}:{name}"
    ended = got["call.ended"]["body"]
    assert isinstance(ended, dict)
    call = ended["call"]
    assert call["caller_user"] == "alice" and call["answered_by"] == "bob"
    assert call["disposition"] == "answered" and call["duration"] > 0
    missed_call = missed["call.missed"]["body"]
    assert isinstance(missed_call, dict)
    assert missed_call["call"]["disposition"] == "no_answer"
    assert {c["id"] for c in page["items"]} == {first, second}  # bob's: answered and rung
    assert [c["id"] for c in missed_page["items"]] == [second], missed_page
    assert {d["event"] for d in log} == {"call.started", "call.answered", "call.ended"}
    assert all(d["status"] == "delivered" and d["attempts"] == 1 for d in log)
    assert len(tries) == 1 and tries[0]["status_code"] == 200
    assert replayed.json() == {"replayed": [ended_id]}
    assert again["id"] == f"{first}:call.ended" and again["event"] == "call.ended"
    assert bad.status_code == 422
