"""Routing decisions as pure functions: DIDs, extensions, feature codes, outside numbers through
trunks, what a trunk may reach, dial strings, trunk by source address, ring plans."""

from __future__ import annotations

import functools
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx.config import Config, load_config
from pbx.config_routing import RingGroup, Route, Trunk
from pbx.routing import (
    Refuse,
    ToIvr,
    ToOutside,
    ToQueue,
    ToRingGroup,
    ToService,
    ToUser,
    _emergency,
    dial_string,
    match_did,
    normalise,
    outbound_caller_id,
    ring_plan,
    route_dialled,
    route_target,
    trunk_for_source,
)

BASE = """\
sip:
  listen: ["udp:127.0.0.1:5070"]
  domain: pbx.test
users:
  - {id: alice, extension: "101", password: a, caller_id: "+81312345679"}
  - {id: bob, extension: "102", password: b}
  - {id: carol, extension: "103", password: c}
"""

JAPAN = BASE + textwrap.dedent(
    """\
    dialplan: {region: JP, outbound: [carrier, backup]}
    trunks:
      - {name: carrier, host: 192.0.2.10, username: acct, password: pw, register: true,
         caller_id: "+81312345600"}
      - {name: backup, host: sip.backup.example, inbound_ips: [198.51.100.0/24, "2001:db8::/64"],
         number_format: national, prefix: "1234#"}
      - {name: named, host: sip.named.example}
    numbers:
      - {number: 03-1234-5678, route: {ivr: main}}
      - {number: 0120-123-456, route: {ring_group: sales}}
      - {number: 090-1234-5678, route: {user: carol}}
    ring_groups:
      sales: {members: [alice, bob, carol], strategy: sequential, rounds: 2}
    ivr:
      main:
        options: {"1": {label: Sales, route: {ring_group: sales}}}
    """
)

WITH_PREFIX = BASE + textwrap.dedent(
    """\
    dialplan: {outside_prefix: 9}
    trunks:
      - {name: carrier, host: sip.carrier.example, number_format: international}
    numbers:
      - {number: (212) 555-0100, route: {user: bob}}
    """
)


def config_from(tmp_path: Path, text: str, name: str = "pbx.yaml") -> Config:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_config(path)


@pytest.fixture
def japan(tmp_path: Path) -> Config:
    return config_from(tmp_path, JAPAN)


@pytest.fixture
def prefixed(tmp_path: Path) -> Config:
    return config_from(tmp_path, WITH_PREFIX, "prefixed.yaml")


NOT_FOUND = Refuse(404, "not_found", "not_found")


@pytest.mark.parametrize(
    ("dialled", "region", "expected"),
    [
        ("03-1234-5678", "JP", "+81312345678"),
        ("+81312345678", "JP", "+81312345678"),
        ("81312345678", "JP", "+81312345678"),
        ("0312345678", "JP", "+81312345678"),
        ("+81312345678;npdi;rn=+81312340000", "JP", "+81312345678"),
        ("0120-123-456", "JP", "+81120123456"),
        ("(212) 555-0123", "US", "+12125550123"),
        ("+1-212-555-0123", "US", "+12125550123"),
        ("18005550199", "US", "+18005550199"),
        ("101", "JP", None),
        ("*21", "US", None),
        ("bob", "US", None),
        ("", "US", None),
        ("0312345678#", "JP", None),
    ],
)
def test_normalise(dialled: str, region: str, expected: str | None) -> None:
    assert normalise(dialled, region) == expected


def test_match_did_prefers_request_uri_then_to_then_diversion(japan: Config) -> None:
    ivr_did, group_did, user_did = japan.numbers
    assert match_did(japan, "81312345678", None) is ivr_did
    assert match_did(japan, "0312345678", "+81120123456") is ivr_did
    # The provider puts its account name in the Request-URI and the DID in To.
    assert match_did(japan, "acct", "0120-123-456") is group_did
    assert match_did(japan, "acct", "+81999", ["0311112222", "+819012345678"]) is user_did
    assert match_did(japan, "acct", "acct", ["0311112222"]) is None
    assert match_did(japan, None, None) is None


