from __future__ import annotations

import hashlib
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.digest import (
    AuthResult,
    DigestChallenge,
    DigestCredentials,
    DigestError,
    DigestServer,
    answer_challenge,
    choose_challenge,
    ha1,
    parse_challenge,
    parse_digest,
)

REALM = "pbx.example.com"
SECRET = b"0123456789abcdef-test-secret"
URI = "sip:pbx.example.com"

# RFC 7616 section 3.9.1
RFC7616_CHALLENGE = dict(
    realm="http-auth@example.org",
    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
)
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def _server(**kwargs: object) -> DigestServer:
    return DigestServer(REALM, SECRET, **kwargs)  # type: ignore[arg-type]


def _answer(
    server_values: list[str],
    password: str = "s3cret",
    *,
    method: str = "REGISTER",
    nc: int = 1,
    username: str = "alice",
    algorithm: str | None = None,
) -> DigestCredentials:
    """Answer the challenge with ``algorithm`` (default: the first one) as a phone would."""
    challenges = [parse_challenge(v) for v in server_values]
    chosen = next(c for c in challenges if c is not None and algorithm in (None, c.algorithm))
    value = answer_challenge(chosen, method, URI, username, password, "0a4f113b", nc)
    creds = parse_digest(value)
    assert creds is not None
    return creds


# -- published vectors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_example(algorithm: str, expected: str) -> None:
    header = (
        f'Digest realm="{RFC7616_CHALLENGE["realm"]}", qop="auth", algorithm={algorithm}, '
        f'nonce="{RFC7616_CHALLENGE["nonce"]}", opaque="{RFC7616_CHALLENGE["opaque"]}"'
    )
    challenge = parse_challenge(header)
    assert challenge is not None
    value = answer_challenge(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle of Life", RFC7616_CNONCE, 1
    )
    creds = parse_digest(value)
    assert creds is not None
    assert creds.response == expected
    assert creds.qop == "auth"
    assert creds.nc == "00000001"
    assert creds.opaque == RFC7616_CHALLENGE["opaque"]
    assert creds.algorithm == algorithm


def test_rfc2617_example() -> None:
    # RFC 2617 section 3.5; the server offers auth and auth-int, the client picks auth.
    challenge = parse_challenge(
        'Digest\r\n realm="testrealm@host.com",\r\n qop="auth,auth-int",\r\n'
        ' nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",\r\n'
        ' opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert challenge is not None
    assert challenge.qop == ("auth", "auth-int")
    value = answer_challenge(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", "0a4f113b", 1
    )
    creds = parse_digest(value)
    assert creds is not None
    assert creds.response == "6629fae49393a05397450978507c4ef1"


def test_parse_rfc7616_authorization_with_lws_and_unquoted_values() -> None:
    value = (
        'digest   username="Mufasa",\r\n\trealm="http-auth@example.org",\r\n'
        '    uri="/dir/index.html", ALGORITHM=SHA-256,'
        ' nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",'
        ' nc=00000001 , cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth,,'
        ' response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",'
        ' opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS", '
    )
    creds = parse_digest(value)
    assert creds == DigestCredentials(
        username="Mufasa",
        realm="http-auth@example.org",
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        uri="/dir/index.html",
        response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        algorithm="SHA-256",
        qop="auth",
        nc="00000001",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
    )


def test_parse_quoted_pair_and_extended_username() -> None:
    creds = parse_digest(
        'Digest username="a\\"b\\\\c", realm="r", nonce="n", uri="sip:x", response="00"'
    )
    assert creds is not None
    assert creds.username == 'a"b\\c'
    ext = parse_digest(
        "Digest username*=UTF-8''J%C3%A4s%C3%B8n%20Doe, realm=r, nonce=n, uri=sip:x, response=0"
    )
    assert ext is not None
    assert ext.username == "Jäsøn Doe"


@pytest.mark.parametrize(
    "value",
    [
        # RFC 4475 section 3.1.2.8 (regaut01): an unknown scheme
        'NewAuthScheme odb98bj5a=49p3o8jqw-erpcasd, realm="x", x=y',
        "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
        "",
        "Digest",
        "Digest ",
        'Digest username="alice"',  # mandatory params missing
        'Digest username="a, realm="r", nonce="n", uri="u", response="x"',  # unterminated
        'Digest username="a" realm="r", nonce="n", uri="u", response="x"',  # missing comma
        'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="x"',
        "Digest username=a b, realm=r, nonce=n, uri=u, response=x",
        "Digest =x, realm=r",
        "Digest username*=bogus, realm=r, nonce=n, uri=u, response=x",
        "Digest username=\"a\", username*=UTF-8''a, realm=r, nonce=n, uri=u, response=x",
        "Digest " + "x=y, " * 5000,
    ],
)
def test_parse_rejects_non_digest_and_garbage(value: str) -> None:
    assert parse_digest(value) is None


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_parse_digest_never_raises(value: str) -> None:
    parse_digest(value)
    parse_challenge(value)
    parse_digest("Digest " + value)
    parse_challenge("Digest " + value)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce", "opaque"]
        ),
        st.text(),
        min_size=1,
    )
)
def test_verify_never_raises_on_hostile_values(params: dict[str, str]) -> None:
    quoted = ", ".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in params.items()
    )
    creds = parse_digest("Digest " + quoted)
    if creds is not None:
        assert _server().verify("REGISTER", creds, "pw", 1000.0) is AuthResult.FAILED


