"""The ``http:`` section: the listen address, API keys and their checks against ``users:``."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from pbx.config_http import ApiKey, HttpSection, http_problems, parse_http_listen

KEY = "0123456789abcdef"


def test_defaults_listen_on_loopback_8080_with_no_keys() -> None:
    http = HttpSection()
    assert (http.listen, http.host, http.port, http.enabled) == (
        "127.0.0.1:8080", "127.0.0.1", 8080, True,
    )
    assert http.api_keys == ()


@pytest.mark.parametrize(
    ("spec", "host", "port", "normal"),
    [
        ("0.0.0.0:80", "0.0.0.0", 80, "0.0.0.0:80"),
        (" 127.0.0.1:0 ", "127.0.0.1", 0, "127.0.0.1:0"),
        ("[::1]:8080", "::1", 8080, "[::1]:8080"),
        ("[0:0::1]:9000", "::1", 9000, "[::1]:9000"),
        ("[::]:65535", "::", 65535, "[::]:65535"),
        ("LocalHost:8080", "localhost", 8080, "localhost:8080"),
        ("api.pbx.example:443", "api.pbx.example", 443, "api.pbx.example:443"),
    ],
)
def test_listen_forms(spec: str, host: str, port: int, normal: str) -> None:
    assert parse_http_listen(spec) == (host, port)
    http = HttpSection(listen=spec)
    assert (http.host, http.port, http.listen) == (host, port, normal)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("8080", "expected host:port"),
        (":8080", "expected host:port"),
        ("127.0.0.1:", "invalid port"),
        ("127.0.0.1:65536", "expected 0 to 65535"),
        ("127.0.0.1:http", "invalid port"),
        ("::1:8080", "needs brackets"),
        ("[::1]8080", "expected [::1]:8080"),
        ("[::g]:8080", "invalid IPv6 address"),
        ("300.1.2.3:80", "invalid host"),
        ("bad_host:80", "invalid host"),
    ],
)
def test_bad_listen_is_refused_with_a_reason(spec: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_http_listen(spec)
    with pytest.raises(ValidationError, match=re.escape(reason)):
        HttpSection(listen=spec)


def test_api_key_defaults_to_admin_and_hides_the_secret() -> None:
    key = ApiKey(name="crm", key=KEY)
    assert (key.role, key.user) == ("admin", None)
    assert KEY not in repr(key) and KEY not in str(key)


def test_a_short_key_is_refused_without_showing_it() -> None:
    with pytest.raises(ValidationError) as caught:
        ApiKey(name="crm", key="short-secret")
    assert "at least 16 characters" in str(caught.value)
    assert "short-secret" not in str(caught.value)


@pytest.mark.parametrize("bad", ["0123456789 abcdef", "0123456789abcdef\n", "0123456789abcdéf"])
def test_a_key_must_be_visible_ascii(bad: str) -> None:
    with pytest.raises(ValidationError, match="visible ASCII") as caught:
        ApiKey(name="crm", key=bad)
    assert bad not in str(caught.value)


def test_key_names_roles_and_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="invalid key name"):
        ApiKey(name="my key", key=KEY)
    with pytest.raises(ValidationError, match="role"):
        ApiKey.model_validate({"name": "x", "key": KEY, "role": "root"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        ApiKey.model_validate({"name": "x", "key": KEY, "scope": "all"})
    with pytest.raises(ValidationError, match="must name the user"):
        ApiKey(name="desk", key=KEY, role="agent")
    agent = ApiKey(name="desk", key=KEY, role="agent", user="alice")
    assert (agent.role, agent.user) == ("agent", "alice")
    with pytest.raises(ValidationError, match="frozen"):
        agent.role = "admin"


def test_duplicate_names_and_keys_are_errors() -> None:
    with pytest.raises(ValidationError, match=r'duplicate key name "crm" \(api_keys\[0\] and '
                                              r"api_keys\[1\]\)"):
        HttpSection.model_validate({"api_keys": [{"name": "crm", "key": KEY},
                                                 {"name": "crm", "key": KEY + "x"}]})
    with pytest.raises(ValidationError, match=r"api_keys\[1\] has the same key as api_keys\[0\]"
                       ) as caught:
        HttpSection.model_validate({"api_keys": [{"name": "a", "key": KEY},
                                                 {"name": "b", "key": KEY}]})
    assert KEY not in str(caught.value)
    http = HttpSection.model_validate({"listen": "[::1]:0", "enabled": False, "api_keys": [
        {"name": "a", "key": KEY}, {"name": "b", "key": KEY + "x", "role": "supervisor"},
    ]})
    assert [(k.name, k.role) for k in http.api_keys] == [("a", "admin"), ("b", "supervisor")]
    assert http.enabled is False


def test_http_problems_name_keys_for_unknown_users() -> None:
    data = {
        "users": [{"id": "alice"}, {"id": "bob"}],
        "http": {"api_keys": [
            {"name": "a", "key": KEY, "role": "agent", "user": "alice"},
            {"name": "b", "key": KEY, "role": "agent", "user": "dave"},
            {"name": "c", "key": KEY},
            {"name": "d", "key": KEY, "role": "supervisor", "user": "erin"},
        ]},
    }
    assert http_problems(data) == [
        (("http", "api_keys", 1, "user"), 'unknown user "dave" (not in users)'),
        (("http", "api_keys", 3, "user"), 'unknown user "erin" (not in users)'),
    ]


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"http": None},
        {"http": {"listen": "127.0.0.1:8080"}},
        {"http": {"api_keys": "nonsense"}},
        {"http": {"api_keys": [None, 3, {"user": 5}]}, "users": "nonsense"},
        {"http": {"api_keys": [{"name": "a", "key": KEY, "user": "alice"}]},
         "users": [{"id": "alice"}, None]},
    ],
)
def test_http_problems_ignore_what_validation_reports(data: dict[str, object]) -> None:
    assert http_problems(data) == []
