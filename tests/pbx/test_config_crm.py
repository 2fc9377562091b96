"""The ``crm:`` config section: webhooks and their retry policy."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from crmsync.outbox import EVENTS as OUTBOX_EVENTS
from pbx.config_crm import EVENTS, CrmSection, RetrySection, Webhook

SECRET = "s3cret-s3cret-s3cret"


def _hook(**fields: Any) -> dict[str, Any]:
    return {"name": "crm", "url": "https://crm.example/hooks/calls", "secret": SECRET, **fields}


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        CrmSection.model_validate(data)
    return str(info.value)


def test_defaults() -> None:
    crm = CrmSection()
    assert crm.webhooks == ()
    assert (crm.retry.max_attempts, crm.retry.first_delay, crm.retry.max_delay) == (12, 1.0, 600.0)
    hook = Webhook.model_validate(_hook())
    assert hook.events == EVENTS == OUTBOX_EVENTS
    assert hook.timeout == 5.0 and hook.enabled is True


def test_durations_and_events_as_written_in_yaml() -> None:
    crm = CrmSection.model_validate({
        "webhooks": [_hook(events=["call.ended", "call.missed"], timeout="1500ms"),
                     _hook(name="bi", url="http://10.0.0.5:8080/in", enabled=False)],
        "retry": {"max_attempts": 5, "first_delay": "500ms", "max_delay": "1m30s"},
    })
    assert crm.webhooks[0].events == ("call.ended", "call.missed")
    assert crm.webhooks[0].timeout == 1.5
    assert crm.webhooks[1].enabled is False
    assert crm.retry == RetrySection(max_attempts=5, first_delay=0.5, max_delay=90.0)


def test_the_secret_never_shows() -> None:
    hook = Webhook.model_validate(_hook())
    assert SECRET not in repr(hook) and SECRET not in repr(CrmSection(webhooks=(hook,)))
    message = _error({"webhooks": [_hook(secret="short-secret")]})
    assert "at least 16 characters" in message and "short-secret" not in message
    # A bad entry elsewhere must not print the secret either.
    message = _error({"webhooks": [_hook(url="ftp://crm.example/")]})
    assert SECRET not in message


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://crm.example/x", "expected http:// or https://"),
    ("crm.example/hooks", "expected http:// or https://"),
    ("https:///hooks", "no host"),
    ("https://crm example/", "no spaces"),
    ("https://bad_host!/x", "invalid host"),
    ("https://crm.example:99999/", "invalid port"),
    ("https://user:pw@crm.example/", "must not carry a user name or password"),
    ("https://crm.example/#frag", "fragment"),
])
def test_bad_urls_are_refused_with_the_reason(url: str, why: str) -> None:
    assert why in _error({"webhooks": [_hook(url=url)]})


def test_ip_and_port_urls_are_fine() -> None:
    for url in ("http://127.0.0.1:8080/hook", "https://[2001:db8::1]/hook",
                "https://crm.example/hooks?source=pbx"):
        assert Webhook.model_validate(_hook(url=url)).url == url


@pytest.mark.parametrize(("fields", "why"), [
    ({"events": ["call.ringing"]}, "unknown event 'call.ringing'"),
    ({"events": []}, "at least one event"),
    ({"events": ["call.ended", "call.ended"]}, "twice"),
    ({"timeout": 0}, "more than 0"),
    ({"timeout": "5m"}, "at most 120s"),
    ({"timeout": "soon"}, "invalid duration"),
    ({"name": "my hook"}, "invalid webhook name"),
    ({"retries": 3}, "Extra inputs are not permitted"),
])
def test_bad_webhooks_are_refused(fields: dict[str, Any], why: str) -> None:
    assert why in _error({"webhooks": [_hook(**fields)]})


def test_webhook_names_are_unique() -> None:
    message = _error({"webhooks": [_hook(), _hook(url="https://other.example/")]})
    assert 'duplicate webhook name "crm" (webhooks[0] and webhooks[1])' in message


@pytest.mark.parametrize(("retry", "why"), [
    ({"max_attempts": 0}, "greater than or equal to 1"),
    ({"max_attempts": 1000}, "less than or equal to 100"),
    ({"first_delay": 0}, "first_delay must be more than 0"),
    ({"first_delay": "10s", "max_delay": "5s"}, "max_delay must be at least first_delay"),
    ({"backoff": 2}, "Extra inputs are not permitted"),
])
def test_bad_retry_is_refused(retry: dict[str, Any], why: str) -> None:
    assert why in _error({"retry": retry})


def test_sections_are_frozen() -> None:
    hook = Webhook.model_validate(_hook())
    with pytest.raises(ValidationError):
        hook.url = "https://elsewhere.example/"


def test_lookup_order() -> None:
    assert CrmSection().lookup_order == ("contact", "lead")
    assert CrmSection.model_validate({"lookup_order": ["lead", "contact"]}).lookup_order == (
        "lead", "contact")
    assert CrmSection.model_validate({"lookup_order": ["lead"]}).lookup_order == ("lead",)
    for bad, why in (([], "at least one"), (["contact", "contact"], "at most once"),
                     (["fax"], "'contact' or 'lead'")):
        with pytest.raises(ValidationError, match=why):
            CrmSection.model_validate({"lookup_order": bad})