def test_parse_challenge_fields() -> None:
    challenge = parse_challenge(
        'DIGEST realm="a\\"b", nonce=n1, qop="auth", stale=TRUE, algorithm=sha-256, opaque="o"'
    )
    assert challenge == DigestChallenge(
        realm='a"b', nonce="n1", algorithm="sha-256", qop=("auth",), opaque="o", stale=True
    )
    assert parse_challenge('Digest realm="r"') is None  # no nonce


# -- server -------------------------------------------------------------------------------------


def test_challenge_lists_sha256_first_then_md5() -> None:
    values = _server().challenge(1000.0)
    challenges = [parse_challenge(v) for v in values]
    assert [c.algorithm for c in challenges if c] == ["SHA-256", "MD5"]
    first, second = challenges
    assert first is not None and second is not None
    assert first.nonce == second.nonce
    assert first.qop == second.qop == ("auth",)
    assert first.opaque is not None and first.opaque == second.opaque
    assert not first.stale
    assert first.realm == REALM
    stale = [parse_challenge(v) for v in _server().challenge(1000.0, stale=True)]
    assert all(c is not None and c.stale for c in stale)
    # Each challenge gets a fresh nonce.
    assert parse_challenge(_server().challenge(1000.0)[0]) != first


def test_choose_challenge_prefers_strongest() -> None:
    values = _server(algorithms=("MD5", "SHA-256")).challenge(0.0)
    chosen = choose_challenge(
        ['Basic realm="x"', *values, 'Digest realm="r", nonce="n", algorithm=UNKNOWN']
    )
    assert chosen is not None and chosen.algorithm == "SHA-256"
    assert choose_challenge(['Basic realm="x"']) is None


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_round_trip(algorithm: str) -> None:
    server = _server()
    creds = _answer(server.challenge(1000.0), algorithm=algorithm)
    assert creds.algorithm == algorithm
    assert server.verify("REGISTER", creds, "s3cret", 1001.0) is AuthResult.OK
    # The same nonce goes on working with a higher nc (phones reuse it for INVITE etc.).
    again = _answer([_challenge_of(creds)], nc=2, method="INVITE", algorithm=algorithm)
    assert server.verify("INVITE", again, "s3cret", 1002.0) is AuthResult.OK


def _challenge_of(creds: DigestCredentials) -> str:
    """Rebuild the challenge a set of credentials answered."""
    return (
        f'Digest realm="{creds.realm}", nonce="{creds.nonce}", opaque="{creds.opaque}", '
        f'algorithm={creds.algorithm}, qop="auth"'
    )


def test_method_is_part_of_the_answer() -> None:
    server = _server()
    creds = _answer(server.challenge(1000.0), method="REGISTER")
    assert server.verify("INVITE", creds, "s3cret", 1000.0) is AuthResult.FAILED


