from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.registrar import Binding, ContactSpec, RegisterResult, Registrar, contact_key

AOR = "sip:alice@pbx.example.com"
UA1 = "sip:alice@192.0.2.4:5062;transport=tcp"
UA2 = "sip:alice@198.51.100.7:5060"
INSTANCE = "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"


def _registrar(**kwargs: int) -> Registrar:
    settings_ = dict(min_expires=60, max_expires=3600, default_expires=1800, max_contacts=5)
    settings_.update(kwargs)
    return Registrar(**settings_)


def _register(
    reg: Registrar,
    contacts: list[ContactSpec] | str,
    *,
    expires: int | None = None,
    call_id: str = "cid-1",
    cseq: int = 1,
    source: str = "udp:192.0.2.4:5062",
    now: float = 1000.0,
    aor: str = AOR,
) -> RegisterResult:
    return reg.register(aor, contacts, expires, call_id, cseq, source, now)  # type: ignore[arg-type]


def _uris(bindings: list[Binding]) -> list[str]:
    return [b.uri for b in bindings]


def test_several_contacts_per_aor_and_query() -> None:
    reg = _registrar()
    result = _register(reg, [ContactSpec(UA1, q=0.5), ContactSpec(UA2, q=0.9)], expires=600)
    assert (result.status, result.reason) == (200, "OK")
    assert _uris(result.bindings) == [UA2, UA1]  # highest q first
    assert [b.expires_in(1000.0) for b in result.bindings] == [600, 600]
    assert _uris(result.changed) == [UA1, UA2]
    assert result.removed == []
    # An empty Contact list is a query (RFC 3261 section 10.2.3): nothing changes.
    query = _register(reg, [], call_id="other", cseq=1, now=1100.0)
    assert query.status == 200
    assert _uris(query.bindings) == [UA2, UA1]
    assert [b.expires_in(1100.0) for b in query.bindings] == [500, 500]
    assert query.changed == [] and query.removed == []
    assert reg.lookup("sip:bob@pbx.example.com", 1000.0) == []


def test_contact_expires_param_beats_expires_header_beats_default() -> None:
    reg = _registrar()
    result = _register(reg, [ContactSpec(UA1, expires=120), ContactSpec(UA2)], expires=900, now=0.0)
    by_uri = {b.uri: b.expires_in(0.0) for b in result.bindings}
    assert by_uri == {UA1: 120, UA2: 900}
    other = _register(reg, [ContactSpec("sip:alice@203.0.113.9")], aor="sip:x@y", now=0.0)
    assert other.bindings[0].expires_in(0.0) == 1800


def test_interval_too_brief_is_423_and_changes_nothing() -> None:
    reg = _registrar()
    _register(reg, [ContactSpec(UA1)], expires=600)
    before = reg.all_bindings()
    result = _register(reg, [ContactSpec(UA2, expires=3600), ContactSpec(UA1, expires=30)], cseq=2)
    assert (result.status, result.min_expires) == (423, 60)
    assert result.changed == [] and result.removed == []
    assert reg.all_bindings() == before
    # Header-level too: Expires: 10 with no contact param.
    assert _register(reg, [ContactSpec(UA2)], expires=10, cseq=3).status == 423
    # Zero is a removal, never "too brief".
    assert _register(reg, [ContactSpec(UA1)], expires=0, cseq=4).status == 200


def test_expires_above_max_is_clamped() -> None:
    reg = _registrar(max_expires=3600)
    result = _register(reg, [ContactSpec(UA1, expires=999_999_999)], now=10.0)
    assert result.status == 200
    assert result.bindings[0].expires_in(10.0) == 3600
    assert result.bindings[0].expires_at == 3610.0


def test_unregister_one_contact() -> None:
    reg = _registrar()
    _register(reg, [ContactSpec(UA1), ContactSpec(UA2)], expires=600)
    result = _register(reg, [ContactSpec(UA1, expires=0)], cseq=2, now=1010.0)
    assert result.status == 200
    assert _uris(result.bindings) == [UA2]
    assert _uris(result.removed) == [UA1]
    assert _uris(reg.lookup(AOR, 1010.0)) == [UA2]


