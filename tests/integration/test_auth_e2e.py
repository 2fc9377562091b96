"""Digest authentication over the wire, against the real PBX process.

A small UDP client written here sends exactly the requests each case needs (the answers are
computed with :mod:`sip.digest`); the PBX runs with its default algorithm order, SHA-256 first.
"""

from __future__ import annotations

import re
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from sip.digest import DigestChallenge, answer_challenge, parse_challenge
from tests.integration.db import rows, wait_rows
from tests.integration.pbx_process import USERS, PbxProcess, run_pbx
from tests.peers.ports import LOOPBACK

pytestmark = pytest.mark.integration

# Short T1, so a server transaction is gone (Timer J = 64*T1, RFC 3261 17.2.2) 3.2 s after its
# answer and the very same bytes sent again are a new request, not a retransmission.
FAST_T1 = "  t1: 50ms\n"
TIMER_J = 64 * 0.05


@dataclass
class Reply:
    """A response as the phone sees it."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    raw: bytes

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def one(self, name: str) -> str:
        found = self.all(name)
        assert len(found) == 1, (name, self.headers)
        return found[0]

    def challenges(self) -> list[DigestChallenge]:
        parsed = [parse_challenge(v) for v in self.all("WWW-Authenticate")]
        assert all(c is not None for c in parsed), self.headers
        return [c for c in parsed if c is not None]


def _parse_reply(data: bytes) -> Reply:
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    lines = head.split("\r\n")
    _, status, reason = lines[0].split(" ", 2)
    headers = [(k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:])]
    return Reply(int(status), reason, headers, data)


@dataclass
class Phone:
    """A bare SIP UDP client bound to its own loopback port."""

    pbx: PbxProcess
    user: str
    sock: socket.socket = field(init=False)
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    cseq: int = 0

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    @property
    def domain(self) -> str:
        return "pbx.test"

    def close(self) -> None:
        self.sock.close()

    def build(self, method: str, *, uri: str | None = None, to_user: str | None = None,
              authorization: str | None = None, contact_port: int | None = None,
              expires: int | None = 300, body: bytes = b"") -> bytes:
        """One request; every call is a new transaction (fresh branch, next CSeq)."""
        self.cseq += 1
        uri = uri or f"sip:{self.domain}"
        to = to_user or self.user
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {LOOPBACK}:{self.port};rport;branch=z9hG4bK{uuid.uuid4().hex}",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@{self.domain}>;tag={self.tag}",
            f"To: <sip:{to}@{self.domain}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} {method}",
            f"Contact: <sip:{self.user}@{LOOPBACK}:{contact_port or self.port}>",
        ]
        if expires is not None and method == "REGISTER":
            lines.append(f"Expires: {expires}")
        if authorization is not None:
            lines.append(f"Authorization: {authorization}")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def send(self, data: bytes, timeout: float = 3.0) -> Reply:
        """Send ``data`` and return the first final response to it (provisionals skipped)."""
        self.sock.sendto(data, (LOOPBACK, self.pbx.port))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no final answer to:\n{data.decode(errors='replace')}")
            self.sock.settimeout(left)
            reply = _parse_reply(self.sock.recvfrom(65535)[0])
            if reply.status >= 200:
                return reply

    def answer(self, challenge: DigestChallenge, method: str, uri: str, *, password: str,
               username: str | None = None, nc: int = 1) -> str:
        return answer_challenge(challenge, method, uri, username or self.user, password,
                                secrets.token_hex(8), nc)


def _password(uid: str) -> str:
    return USERS[uid][1]


def _sdp(port: int) -> bytes:
    return (f"v=0\r\no=- 1 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    # No auth_algorithms setting: the PBX's default offer.
    with run_pbx(tmp_path_factory.mktemp("auth"), FAST_T1) as p:
        yield p


@pytest.fixture
def phones(pbx: PbxProcess) -> Iterator[list[Phone]]:
    made: list[Phone] = []
    yield made
    for p in made:
        p.close()


def _phone(pbx: PbxProcess, phones: list[Phone], user: str) -> Phone:
    p = Phone(pbx, user)
    phones.append(p)
    return p


def _register(p: Phone, uid: str, expires: int = 300) -> Reply:
    """A full REGISTER exchange: challenge, SHA-256 answer."""
    first = p.send(p.build("REGISTER", expires=expires))
    assert first.status == 401, first.raw
    auth = p.answer(first.challenges()[0], "REGISTER", f"sip:{p.domain}", password=_password(uid))
    return p.send(p.build("REGISTER", authorization=auth, expires=expires))


# -- the offer -----------------------------------------------------------------------------------


def test_challenge_offers_sha256_then_md5(pbx: PbxProcess, phones: list[Phone]) -> None:
    p = _phone(pbx, phones, "alice")
    reply = p.send(p.build("REGISTER"))
    assert (reply.status, reply.reason) == (401, "Unauthorized")
    # RFC 8760 2.4: one challenge per algorithm, the preferred first, sharing one nonce.
    challenges = reply.challenges()
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    assert len({c.nonce for c in challenges}) == 1
    for c in challenges:
        assert c.realm == "pbx.test" and c.qop == ("auth",) and not c.stale


def test_sha256_answer_registers(pbx: PbxProcess, phones: list[Phone]) -> None:
    p = _phone(pbx, phones, "alice")
    reply = _register(p, "alice")
    assert reply.status == 200, reply.raw
    assert f"{LOOPBACK}:{p.port}" in reply.one("Contact")
    reg = wait_rows(pbx.database, "SELECT * FROM registrations WHERE aor = 'alice' AND uri = ?",
                    f"sip:alice@{LOOPBACK}:{p.port}")
    assert reg[0]["source"] == f"udp:{LOOPBACK}:{p.port}"
    assert _register(p, "alice", expires=0).status == 200


# -- no user enumeration -------------------------------------------------------------------------

# Parts of a response that echo the request or are fresh per answer: masked before comparing.
_VOLATILE = [
    (re.compile(r'nonce="[^"]*"'), 'nonce="N"'),
    (re.compile(r";tag=[^;>\s]+"), ";tag=T"),
    (re.compile(r"branch=[^;\s]+"), "branch=B"),
    (re.compile(r"rport=\d+"), "rport=P"),
]


def _masked(reply: Reply, user: str, p: Phone) -> list[tuple[str, str]]:
    out = []
    for name, value in reply.headers:
        value = value.replace(p.call_id, "CALLID").replace(f"sip:{user}@", "sip:USER@")
        value = value.replace(f"{LOOPBACK}:{p.port}", "PHONE")
        for pattern, repl in _VOLATILE:
            value = pattern.sub(repl, value)
        out.append((name, value))
    return out


def test_unknown_user_and_wrong_password_get_the_same_answer(
    pbx: PbxProcess, phones: list[Phone]
) -> None:
    answers = {}
    for user, password in (("mallory", "guess-1"), ("alice", "guess-1"), ("101", "guess-1")):
        p = _phone(pbx, phones, user)
        first = p.send(p.build("REGISTER"))
        auth = p.answer(first.challenges()[0], "REGISTER", f"sip:{p.domain}", password=password)
        reply = p.send(p.build("REGISTER", authorization=auth))
        answers[user] = (reply.status, reply.reason, _masked(reply, user, p))
        assert reply.status == 401, reply.raw
        assert not any(c.stale for c in reply.challenges())
    # Same status, same headers in the same order, same values once the per-request parts
    # are masked: nothing tells an existing account from a missing one.
    assert answers["mallory"] == answers["alice"] == answers["101"]


# -- replays, foreign and forged nonces ----------------------------------------------------------


def test_replayed_register_is_not_a_fresh_registration(
    pbx: PbxProcess, phones: list[Phone]
) -> None:
    p = _phone(pbx, phones, "bob")
    first = p.send(p.build("REGISTER"))
    auth = p.answer(first.challenges()[0], "REGISTER", f"sip:{p.domain}", password=_password("bob"))
    request = p.build("REGISTER", authorization=auth)
    assert p.send(request).status == 200

    # The captured Authorization (same nonce, same nc) on a new transaction pointing bob's
    # calls elsewhere: refused as stale (RFC 7616 3.3), and the binding is not added.
    attacker = _phone(pbx, phones, "bob")
    hijack = attacker.build("REGISTER", authorization=auth, contact_port=attacker.port)
    reply = attacker.send(hijack)
    assert reply.status == 401, reply.raw
    assert all(c.stale for c in reply.challenges())
    uris = {r["uri"] for r in rows(pbx.database, "SELECT uri FROM registrations WHERE aor='bob'")}
    assert f"sip:bob@{LOOPBACK}:{attacker.port}" not in uris

    # The very same bytes again, once the server transaction is gone (so they are not a
    # retransmission to be answered from the transaction): also stale.
    time.sleep(TIMER_J + 0.5)
    again = p.send(request)
    assert again.status == 401, again.raw
    assert all(c.stale for c in again.challenges())

    # A fresh nonce works again for the real phone.
    auth = p.answer(again.challenges()[0], "REGISTER", f"sip:{p.domain}", password=_password("bob"))
    assert p.send(p.build("REGISTER", authorization=auth, expires=0)).status == 200


def _tampered(nonce: str) -> str:
    """The nonce with one character changed (still 48 base64url characters)."""
    i = len(nonce) // 2
    return nonce[:i] + ("A" if nonce[i] != "A" else "B") + nonce[i + 1 :]


def test_foreign_realm_and_forged_nonces_are_refused(
    pbx: PbxProcess, phones: list[Phone], tmp_path_factory: pytest.TempPathFactory
) -> None:
    p = _phone(pbx, phones, "carol")
    uri = f"sip:{p.domain}"
    real = p.send(p.build("REGISTER")).challenges()[0]

    # A nonce issued by another PBX of the same realm (another secret), answered correctly.
    with run_pbx(tmp_path_factory.mktemp("other"), FAST_T1) as other:
        q = Phone(other, "carol")
        try:
            foreign = q.send(q.build("REGISTER")).challenges()[0]
        finally:
            q.close()
    cases = {
        "other realm": DigestChallenge(
            realm="elsewhere.test", nonce=real.nonce, algorithm="SHA-256", qop=("auth",),
            opaque=real.opaque),
        "tampered nonce": DigestChallenge(
            realm=real.realm, nonce=_tampered(real.nonce), algorithm="SHA-256", qop=("auth",),
            opaque=real.opaque),
        "made-up nonce": DigestChallenge(
            realm=real.realm, nonce=secrets.token_urlsafe(36), algorithm="SHA-256",
            qop=("auth",), opaque=real.opaque),
        "another PBX's nonce": foreign,
    }  # fmt: skip
    for what, challenge in cases.items():
        # The password is right every time: only the nonce or realm is wrong.
        auth = p.answer(challenge, "REGISTER", uri, password=_password("carol"))
        reply = p.send(p.build("REGISTER", authorization=auth))
        assert reply.status == 401, (what, reply.raw)
        # Not stale either: a phone must not be told to retry silently with such a nonce.
        assert not any(c.stale for c in reply.challenges()), what
    assert not rows(pbx.database, "SELECT * FROM registrations WHERE aor = 'carol'")

    # The same phone with the PBX's own nonce is fine.
    auth = p.answer(real, "REGISTER", uri, password=_password("carol"))
    assert p.send(p.build("REGISTER", authorization=auth, expires=0)).status == 200


# -- INVITE and other people's addresses ---------------------------------------------------------


def test_invite_without_credentials_gets_401(pbx: PbxProcess, phones: list[Phone]) -> None:
    p = _phone(pbx, phones, "alice")
    invite = p.build("INVITE", uri=f"sip:102@{p.domain}", to_user="102", body=_sdp(40000))
    reply = p.send(invite)
    # A B2BUA challenges as the UAS it is (RFC 3261 22.1, 22.3): 401 with WWW-Authenticate,
    # never a proxy's 407.
    assert (reply.status, reply.reason) == (401, "Unauthorized"), reply.raw
    assert [c.algorithm for c in reply.challenges()] == ["SHA-256", "MD5"]
    assert not reply.all("Proxy-Authenticate")
    # ACK the final response (RFC 3261 17.1.1.3) so the PBX stops retransmitting it.
    branch = re.search(r"branch=([^;\r\n]+)", invite.decode())
    assert branch is not None
    to = reply.one("To")
    ack = (
        f"ACK sip:102@{p.domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOOPBACK}:{p.port};rport;branch={branch.group(1)}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@{p.domain}>;tag={p.tag}\r\nTo: {to}\r\n"
        f"Call-ID: {p.call_id}\r\nCSeq: {p.cseq} ACK\r\nContent-Length: 0\r\n\r\n"
    )
    p.sock.sendto(ack.encode(), (LOOPBACK, pbx.port))
    # No call was started for an unauthenticated caller.
    assert not rows(pbx.database, "SELECT * FROM calls WHERE sip_call_id = ?", p.call_id)


@pytest.mark.parametrize("aor", ["bob", "102"])
def test_user_cannot_register_another_users_address(
    pbx: PbxProcess, phones: list[Phone], aor: str
) -> None:
    p = _phone(pbx, phones, "alice")
    first = p.send(p.build("REGISTER", to_user=aor))
    assert first.status == 401
    auth = p.answer(first.challenges()[0], "REGISTER", f"sip:{p.domain}",
                    password=_password("alice"))
    reply = p.send(p.build("REGISTER", to_user=aor, authorization=auth))
    assert reply.status == 403, reply.raw
    assert not rows(pbx.database, "SELECT * FROM registrations WHERE aor = 'bob'")