def test_wrong_password_fails() -> None:
    server = _server()
    creds = _answer(server.challenge(1000.0), password="guess")
    assert server.verify("REGISTER", creds, "s3cret", 1000.0) is AuthResult.FAILED


def test_unknown_user_fails_like_a_wrong_password() -> None:
    server = _server()
    values = server.challenge(1000.0)
    unknown = server.verify("REGISTER", _answer(values, username="mallory"), None, 1000.0)
    wrong = server.verify("REGISTER", _answer(values, password="guess"), "s3cret", 1000.0)
    assert unknown is wrong is AuthResult.FAILED
    # Even an expired nonce does not reveal whether the user exists (no STALE for unknowns).
    late = server.verify("REGISTER", _answer(values, username="mallory"), None, 5000.0)
    assert late is AuthResult.FAILED


def test_unknown_user_costs_about_as_much_as_a_known_one() -> None:
    server = _server()
    values = server.challenge(1000.0)
    known = _answer(values, password="guess")
    unknown = _answer(values, username="nobody")

    def cost(creds: DigestCredentials, password: str | None) -> float:
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(200):
                server.verify("REGISTER", creds, password, 1000.0)
            best = min(best, time.perf_counter() - start)
        return best

    known_cost, unknown_cost = cost(known, "s3cret"), cost(unknown, None)
    assert unknown_cost > known_cost * 0.5
    # Tens of microseconds per check, with a wide margin for slow machines.
    assert known_cost / 200 < 500e-6


def test_expired_nonce_is_stale_and_recovers() -> None:
    server = _server(nonce_ttl=300.0)
    creds = _answer(server.challenge(1000.0))
    assert server.verify("REGISTER", creds, "s3cret", 1301.0) is AuthResult.STALE
    # The phone retries on the stale=true challenge without asking its user.
    fresh = [parse_challenge(v) for v in server.challenge(1301.0, stale=True)]
    assert fresh[0] is not None and fresh[0].stale
    retry = _answer(server.challenge(1301.0))
    assert server.verify("REGISTER", retry, "s3cret", 1301.5) is AuthResult.OK


def test_expired_nonce_with_wrong_password_is_failed_not_stale() -> None:
    server = _server()
    creds = _answer(server.challenge(1000.0), password="guess")
    assert server.verify("REGISTER", creds, "s3cret", 2000.0) is AuthResult.FAILED


def test_nonce_from_another_secret_or_realm_is_refused() -> None:
    other = DigestServer(REALM, b"another-secret-of-16-bytes")
    creds = _answer(other.challenge(1000.0))
    assert _server().verify("REGISTER", creds, "s3cret", 1000.0) is AuthResult.FAILED
    other_realm = DigestServer("other.example", SECRET)
    foreign = _answer(other_realm.challenge(1000.0))
    assert _server().verify("REGISTER", foreign, "s3cret", 1000.0) is AuthResult.FAILED


def test_tampered_nonce_fails() -> None:
    server = _server()
    values = server.challenge(1000.0)
    nonce = parse_challenge(values[0]).nonce  # type: ignore[union-attr]
    for i in (0, 5, 30, 47):
        flipped = nonce[:i] + ("A" if nonce[i] != "A" else "B") + nonce[i + 1 :]
        forged = [v.replace(nonce, flipped) for v in values]
        creds = _answer(forged)
        assert server.verify("REGISTER", creds, "s3cret", 1000.0) is AuthResult.FAILED
    for bogus in ("", "abc", nonce + "A", "=" * 48, "é" * 48):
        creds = _answer([v.replace(nonce, bogus) for v in values])
        assert server.verify("REGISTER", creds, "s3cret", 1000.0) is AuthResult.FAILED