def test_uri_comparison_is_rfc3261_19_1_4_loose() -> None:
    reg = _registrar()
    _register(reg, [ContactSpec("sip:alice@Example.COM:5062;transport=TCP;ob")], expires=600)
    # Same contact written differently: host case, param case, an unrelated param, escaping.
    result = _register(
        reg,
        [ContactSpec("<SIP:%61lice@example.com:5062;Transport=tcp;foo=bar>", expires=0)],
        cseq=2,
    )
    assert result.bindings == [] and len(result.removed) == 1
    assert contact_key("sip:alice@h") != contact_key("sip:alice@h:5060")
    assert contact_key("sip:alice@h") != contact_key("sip:Alice@h")
    assert contact_key("sip:a@[2001:DB8::1]:5062") == contact_key("sip:a@[2001:db8::1]:5062")


def test_wildcard_with_expires_zero_removes_all() -> None:
    reg = _registrar()
    _register(reg, [ContactSpec(UA1), ContactSpec(UA2)], expires=600)
    _register(reg, [ContactSpec(UA1)], aor="sip:bob@pbx.example.com", expires=600)
    result = _register(reg, "*", expires=0, call_id="new-call", cseq=1)
    assert result.status == 200
    assert result.bindings == []
    assert sorted(_uris(result.removed)) == sorted([UA1, UA2])
    assert reg.lookup(AOR, 1000.0) == []
    assert len(reg.lookup("sip:bob@pbx.example.com", 1000.0)) == 1
    # The caller may also hand the wildcard over as a lone Contact entry.
    assert (
        _register(reg, [ContactSpec("*")], expires=0, aor="sip:bob@pbx.example.com", cseq=2).status
        == 200
    )


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [
        ("*", 3600),
        ("*", None),
        ([ContactSpec("*"), ContactSpec(UA2)], 0),
        ([ContactSpec(UA2), ContactSpec("*")], 0),
        ([ContactSpec("*", expires=60)], 0),
    ],
)
def test_invalid_wildcard_is_400_and_changes_nothing(
    contacts: list[ContactSpec] | str, expires: int | None
) -> None:
    reg = _registrar()
    _register(reg, [ContactSpec(UA1)], expires=600)
    before = reg.all_bindings()
    result = _register(reg, contacts, expires=expires, cseq=2)
    assert result.status == 400
    assert reg.all_bindings() == before


def test_out_of_order_cseq_is_500_and_changes_nothing() -> None:
    reg = _registrar()
    _register(reg, [ContactSpec(UA1)], expires=600, cseq=5)
    before = reg.all_bindings()
    for cseq in (5, 4):
        result = _register(reg, [ContactSpec(UA1, expires=0), ContactSpec(UA2)], cseq=cseq)
        assert (result.status, result.reason) == (500, "Out of order")
        assert reg.all_bindings() == before
    # The wildcard obeys the same rule.
    assert _register(reg, "*", expires=0, cseq=5).status == 500
    assert reg.all_bindings() == before
    refreshed = _register(reg, [ContactSpec(UA1)], expires=900, cseq=6, now=1100.0)
    assert refreshed.status == 200
    assert refreshed.bindings[0].cseq == 6
    assert refreshed.bindings[0].expires_at == 2000.0


def test_new_call_id_replaces_binding() -> None:
    # A rebooted phone starts a new Call-ID with a low CSeq: accepted, replacing the old one.
    reg = _registrar()
    _register(reg, [ContactSpec(UA1)], expires=600, call_id="before-reboot", cseq=90)
    result = _register(
        reg, [ContactSpec(UA1)], expires=600, call_id="after-reboot", cseq=1, now=1200.0
    )
    assert result.status == 200
    assert len(result.bindings) == 1
    assert result.bindings[0].call_id == "after-reboot"
    assert result.bindings[0].expires_at == 1800.0
    assert [b.call_id for b in result.removed] == ["before-reboot"]


