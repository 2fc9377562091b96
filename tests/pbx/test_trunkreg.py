"""Trunk registrations on a virtual clock, against a fake transaction layer.

The fake layer records each REGISTER (serialised and parsed back, so it is real SIP) and the
tests answer it as a provider's registrar would, checking digest answers with the project's
own :class:`sip.digest.DigestServer`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from pbx.config_routing import Trunk
from pbx.sipapp import ClientOwner
from pbx.trunkreg import BACKOFF_MAX, BACKOFF_MIN, TrunkRegistrations
from sip.digest import AuthResult, DigestServer, parse_digest
from sip.message import Request, Response, parse
from sip.transaction import Peer, new_branch
from sip.uri import Address, SipUri
from sip.via import Via

REALM = "provider.example"


@dataclass(eq=False)
class _Timer:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Clock:
    """A virtual clock with ``call_at``, as the event loop has."""

    now: float = 1000.0
    timers: list[_Timer] = field(default_factory=list)

    def call_at(self, when: float, callback: Callable[[], None], /) -> _Timer:
        timer = _Timer(when, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        for _ in range(1000):
            due = [t for t in self.timers if not t.cancelled and t.when <= end]
            if not due:
                break
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            self.now = max(self.now, timer.when)
            timer.callback()
        self.now = end


class FakeLayer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Request, Peer]] = []

    def send_request(self, req: Request, peer: Peer, now: float) -> str:
        wire = parse(bytes(req))
        assert isinstance(wire, Request)
        key = f"{wire.top_via.branch} REGISTER"
        self.sent.append((key, wire, peer))
        return key


class FakeApp:
    user_agent = "PBX-test"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.layer = FakeLayer()
        self.own_requests: dict[str, ClientOwner] = {}
        self.flushes = 0

    def now(self) -> float:
        return self.clock.now

    def flush(self) -> None:
        self.flushes += 1

    def add_via(self, req: Request, peer: Peer) -> None:
        req.add_via(Via(peer.transport.upper(), "192.0.2.1", 5070,
                        {"branch": new_branch(), "rport": None}))

    def contact(self, peer: Peer) -> Address:
        params: dict[str, str | None] = {} if peer.transport == "udp" else {"transport": "tcp"}
        return Address(SipUri("sip", user="pbx", host="192.0.2.1", port=5070, params=params))


def trunk(**changes: Any) -> Trunk:
    data: dict[str, Any] = {"name": "carrier", "host": "198.51.100.7", "port": 5080,
                            "username": "acct7", "password": "s3cret", "register": True,
                            "expires": 600, "from_domain": "sip.provider.example"}
    data.update(changes)
    return Trunk.model_validate(data)


class Rig:
    def __init__(self, seed: int = 1) -> None:
        self.clock = Clock()
        self.app = FakeApp(self.clock)
        self.regs = TrunkRegistrations(cast(Any, self.app), scheduler=self.clock,
                                       rng=random.Random(seed))
        self.digest = DigestServer(REALM, b"0123456789abcdef0123", algorithms=("MD5",))

    @property
    def sent(self) -> list[tuple[str, Request, Peer]]:
        return self.app.layer.sent

    def last(self) -> tuple[str, Request]:
        key, req, _ = self.sent[-1]
        return key, req

    def reply(self, status: int, *headers: tuple[str, str], contact_expires: int | None = None,
              stale: bool = False) -> None:
        key, req = self.last()
        assert key in self.app.own_requests, "the answer's transaction is not registered"
        resp = req.response(status, to_tag="reg1")
        for name, value in headers:
            resp.headers.add(name, value)
        if status in (401, 407):
            name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            for value in self.digest.challenge(self.clock.now, stale=stale):
                resp.headers.add(name, value)
        if contact_expires is not None:
            resp.headers.add("Contact", f"{req.headers.get('Contact')};expires={contact_expires}")
        wire = parse(bytes(resp))
        assert isinstance(wire, Response)
        self.app.own_requests[key].on_response(wire, key)

    def fail(self) -> None:
        """The layer gives up on the last REGISTER (Timer F), as SipApp reports it."""
        key, _ = self.last()
        self.app.own_requests.pop(key).on_failure(key)

    def verify(self, req: Request, password: str = "s3cret", header: str = "Authorization"
               ) -> AuthResult:
        value = req.headers.get(header)
        assert value is not None, f"no {header} in\n{bytes(req).decode()}"
        creds = parse_digest(value)
        assert creds is not None and creds.username == "acct7"
        assert creds.uri == req.raw_uri
        return self.digest.verify("REGISTER", creds, password, self.clock.now)

    def register(self, granted: int = 600) -> None:
        """Answer the pending REGISTER as a registrar does: challenge, then 200."""
        self.reply(401)
        assert self.verify(self.last()[1]) is AuthResult.OK
        self.reply(200, contact_expires=granted)

    def state(self) -> str:
        return self.regs.status()[0].state


def test_register_request_and_digest_answer() -> None:
    rig = Rig()
    rig.regs.apply((trunk(),))
    assert len(rig.sent) == 1
    _, first, peer = rig.sent[0]
    assert peer == Peer("udp", ("198.51.100.7", 5080))
    assert first.method == "REGISTER" and first.raw_uri == "sip:198.51.100.7:5080"
    assert first.to.uri.user == "acct7" and first.to.uri.host == "sip.provider.example"
    assert first.from_.uri == first.to.uri and first.from_tag
    contact = first.contacts[0].uri
    assert (contact.user, contact.host, contact.port) == ("acct7", "192.0.2.1", 5070)
    assert first.headers.get("Expires") == "600"
    assert first.cseq.seq == 1 and "Authorization" not in first.headers
    assert rig.state() == "registering"

    rig.reply(401)
    _, second = rig.last()
    assert len(rig.sent) == 2
    assert second.call_id == first.call_id and second.cseq.seq == 2
    assert second.from_tag == first.from_tag
    assert rig.verify(second) is AuthResult.OK

    rig.reply(200, contact_expires=600)
    status = rig.regs.status()[0]
    assert status.state == "registered" and status.last_status == 200
    assert status.expires_at == pytest.approx(rig.clock.now + 600)
    assert status.failures == 0
    assert not rig.app.own_requests, "finished transactions must leave own_requests"


def test_refresh_keeps_call_id_raises_cseq_and_comes_at_85_percent() -> None:
    rig = Rig()
    rig.regs.apply((trunk(expires=3600),))
    rig.register(granted=3600)
    start = rig.clock.now
    assert rig.regs.status()[0].next_attempt_at == pytest.approx(start + 3060)
    rig.clock.advance(3059)
    assert len(rig.sent) == 2
    rig.clock.advance(1.5)
    assert len(rig.sent) == 3
    _, refresh = rig.last()
    assert refresh.call_id == rig.sent[0][1].call_id and refresh.cseq.seq == 3
    assert refresh.headers.get("Expires") == "3600"
    assert rig.state() == "registered", "a refresh in progress keeps the binding's state"
    rig.register(granted=3600)
    assert rig.sent[-1][1].cseq.seq == 4


def test_refresh_at_least_30_s_before_expiry_and_short_grants() -> None:
    rig = Rig()
    rig.regs.apply((trunk(),))
    rig.register(granted=120)  # 85 % would be 102 s, 18 s before the end: too late
    assert rig.regs.status()[0].next_attempt_at == pytest.approx(rig.clock.now + 90)
    rig2 = Rig()
    rig2.regs.apply((trunk(),))
    rig2.reply(401)
    rig2.reply(200, ("Expires", "4"))  # no Contact echoed: the Expires header counts
    status = rig2.regs.status()[0]
    assert status.expires_at == pytest.approx(rig2.clock.now + 4)
    assert status.next_attempt_at == pytest.approx(rig2.clock.now + 2)
    rig2.clock.advance(2.1)
    assert len(rig2.sent) == 3


def test_wrong_password_fails_after_one_answer() -> None:
    rig = Rig()
    rig.regs.apply((trunk(password="wrong"),))
    rig.reply(401)
    assert rig.verify(rig.last()[1]) is AuthResult.FAILED
    rig.reply(401)  # challenged again: the credentials are wrong
    assert len(rig.sent) == 2, "a second challenge must not be answered"
    status = rig.regs.status()[0]
    assert (status.state, status.last_status, status.failures) == ("failed", 401, 1)
    assert status.next_attempt_at is not None
    assert BACKOFF_MIN * 0.8 <= status.next_attempt_at - rig.clock.now <= BACKOFF_MIN
    assert not rig.app.own_requests


def test_403_after_answer_is_a_failure() -> None:
    rig = Rig()
    rig.regs.apply((trunk(),))
    rig.reply(401)
    rig.reply(403)
    status = rig.regs.status()[0]
    assert (status.state, status.last_status, status.last_reason) == ("failed", 403, "Forbidden")
    assert len(rig.sent) == 2


def test_stale_nonce_is_answered_once_more() -> None:
    rig = Rig()
    rig.regs.apply((trunk(),))
    rig.reply(401)
    rig.reply(401, stale=True)
    assert len(rig.sent) == 3 and rig.sent[-1][1].cseq.seq == 3
    rig.reply(401, stale=True)
    assert len(rig.sent) == 3
    assert rig.state() == "failed"


def test_proxy_challenge_gets_proxy_authorization() -> None:
    rig = Rig()
    rig.regs.apply((trunk(),))
    rig.reply(407)
    _, req = rig.last()
    assert "Authorization" not in req.headers
    assert rig.verify(req, header="Proxy-Authorization") is AuthResult.OK
    rig.reply(200, contact_expires=600)
    assert rig.state() == "registered"


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    rig = Rig(seed=7)
    rig.regs.apply((trunk(),))
    waits = []
    for attempt in range(9):
        if attempt % 2:
            rig.fail()  # no answer at all
        else:
            rig.reply(503)
        status = rig.regs.status()[0]
        assert status.state == "failed" and status.failures == attempt + 1
        assert status.last_status == (408 if attempt % 2 else 503)
        assert status.next_attempt_at is not None
        wait = status.next_attempt_at - rig.clock.now
        waits.append(wait)
        nominal = min(BACKOFF_MAX, BACKOFF_MIN * 2**attempt)
        assert nominal * 0.8 <= wait <= nominal
        count = len(rig.sent)
        rig.clock.advance(wait - 0.5)
        assert len(rig.sent) == count, "retried before the back-off ended"
        rig.clock.advance(1.0)
        assert len(rig.sent) == count + 1
    assert waits[-1] <= BACKOFF_MAX and waits[-2] >= BACKOFF_MAX * 0.8
    status = rig.regs.status()[0]
    assert (status.state, status.failures, status.last_status) == ("registering", 9, 503)
    # Success resets the count.
    rig.register()
    assert rig.regs.status()[0].failures == 0


def test_retry_after_is_heeded() -> None:
    rig = Rig()
    rig.regs.apply((trunk(),))
    rig.reply(503, ("Retry-After", "300"))
    status = rig.regs.status()[0]
    assert status.next_attempt_at == pytest.approx(rig.clock.now + 300)


def test_423_retries_with_min_expires_and_cannot_loop() -> None:
    rig = Rig()
    rig.regs.apply((trunk(expires=600),))
    rig.reply(423, ("Min-Expires", "1800"))
    assert len(rig.sent) == 2
    _, retry = rig.last()
    assert retry.headers.get("Expires") == "1800" and retry.cseq.seq == 2
    rig.reply(423, ("Min-Expires", "1800"))  # the same again: give up, do not loop
    assert len(rig.sent) == 2
    assert rig.regs.status()[0].last_status == 423
    # The raised value sticks for the retry.
    rig.clock.advance(BACKOFF_MIN)
    assert rig.last()[1].headers.get("Expires") == "1800"


def test_removal_unregisters_with_expires_zero() -> None:
    rig = Rig()
    rig.regs.apply((trunk(),))
    rig.register()
    call_id = rig.sent[0][1].call_id
    rig.regs.apply(())
    _, bye = rig.last()
    assert bye.headers.get("Expires") == "0" and bye.call_id == call_id
    assert bye.cseq.seq == 3
    assert bye.contacts[0].uri.user == "acct7"
    assert rig.state() == "unregistered"
    rig.reply(401)
    assert rig.last()[1].headers.get("Expires") == "0"
    assert rig.verify(rig.last()[1]) is AuthResult.OK
    rig.reply(200)
    assert rig.regs.status() == []
    count = len(rig.sent)
    rig.clock.advance(100_000)
    assert len(rig.sent) == count and not rig.app.own_requests


def test_removal_of_a_never_registered_trunk_sends_nothing() -> None:
    rig = Rig()
    rig.regs.apply((trunk(password="wrong"),))
    rig.reply(401)
    rig.reply(403)
    count = len(rig.sent)
    rig.regs.apply((trunk(password="wrong", register=False),))
    rig.clock.advance(10_000)
    assert len(rig.sent) == count and rig.regs.status() == []


def test_removal_while_a_register_is_out_waits_for_its_answer() -> None:
    rig = Rig()
    rig.regs.apply((trunk(),))
    rig.reply(401)
    rig.regs.apply(())
    assert len(rig.sent) == 2, "RFC 3261 10.2: one REGISTER at a time"
    rig.reply(200, contact_expires=600)
    _, bye = rig.last()
    assert len(rig.sent) == 3 and bye.headers.get("Expires") == "0"


def test_changed_password_reregisters_moved_trunk_unbinds_the_old() -> None:
    rig = Rig()
    rig.regs.apply((trunk(),))
    rig.register()
    call_id = rig.sent[0][1].call_id
    rig.regs.apply((trunk(password="n3w"),))
    _, again = rig.last()
    assert again.call_id == call_id and again.headers.get("Expires") == "600"
    rig.reply(401)
    assert rig.verify(rig.last()[1], password="n3w") is AuthResult.OK
    rig.reply(200, contact_expires=600)

    rig.regs.apply((trunk(password="n3w", host="203.0.113.9"),))
    sent = rig.sent[-2:]
    old = next(req for _, req, peer in sent if peer.addr[0] == "198.51.100.7")
    new = next(req for _, req, peer in sent if peer.addr[0] == "203.0.113.9")
    assert old.headers.get("Expires") == "0" and old.call_id == call_id
    assert new.call_id != call_id and new.cseq.seq == 1


def test_tcp_trunk() -> None:
    rig = Rig()
    rig.regs.apply((trunk(transport="tcp"),))
    _, req, peer = rig.sent[0]
    assert peer.transport == "tcp"
    assert req.raw_uri == "sip:198.51.100.7:5080;transport=tcp"
    assert req.contacts[0].uri.params.get("transport") == "tcp"


def test_failures_are_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    caplog.set_level(logging.INFO, logger="pbx.trunkreg")
    rig.regs.apply((trunk(),))
    for _ in range(5):
        rig.reply(503)
        rig.clock.advance(BACKOFF_MAX)
    rig.register()
    lines = [r.getMessage() for r in caplog.records if r.name == "pbx.trunkreg"]
    failed = [line for line in lines if "registration failed: 503" in line]
    assert len(failed) == 1 and "next try in" in failed[0]
    assert lines[-1] == "trunk carrier: registered, expires in 600 s"


@pytest.mark.asyncio
async def test_names_are_resolved_at_each_attempt() -> None:
    rig = Rig()
    asked: list[tuple[str, int, str]] = []
    answers: list[str | OSError] = ["198.51.100.20", OSError("Name or service not known")]

    async def resolve(host: str, port: int, transport: str) -> str:
        asked.append((host, port, transport))
        answer = answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer

    rig.regs = TrunkRegistrations(cast(Any, rig.app), scheduler=rig.clock, resolve=resolve,
                                  rng=random.Random(3))
    rig.regs.apply((trunk(host="sip.provider.example"),))
    assert rig.sent == [] and rig.state() == "registering"
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(rig.sent) == 1 and rig.sent[0][2].addr == ("198.51.100.20", 5080)
    assert rig.sent[0][1].raw_uri == "sip:sip.provider.example:5080"
    rig.register(granted=60)
    rig.clock.advance(31)
    for _ in range(10):
        await asyncio.sleep(0)
    status = rig.regs.status()[0]
    assert status.state == "failed" and status.last_status is None
    assert "cannot resolve sip.provider.example" in status.last_reason
    assert asked == [("sip.provider.example", 5080, "udp")] * 2


@pytest.mark.asyncio
async def test_stop_unregisters_and_waits_for_the_answer() -> None:
    rig = Rig()
    rig.regs.apply((trunk(),))
    rig.register()

    async def registrar() -> None:
        for _ in range(100):
            if rig.last()[1].headers.get("Expires") == "0":
                rig.reply(200)
                return
            await asyncio.sleep(0.01)

    answering = asyncio.create_task(registrar())
    await asyncio.wait_for(rig.regs.stop(timeout=5.0), 2.0)
    await answering
    assert rig.regs.status() == [] and not rig.app.own_requests
    # Unanswered: stop() gives up after its timeout.
    rig2 = Rig()
    rig2.regs.apply((trunk(),))
    rig2.register()
    await asyncio.wait_for(rig2.regs.stop(timeout=0.1), 2.0)
    assert rig2.last()[1].headers.get("Expires") == "0"


def test_two_trunks_are_independent_and_listed_in_config_order() -> None:
    rig = Rig()
    other = trunk(name="backup", host="203.0.113.40", username="acct7")
    rig.regs.apply((trunk(), other))
    assert len(rig.sent) == 2 and rig.sent[0][1].call_id != rig.sent[1][1].call_id
    rig.reply(403)  # the backup's REGISTER was sent last
    assert [(s.name, s.state) for s in rig.regs.status()] == [
        ("carrier", "registering"), ("backup", "failed")]
    rig.regs.apply((other, trunk()))
    assert [s.name for s in rig.regs.status()] == ["backup", "carrier"]
    assert len(rig.sent) == 2, "an unchanged trunk is left alone on reload"