def test_extensions_reach_users_services_and_dids(japan: Config) -> None:
    def dial(text: str) -> object:
        return route_dialled(japan, text, from_trunk=False, caller=japan.user_by_id("alice"))

    assert dial("102") == ToUser(japan.users[1])
    assert dial("carol") == ToUser(japan.users[2])
    assert dial("*43") == ToService("echo_test")
    assert dial("*44") == ToService("key_test")
    assert dial("*21") == ToService("available")
    assert dial("*22") == ToService("do_not_disturb")
    assert dial("*23") == ToService("offline")
    assert dial("03-1234-5678") == ToIvr("main")
    assert dial("+81312345678") == ToIvr("main")
    assert dial("0120123456") == ToRingGroup("sales", japan.ring_groups["sales"])
    assert dial("09012345678") == ToUser(japan.users[2])
    assert dial("102;phone-context=pbx.test") == ToUser(japan.users[1])
    assert dial("999") == NOT_FOUND
    assert dial("*99") == NOT_FOUND


def test_outside_numbers_go_to_the_outbound_trunks_in_order(japan: Config) -> None:
    alice = japan.user_by_id("alice")
    target = route_dialled(japan, "06-1234-5678", from_trunk=False, caller=alice)
    assert isinstance(target, ToOutside)
    assert target.e164 == "+81612345678"
    assert [t.name for t in target.trunks] == ["carrier", "backup"]
    target = route_dialled(japan, "+1 212 555 0123", from_trunk=False, caller=alice)
    assert isinstance(target, ToOutside) and target.e164 == "+12125550123"
    # Only an authenticated extension may use a trunk.
    assert route_dialled(japan, "0612345678", from_trunk=False, caller=None) == Refuse(
        403, "forbidden", None
    )


def test_emergency_numbers_go_out_as_dialled(japan: Config) -> None:
    alice = japan.user_by_id("alice")
    for code in ("110", "119"):
        target = route_dialled(japan, code, from_trunk=False, caller=alice)
        assert isinstance(target, ToOutside) and target.e164 == code
        assert dial_string(target.trunks[0], code, region="JP") == target.trunks[0].prefix + code
    assert route_dialled(japan, "110", from_trunk=True, caller=None) == NOT_FOUND
    assert _emergency("0110", "0", "JP") == "110"  # after an outside prefix too
    assert _emergency("0312345678", "0", "JP") is None


def test_a_trunk_reaches_only_our_dids(japan: Config) -> None:
    def inbound(text: str) -> object:
        return route_dialled(japan, text, from_trunk=True, caller=None)

    assert inbound("81312345678") == ToIvr("main")
    assert inbound("+81120123456") == ToRingGroup("sales", japan.ring_groups["sales"])
    assert inbound("090-1234-5678") == ToUser(japan.users[2])
    # No toll fraud: nothing else, not even an extension or a feature code.
    for text in ("+12125550123", "0612345678", "101", "alice", "*43", "*21", "", "acct"):
        assert inbound(text) == NOT_FOUND, text


def test_outside_prefix(prefixed: Config) -> None:
    alice = prefixed.user_by_id("alice")

    def dial(text: str) -> object:
        return route_dialled(prefixed, text, from_trunk=False, caller=alice)

    target = dial("9 1 202 555 0123")
    assert isinstance(target, ToOutside) and target.e164 == "+12025550123"
    assert [t.name for t in target.trunks] == ["carrier"]
    target = dial("9011 81 3 1234 5678")
    assert isinstance(target, ToOutside) and target.e164 == "+81312345678"
    # Without the prefix an outside number is not dialled out.
    assert dial("12025550123") == NOT_FOUND
    assert dial("9") == NOT_FOUND
    # Our own DID, with or without the prefix, stays inside.
    assert dial("2125550100") == ToUser(prefixed.users[1])
    assert dial("912125550100") == ToUser(prefixed.users[1])
    assert dial("101") == ToUser(prefixed.users[0])


def test_no_trunk_for_outside_calls(tmp_path: Path) -> None:
    config = config_from(tmp_path, BASE)
    alice = config.user_by_id("alice")
    assert route_dialled(config, "+12125550123", from_trunk=False, caller=alice) == Refuse(
        403, "no_trunk", None
    )


def test_route_target(japan: Config) -> None:
    assert route_target(japan, Route(user="bob")) == ToUser(japan.users[1])
    assert route_target(japan, Route(ivr="main")) == ToIvr("main")
    assert route_target(japan, Route(ring_group="sales")) == ToRingGroup(
        "sales", japan.ring_groups["sales"]
    )
    assert route_target(japan, Route(queue="support")) == ToQueue("support")
    assert route_target(japan, Route(user="nobody")) == NOT_FOUND
    assert route_target(japan, Route(ivr="nothing")) == NOT_FOUND