def test_rfc5626_instance_and_reg_id_replace_flow_from_new_uri() -> None:
    reg = _registrar()
    first = ContactSpec(UA1, instance=INSTANCE, reg_id=1, params=";ob")
    _register(reg, [first], expires=600, source="tcp:conn-1")
    second_flow = ContactSpec(UA1, instance=INSTANCE, reg_id=2)
    assert (
        len(_register(reg, [second_flow], expires=600, source="tcp:conn-2", cseq=2).bindings) == 2
    )
    # The phone reconnects from a new address: same instance and reg-id, new URI and flow,
    # new Call-ID even. The old flow's binding is replaced, not kept beside the new one.
    moved = ContactSpec("sip:alice@203.0.113.50:41000;transport=tcp", instance=INSTANCE, reg_id=1)
    result = _register(reg, [moved], expires=600, call_id="cid-2", source="tcp:conn-3", now=1100)
    assert result.status == 200
    assert sorted((b.reg_id, b.source) for b in result.bindings) == [
        (1, "tcp:conn-3"),
        (2, "tcp:conn-2"),
    ]
    assert [b.source for b in result.removed] == ["tcp:conn-1"]


def test_instance_without_reg_id_replaces_same_instance() -> None:
    reg = _registrar()
    _register(reg, [ContactSpec(UA1, instance=INSTANCE)], expires=600)
    result = _register(reg, [ContactSpec(UA2, instance=INSTANCE)], expires=600, call_id="c2")
    assert _uris(result.bindings) == [UA2]


def test_remove_source_drops_only_flow_bindings() -> None:
    reg = _registrar()
    _register(reg, [ContactSpec(UA1, instance=INSTANCE, reg_id=1)], expires=600, source="tcp:7")
    _register(reg, [ContactSpec(UA2)], expires=600, source="tcp:7", call_id="c2")
    _register(reg, [ContactSpec(UA1)], aor="sip:bob@x", expires=600, source="tcp:7")
    removed = reg.remove_source("tcp:7")
    assert [(b.aor, b.reg_id) for b in removed] == [(AOR, 1)]
    assert _uris(reg.lookup(AOR, 1000.0)) == [UA2]
    assert len(reg.lookup("sip:bob@x", 1000.0)) == 1
    assert reg.remove_source("tcp:7") == []


def test_max_contacts_evicts_oldest() -> None:
    reg = _registrar(max_contacts=3)
    for i in range(3):
        _register(reg, [ContactSpec(f"sip:alice@192.0.2.{i}")], expires=600, call_id=f"c{i}", now=i)
    # Refreshing the oldest makes it the newest.
    _register(reg, [ContactSpec("sip:alice@192.0.2.0")], expires=600, call_id="c0", cseq=2, now=5)
    result = _register(reg, [ContactSpec("sip:alice@192.0.2.9")], expires=600, call_id="c9", now=6)
    assert result.status == 200
    assert _uris(result.removed) == ["sip:alice@192.0.2.1"]
    assert sorted(_uris(result.bindings)) == [
        "sip:alice@192.0.2.0",
        "sip:alice@192.0.2.2",
        "sip:alice@192.0.2.9",
    ]
    # Most recent first among equal q.
    assert _uris(reg.lookup(AOR, 7.0))[0] == "sip:alice@192.0.2.9"


def test_expiry_on_virtual_clock() -> None:
    reg = _registrar()
    assert reg.next_expiry() is None
    _register(reg, [ContactSpec(UA1, expires=100)], now=0.0)
    _register(reg, [ContactSpec(UA2, expires=300)], now=0.0, call_id="c2")
    assert reg.next_expiry() == 100.0
    # Refreshing UA1 moves its expiry: the stale heap entry must not fire early.
    _register(reg, [ContactSpec(UA1, expires=500)], now=50.0, cseq=2)
    assert reg.next_expiry() == 300.0
    now = reg.next_expiry()
    assert now is not None
    assert reg.expire(now - 0.5) == []
    assert _uris(reg.expire(now)) == [UA2]
    assert _uris(reg.lookup(AOR, now)) == [UA1]
    assert reg.next_expiry() == 550.0
    # lookup() already hides a binding past its time, even before expire() runs.
    assert reg.lookup(AOR, 550.0) == []
    assert _uris(reg.expire(1e9)) == [UA1]
    assert reg.next_expiry() is None
    assert reg.all_bindings() == []