def test_nc_replay_is_stale() -> None:
    server = _server()
    values = server.challenge(1000.0)
    first = _answer(values, nc=1)
    assert server.verify("REGISTER", first, "s3cret", 1000.0) is AuthResult.OK
    # An exact replay, or an older nc, is refused; the phone gets a fresh nonce.
    assert server.verify("REGISTER", first, "s3cret", 1001.0) is AuthResult.STALE
    third = _answer(values, nc=3)
    assert server.verify("REGISTER", third, "s3cret", 1002.0) is AuthResult.OK
    second = _answer(values, nc=2)
    assert server.verify("REGISTER", second, "s3cret", 1003.0) is AuthResult.STALE
    fourth = _answer(values, nc=4)
    assert server.verify("REGISTER", fourth, "s3cret", 1004.0) is AuthResult.OK


def test_replay_table_is_bounded_and_stays_safe() -> None:
    server = _server(max_nonces=4)
    old_values = server.challenge(1000.0)
    old = _answer(old_values)
    assert server.verify("REGISTER", old, "s3cret", 1000.0) is AuthResult.OK
    for t in range(1, 10):
        creds = _answer(server.challenge(1000.0 + t))
        assert server.verify("REGISTER", creds, "s3cret", 1000.0 + t) is AuthResult.OK
    assert len(server._seen) <= 4
    # The first nonce was forgotten, yet its replay is not accepted.
    assert server.verify("REGISTER", old, "s3cret", 1010.0) is AuthResult.STALE
    # A new nonce still works.
    creds = _answer(server.challenge(1011.0))
    assert server.verify("REGISTER", creds, "s3cret", 1011.0) is AuthResult.OK


def test_rfc2069_answer_accepted_once() -> None:
    # pyVoIP 1.6.8 answers a qop challenge without qop, nc and cnonce.
    server = _server()
    md5 = parse_challenge(server.challenge(1000.0)[1])
    assert md5 is not None and md5.algorithm == "MD5"
    legacy = DigestChallenge(realm=md5.realm, nonce=md5.nonce, algorithm="MD5")
    value = answer_challenge(legacy, "REGISTER", URI, "alice", "s3cret", "", 1)
    assert "qop" not in value and "cnonce" not in value and "nc=" not in value
    creds = parse_digest(value)
    assert creds is not None
    assert server.verify("REGISTER", creds, "s3cret", 1000.0) is AuthResult.OK
    assert server.verify("REGISTER", creds, "s3cret", 1001.0) is AuthResult.STALE


def test_auth_int_is_refused() -> None:
    server = _server()
    c = parse_challenge(server.challenge(1000.0)[0])
    assert c is not None
    offered = DigestChallenge(c.realm, c.nonce, c.algorithm, ("auth-int",), c.opaque)
    creds = parse_digest(
        answer_challenge(offered, "REGISTER", URI, "alice", "s3cret", "cn", 1, b"body")
    )
    assert creds is not None and creds.qop == "auth-int"
    assert server.verify("REGISTER", creds, "s3cret", 1000.0) is AuthResult.FAILED


def test_sess_variant_is_checked() -> None:
    # RFC 7616 section 3.4.2: A1 = H(user:realm:pass):nonce:cnonce
    server = _server()
    for alg in ("MD5-sess", "SHA-256-sess"):
        c = parse_challenge(server.challenge(1000.0)[0])
        assert c is not None
        sess = DigestChallenge(c.realm, c.nonce, alg, ("auth",), c.opaque)
        creds = parse_digest(answer_challenge(sess, "REGISTER", URI, "alice", "s3cret", "cn", 1))
        assert creds is not None
        assert server.verify("REGISTER", creds, "s3cret", 1000.0) is AuthResult.OK
        bad = parse_digest(answer_challenge(sess, "REGISTER", URI, "alice", "nope", "cn", 2))
        assert bad is not None
        assert server.verify("REGISTER", bad, "s3cret", 1000.0) is AuthResult.FAILED