@pytest.mark.parametrize(
    ("number_format", "prefix", "e164", "region", "expected"),
    [
        ("e164", "", "+81312345678", "JP", "+81312345678"),
        ("international", "", "+81312345678", "JP", "81312345678"),
        ("national", "", "+81312345678", "JP", "0312345678"),
        ("national", "", "+81120123456", "JP", "0120123456"),
        ("national", "", "+12125550123", "JP", "01012125550123"),
        ("national", "", "+12125550123", "US", "2125550123"),
        ("national", "", "+81312345678", "US", "01181312345678"),
        ("national", "1234#", "+81312345678", "JP", "1234#0312345678"),
        ("e164", "*9", "+12125550123", "US", "*9+12125550123"),
    ],
)
def test_dial_string(
    number_format: str, prefix: str, e164: str, region: str, expected: str
) -> None:
    trunk = Trunk.model_validate(
        {"name": "t", "host": "sip.example.com", "number_format": number_format, "prefix": prefix}
    )
    assert dial_string(trunk, e164, region=region) == expected


def test_outbound_caller_id(japan: Config) -> None:
    carrier, backup, _ = japan.trunks
    alice, bob = japan.user_by_id("alice"), japan.user_by_id("bob")
    assert outbound_caller_id(carrier, alice) == "+81312345679"
    assert outbound_caller_id(carrier, bob) == "+81312345600"
    assert outbound_caller_id(backup, bob) is None
    assert outbound_caller_id(carrier, None) == "+81312345600"


def test_trunk_for_source(japan: Config) -> None:
    carrier, backup, _ = japan.trunks
    assert trunk_for_source(japan, "192.0.2.10") is carrier
    assert trunk_for_source(japan, "::ffff:192.0.2.10") is carrier
    assert trunk_for_source(japan, "198.51.100.77") is backup
    assert trunk_for_source(japan, "[2001:db8::5]") is backup
    # A trunk known by host name only is not matched by address (no DNS here).
    for address in ("192.0.2.11", "203.0.113.1", "2001:db8:1::5", "sip.named.example", "", "x"):
        assert trunk_for_source(japan, address) is None, address


def test_ring_plan(japan: Config) -> None:
    users = japan.user_index()
    alice, bob, carol = japan.users
    sequential = japan.ring_groups["sales"]
    everyone_free = {"alice": "available", "bob": "available", "carol": "available"}
    assert ring_plan(sequential, everyone_free, users) == [
        [alice],
        [bob],
        [carol],
        [alice],
        [bob],
        [carol],
    ]
    once = RingGroup(members=("carol", "alice"), strategy="sequential")
    assert ring_plan(once, everyone_free, users) == [[carol], [alice]]
    together = RingGroup(members=("alice", "bob", "carol"), rounds=2)
    assert ring_plan(together, everyone_free, users) == [[alice, bob, carol]]
    # Offline, do-not-disturb, on a call, not registered (or not reported): skipped.
    for state in ("offline", "do_not_disturb", "on_call", "unregistered"):
        states = {"alice": "available", "bob": state}
        assert ring_plan(together, states, users) == [[alice]]
        assert ring_plan(sequential, states, users) == [[alice], [alice]]
    assert ring_plan(together, {}, users) == []
    assert ring_plan(sequential, {"bob": "on_call"}, users) == []
    # A member the caller's user table does not know is not rung.
    assert ring_plan(together, everyone_free, {"bob": bob}) == [[bob]]


@functools.cache
def _japan_config() -> Config:
    with tempfile.TemporaryDirectory() as directory:
        return config_from(Path(directory), JAPAN)


@given(text=st.text(alphabet="0123456789+*#-() ;abc", max_size=24))
def test_any_dialled_text_gets_a_decision(text: str) -> None:
    config = _japan_config()
    inbound = route_dialled(config, text, from_trunk=True, caller=None)
    assert isinstance(inbound, ToIvr | ToRingGroup | ToUser | Refuse)
    if isinstance(inbound, Refuse):
        assert inbound.status == 404
    outbound = route_dialled(config, text, from_trunk=False, caller=config.users[0])
    if isinstance(outbound, ToOutside):
        assert normalise(outbound.e164, "JP") == outbound.e164