def test_unregistered_binding_does_not_leave_a_timer() -> None:
    reg = _registrar()
    _register(reg, [ContactSpec(UA1)], expires=100, now=0.0)
    _register(reg, [ContactSpec(UA1)], expires=0, now=10.0, cseq=2)
    assert reg.next_expiry() is None


def test_register_reports_expired_bindings_as_removed() -> None:
    reg = _registrar()
    _register(reg, [ContactSpec(UA1)], expires=100, now=0.0)
    result = _register(reg, [ContactSpec(UA2)], expires=100, now=200.0, call_id="c2")
    assert _uris(result.bindings) == [UA2]
    assert _uris(result.removed) == [UA1]


def test_load_after_restart_keeps_unexpired_drops_expired() -> None:
    reg = _registrar()
    _register(reg, [ContactSpec(UA1, expires=100)], now=0.0)
    _register(reg, [ContactSpec(UA2, expires=1000)], now=0.0, call_id="c2")
    _register(reg, [ContactSpec(UA1, expires=1000)], aor="sip:bob@x", now=0.0)
    saved = reg.all_bindings()

    restarted = _registrar()
    assert restarted.load(saved, now=500.0) == 2
    assert _uris(restarted.lookup(AOR, 500.0)) == [UA2]
    assert _uris(restarted.lookup("sip:bob@x", 500.0)) == [UA1]
    assert restarted.next_expiry() == 1000.0
    # The restored binding keeps its Call-ID/CSeq: a replayed old REGISTER is still refused.
    assert _register(restarted, [ContactSpec(UA2)], call_id="c2", cseq=1, now=501.0).status == 500


def test_bad_requests_are_400() -> None:
    reg = _registrar()
    assert _register(reg, [ContactSpec(UA1, expires=-1)]).status == 400
    assert _register(reg, [ContactSpec(UA1, q=1.5)]).status == 400
    assert _register(reg, [ContactSpec(UA1, q=float("nan"))]).status == 400
    assert _register(reg, [ContactSpec(UA1)], call_id="").status == 400
    assert _register(reg, [ContactSpec(UA1)], cseq=-1).status == 400
    assert reg.all_bindings() == []


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="min_expires"):
        Registrar(min_expires=600, max_expires=60, default_expires=300, max_contacts=1)
    with pytest.raises(ValueError, match="max_contacts"):
        Registrar(min_expires=60, max_expires=600, default_expires=300, max_contacts=0)


_contact = st.builds(
    ContactSpec,
    uri=st.sampled_from([UA1, UA2, "sip:alice@203.0.113.1", "sip:alice@203.0.113.2"]),
    expires=st.one_of(st.none(), st.sampled_from([0, 10, 60, 600, 10**9])),
    q=st.one_of(st.none(), st.sampled_from([0.1, 0.5, 1.0])),
    instance=st.one_of(st.none(), st.just(INSTANCE)),
    reg_id=st.one_of(st.none(), st.sampled_from([1, 2])),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.just("*"), st.lists(_contact, max_size=4)),
            st.one_of(st.none(), st.sampled_from([0, 30, 600])),
            st.sampled_from(["a", "b"]),
            st.integers(min_value=0, max_value=5),
            st.floats(min_value=0, max_value=200),
        ),
        max_size=25,
    )
)
def test_invariants_hold_for_any_sequence(
    steps: list[tuple[list[ContactSpec] | str, int | None, str, int, float]],
) -> None:
    reg = _registrar(max_contacts=3)
    now = 0.0
    for contacts, expires, call_id, cseq, advance in steps:
        now += advance
        before = reg.all_bindings()
        result = _register(reg, contacts, expires=expires, call_id=call_id, cseq=cseq, now=now)
        if result.status != 200:
            assert reg.all_bindings() == before  # all-or-nothing
            assert result.changed == [] and result.removed == []
        current = reg.lookup(AOR, now)
        assert len(current) <= 3
        assert all(b.expires_at > now for b in current)
        stored = reg.all_bindings()
        expected_next = min((b.expires_at for b in stored), default=None)
        assert reg.next_expiry() == expected_next
        gone = reg.expire(now)
        assert all(b.expires_at <= now for b in gone)
        assert all(b.expires_at > now for b in reg.all_bindings())