@pytest.mark.parametrize(
    "change",
    [
        {"realm": "evil.example"},
        {"uri": ""},
        {"opaque": "not-ours"},
        {"algorithm": "SHA3-512"},
        {"qop": "bogus"},
        {"nc": "xyz"},
        {"nc": "00000000"},
        {"nc": None},
        {"cnonce": None},
        {"response": "ÿ" * 32},
        {"userhash": True},
    ],
)
def test_malformed_answers_fail(change: dict[str, object]) -> None:
    server = _server()
    creds = _answer(server.challenge(1000.0))
    fields = {name: getattr(creds, name) for name in DigestCredentials.__slots__}
    fields.update(change)
    broken = DigestCredentials(**fields)  # type: ignore[arg-type]
    assert server.verify("REGISTER", broken, "s3cret", 1000.0) is AuthResult.FAILED


def test_missing_opaque_is_tolerated() -> None:
    server = _server()
    creds = _answer(server.challenge(1000.0))
    fields = {name: getattr(creds, name) for name in DigestCredentials.__slots__}
    fields["opaque"] = None
    assert (
        server.verify("REGISTER", DigestCredentials(**fields), "s3cret", 1000.0)  # type: ignore[arg-type]
        is AuthResult.OK
    )


def test_username_is_case_sensitive() -> None:
    server = _server()
    creds = _answer(server.challenge(1000.0), username="Alice")
    fields = {name: getattr(creds, name) for name in DigestCredentials.__slots__}
    fields["username"] = "alice"
    changed = DigestCredentials(**fields)  # type: ignore[arg-type]
    assert server.verify("REGISTER", changed, "s3cret", 1000.0) is AuthResult.FAILED


def test_client_errors_are_clear() -> None:
    c = DigestChallenge("r", "n", "SHA3-512", ("auth",))
    with pytest.raises(DigestError, match="unsupported digest algorithm"):
        answer_challenge(c, "REGISTER", URI, "u", "p", "cn", 1)
    with pytest.raises(DigestError, match="qop"):
        answer_challenge(DigestChallenge("r", "n", qop=("x",)), "REGISTER", URI, "u", "p", "c", 1)
    with pytest.raises(DigestError, match="nonce count"):
        answer_challenge(
            DigestChallenge("r", "n", qop=("auth",)), "REGISTER", URI, "u", "p", "c", 0
        )
    with pytest.raises(DigestError, match="control character"):
        answer_challenge(DigestChallenge("r", "n"), "REGISTER", URI, "u\r\nX: y", "p", "c", 1)
    with pytest.raises(DigestError):
        DigestServer(REALM, b"short")
    with pytest.raises(DigestError):
        DigestServer("bad\r\nrealm", SECRET)
    with pytest.raises(DigestError):
        ha1("u", "r", "p", "ROT13")


def test_userhash_answer() -> None:
    # RFC 7616 section 3.4.4: the client sends H(username:realm) instead of the name.
    c = DigestChallenge("r", "n", "SHA-256", ("auth",), userhash=True)
    creds = parse_digest(answer_challenge(c, "REGISTER", URI, "alice", "p", "cn", 1))
    assert creds is not None and creds.userhash
    assert creds.username != "alice" and len(creds.username) == 64


def test_auth_int_client_hashes_the_body_bytes() -> None:
    # RFC 7616 section 3.4.3: A2 = method:uri:H(entity-body), over the raw bytes.
    body = "v=0\r\ns=Jäsøn\r\n".encode()
    c = DigestChallenge("r", "n", "MD5", ("auth-int",))
    creds = parse_digest(answer_challenge(c, "INVITE", URI, "u", "p", "cn", 1, body))
    assert creds is not None

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    h2 = md5(f"INVITE:{URI}:{hashlib.md5(body).hexdigest()}")
    assert creds.response == md5(f"{md5('u:r:p')}:n:00000001:cn:auth-int:{h2}")


def test_lone_surrogates_do_not_raise() -> None:
    # A message decoded with errors="surrogateescape" can hand over such names.
    server = _server()
    creds = _answer(server.challenge(1000.0))
    fields = {name: getattr(creds, name) for name in DigestCredentials.__slots__}
    fields["username"] = "al\udcffice\ud800"
    odd = DigestCredentials(**fields)  # type: ignore[arg-type]
    assert server.verify("REGISTER", odd, "s3cret", 1000.0) is AuthResult.FAILED
    assert server.verify("REGISTER", odd, None, 1000.0) is AuthResult.FAILED
