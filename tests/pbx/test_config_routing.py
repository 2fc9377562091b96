"""Routing configuration: dial plan, trunks, numbers, ring groups, IVR menus and the presence
feature codes; values as loaded and every error with its file:line:col and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from pbx.config import Config, ConfigError, load_config
from pbx.config_routing import IvrMenu, Number, Route, Trunk, e164, ivr_prompts

HEAD = """\
sip:
  listen: ["udp:127.0.0.1:5070"]
  domain: pbx.test
users:
  - {id: alice, extension: "101", password: a, caller_id: "+81312345679"}
  - {id: bob, extension: "102", password: b}
"""


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "pbx.yaml"
    path.write_text(HEAD + textwrap.dedent(text), encoding="utf-8")
    return load_config(path)


def problems(tmp_path: Path, text: str) -> list[str]:
    """The issue lines of an invalid configuration, with the directory stripped."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return [line.replace(f"{tmp_path}/", "") for line in str(caught.value).splitlines()]


@pytest.mark.parametrize(
    ("written", "region", "expected"),
    [
        ("03-1234-5678", "JP", "+81312345678"),
        ("+81312345678", "JP", "+81312345678"),
        ("81312345678", "JP", "+81312345678"),
        ("+81 3 1234 5678", "JP", "+81312345678"),
        ("0120-123-456", "JP", "+81120123456"),
        ("090-1234-5678", "JP", "+819012345678"),
        ("(212) 555-0123", "US", "+12125550123"),
        ("1 212 555 0123", "US", "+12125550123"),
        ("212.555.0123", "US", "+12125550123"),
        ("011 81 3 1234 5678", "US", "+81312345678"),
        ("1-800-555-0199", "US", "+18005550199"),
        ("+1 212 555 0123", "JP", "+12125550123"),
    ],
)
def test_e164_reads_national_and_international_forms(
    written: str, region: str, expected: str
) -> None:
    assert e164(written, region) == expected


@pytest.mark.parametrize("written", ["101", "*21", "12-34", "alice", "", "+", "03-1234-5678x"])
def test_e164_refuses_what_is_not_a_phone_number(written: str) -> None:
    assert e164(written, "JP") is None


def test_routing_sections_load(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        dialplan:
          region: jp
          outbound: [backup, carrier]
          outside_prefix: 0
        trunks:
          - name: carrier
            host: 192.0.2.10
            username: acct
            password: secret
            register: true
            caller_id: "+81312345600"
          - name: backup
            host: SIP.Backup.Example
            transport: tcp
            port: 5080
            inbound_ips: [198.51.100.0/24, "2001:db8::1"]
            number_format: national
            prefix: "1234#"
            from_domain: pbx.example.com
        numbers:
          - number: 03-1234-5678
            name: Main line
            route: {ivr: main}
          - {number: "0120-123-456", route: {ring_group: sales}}
          - {number: 81 90 1234 5678, route: {user: alice}}
          - {number: "+81312340000", type: mobile, route: {user: bob}}
        ring_groups:
          sales: {members: [alice, bob], strategy: sequential, ring_seconds: 15, rounds: 2}
          all: {members: [bob, alice], fallback: {ivr: main}}
        ivr:
          main:
            welcome: {text: "Thank you for calling."}
            options:
              1: {label: Sales, route: {ring_group: sales}}
              "#": {prompt: {text: "For the operator, press hash."}, route: {user: bob}}
              3:
                label: Billing
                menu: {options: {"1": {label: Invoices, route: {user: alice}}}}
            repeat_key: "*"
            back_key: null
            unavailable: {text: "All our staff are busy right now."}
        """,
    )
    assert config.dialplan.region == "JP"
    assert config.dialplan.outside_prefix == "0"
    assert [t.name for t in config.outbound_trunks()] == ["backup", "carrier"]
    carrier, backup = config.trunks
    assert (carrier.registration, carrier.port, carrier.transport, carrier.expires) == (
        True,
        5060,
        "udp",
        3600,
    )
    assert [str(n) for n in carrier.networks()] == ["192.0.2.10/32"]
    assert backup.host == "sip.backup.example"
    assert backup.inbound_ips == ("198.51.100.0/24", "2001:db8::1/128")
    assert (backup.number_format, backup.prefix) == ("national", "1234#")
    assert not backup.registration
    assert config.trunk("backup") is backup and config.trunk("nope") is None
    assert [(n.number, n.type) for n in config.numbers] == [
        ("+81312345678", "local"),
        ("+81120123456", "tollfree"),
        ("+819012345678", "mobile"),
        ("+81312340000", "mobile"),
    ]
    main = config.number("+81312345678")
    assert main is not None and main.name == "Main line" and main.route == Route(ivr="main")
    assert config.number("03-1234-5678") is None  # look-ups take E.164
    sales = config.ring_groups["sales"]
    assert (sales.members, sales.strategy, sales.ring_seconds, sales.rounds) == (
        ("alice", "bob"),
        "sequential",
        15,
        2,
    )
    everyone = config.ring_groups["all"]
    assert (everyone.strategy, everyone.rounds, everyone.ring_seconds) == ("simultaneous", 1, 20)
    assert everyone.fallback == Route(ivr="main")
    menu = config.ivr["main"]
    assert sorted(menu.options) == ["#", "1", "3"]
    assert (menu.timeout, menu.max_retries, menu.on_failure, menu.direct_dial) == (
        5.0,
        3,
        None,
        False,
    )
    assert (menu.back_key, menu.repeat_key) == (None, "*")
    assert menu.option_prompt == "For {label}, press {key}."
    assert menu.options["#"].prompt is not None and menu.options["#"].label is None
    sub = menu.options["3"].menu
    assert sub is not None and sub.options["1"].route == Route(user="alice")
    # The submenu takes what it does not write from the menu above.
    assert (sub.back_key, sub.repeat_key) == (None, "*")
    assert sub.unavailable == menu.unavailable


def test_defaults_without_routing(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert (config.dialplan.region, config.dialplan.outbound) == ("US", None)
    assert config.dialplan.outside_prefix is None
    assert (config.trunks, config.numbers, config.ring_groups, config.ivr) == ((), (), {}, {})
    assert config.outbound_trunks() == ()


def test_outbound_defaults_to_every_trunk_in_order(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        trunks:
          - {name: b, host: b.example}
          - {name: a, host: a.example}
        """,
    )
    assert [t.name for t in config.outbound_trunks()] == ["b", "a"]


def test_submenus_inherit_what_they_do_not_write(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        ivr:
          main:
            option_prompt: "{label}は{key}を押してください。"
            timeout: 8s
            max_retries: 1
            on_failure: {user: bob}
            back_key: "0"
            direct_dial: true
            options:
              "1":
                label: A
                menu:
                  timeout: 3
                  back_key: "*"
                  options:
                    "2":
                      label: B
                      menu: {options: {"1": {label: C, route: {user: alice}}}}
        """,
    )
    top = config.ivr["main"]
    middle = top.options["1"].menu
    assert middle is not None
    bottom = middle.options["2"].menu
    assert bottom is not None
    for menu, timeout, back in ((top, 8.0, "0"), (middle, 3.0, "*"), (bottom, 3.0, "*")):
        assert menu.option_prompt == "{label}は{key}を押してください。"
        assert (menu.timeout, menu.back_key, menu.repeat_key) == (timeout, back, "#")
        assert (menu.max_retries, menu.on_failure, menu.direct_dial) == (1, Route(user="bob"), True)


def test_dialplan_and_trunk_errors(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """\
        dialplan:
          region: XX
          outbound: [carrier, nowhere, carrier]
          outside_prefix: "0#"
        trunks:
          - name: carrier
            host: "bad host"
            inbound_ips: [10.0.0.0/8, not-an-ip]
            number_format: local
            prefix: "9a"
            caller_id: anonymous
            transport: tls
            port: 0
          - name: carrier
            host: 10.1.2.3
          - {name: "bad name!", host: x.example, expires: 10}
        """,
    ) == [
        "pbx.yaml:8:3: dialplan.region: unknown region 'XX': expected an ISO 3166 country code "
        "such as US, JP, DE",
        "pbx.yaml:9:3: dialplan.outbound: each trunk may be listed once",
        'pbx.yaml:9:23: dialplan.outbound[1]: unknown trunk "nowhere" (not in trunks)',
        "pbx.yaml:10:3: dialplan.outside_prefix: invalid outside_prefix '0#': use 1 to 4 "
        "digits, such as 0 or 9",
        "pbx.yaml:13:5: trunks[0].host: invalid host 'bad host': expected a DNS name or an IP "
        "address",
        "pbx.yaml:14:5: trunks[0].inbound_ips: invalid address 'not-an-ip': expected an IP "
        "address or a CIDR such as 203.0.113.0/24",
        "pbx.yaml:15:5: trunks[0].number_format: must be 'e164', 'national' or "
        "'international', got 'local'",
        "pbx.yaml:16:5: trunks[0].prefix: invalid prefix '9a': use up to 16 of 0-9, * and #",
        "pbx.yaml:17:5: trunks[0].caller_id: invalid caller_id 'anonymous': use digits with an "
        "optional leading +",
        "pbx.yaml:18:5: trunks[0].transport: must be 'udp' or 'tcp', got 'tls'",
        "pbx.yaml:19:5: trunks[0].port: must be greater than or equal to 1",
        'pbx.yaml:20:5: trunks[1].name: duplicate trunk name "carrier" (also trunks[0])',
        "pbx.yaml:21:5: trunks[1].host: 10.1.2.3 overlaps 10.0.0.0/8, an inbound address of "
        "trunks[0]",
        "pbx.yaml:22:6: trunks[2].name: invalid name 'bad name!': use 1 to 64 of A-Z, a-z, "
        "0-9, '.', '_', '-'",
        "pbx.yaml:22:42: trunks[2].expires: must be greater than or equal to 60",
    ]


def test_register_needs_credentials(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """\
        trunks:
          - {name: carrier, host: sip.example.com, register: true, username: acct}
          - {name: other, host: sip.example.net, password: "two\\nlines"}
        """,
    ) == [
        "pbx.yaml:8:5: trunks[0]: register: true needs a username and a password",
        "pbx.yaml:9:42: trunks[1].password: password must not contain control characters or "
        "line breaks",
    ]


def test_number_and_route_errors(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """\
        dialplan: {region: jp}
        numbers:
          - {number: "03-1234-5678", route: {user: carol}}
          - {number: "+81 3 1234 5678", route: {ring_group: sales}}
          - {number: "81312345678", route: {ivr: nope}}
          - {number: "12-34", route: {queue: support}}
          - {number: "0120-123-456", type: freephone, route: {user: alice, ivr: main}}
          - {number: "0120-123-457", route: {}}
          - {number: "0120-123-458", route: alice}
          - {route: {user: bob}}
        """,
    ) == [
        'pbx.yaml:9:38: numbers[0].route.user: unknown user "carol" (not in users)',
        "pbx.yaml:10:6: numbers[1].number: duplicate number +81312345678 (also numbers[0])",
        'pbx.yaml:10:41: numbers[1].route.ring_group: unknown ring group "sales" '
        "(not in ring_groups)",
        "pbx.yaml:11:6: numbers[2].number: duplicate number +81312345678 (also numbers[0])",
        'pbx.yaml:11:37: numbers[2].route.ivr: unknown IVR "nope" (not in ivr)',
        "pbx.yaml:12:6: numbers[3].number: invalid number '12-34': not a valid phone number "
        "in region JP; write it as dialled there or as +<country code><number>",
        'pbx.yaml:12:31: numbers[3].route.queue: unknown queue "support" (not in queues)',
        "pbx.yaml:13:30: numbers[4].type: must be 'local', 'mobile' or 'tollfree', got "
        "'freephone'",
        "pbx.yaml:13:47: numbers[4].route: give only one of user, ring_group, ivr or queue, "
        "not user and ivr",
        'pbx.yaml:13:68: numbers[4].route.ivr: unknown IVR "main" (not in ivr)',
        "pbx.yaml:14:30: numbers[5].route: give one of user, ring_group, ivr or queue",
        "pbx.yaml:15:30: numbers[6].route: expected {user: ID}, {ring_group: NAME}, "
        "{ivr: NAME} or {queue: NAME}, got 'alice'",
        "pbx.yaml:16:5: numbers[7].number: required key is missing",
    ]


def test_numbers_default_to_region_us(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        numbers:
          - {number: (212) 555-0123, route: {user: alice}}
          - {number: 1-800-555-0199, route: {user: bob}}
        """,
    )
    assert [(n.number, n.type) for n in config.numbers] == [
        ("+12125550123", "local"),
        ("+18005550199", "tollfree"),
    ]
    # Written for Japan but read in the default region: an error that names the region.
    assert problems(tmp_path, 'numbers:\n  - {number: "03-1234-5678", route: {user: bob}}\n') == [
        "pbx.yaml:8:6: numbers[0].number: invalid number '03-1234-5678': not a valid phone "
        "number in region US; write it as dialled there or as +<country code><number>"
    ]


def test_ring_group_errors(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """\
        ring_groups:
          sales: {members: [alice, bob, alice], strategy: random, rounds: 3, ring_seconds: 0}
          support: {members: [alice, dave], fallback: {ring_group: night}}
          night: {members: [bob], fallback: {ring_group: support}}
          empty: {members: []}
          self: {members: [bob], fallback: {ring_group: self}}
          "bad name": {members: [bob], fallback: {user: zed}}
        """,
    ) == [
        'pbx.yaml:8:11: ring_groups.sales.members: member "alice" is listed twice',
        "pbx.yaml:8:41: ring_groups.sales.strategy: must be 'simultaneous' or 'sequential', "
        "got 'random'",
        "pbx.yaml:8:59: ring_groups.sales.rounds: must be 1 or 2, got 3",
        "pbx.yaml:8:70: ring_groups.sales.ring_seconds: must be greater than or equal to 1",
        'pbx.yaml:9:30: ring_groups.support.members[1]: unknown user "dave" (not in users)',
        "pbx.yaml:9:37: ring_groups.support.fallback: fallback loop: support -> night -> "
        "support",
        "pbx.yaml:10:27: ring_groups.night.fallback: fallback loop: night -> support -> night",
        "pbx.yaml:11:11: ring_groups.empty.members: give at least one member (a user id)",
        "pbx.yaml:12:26: ring_groups.self.fallback: fallback loop: self -> self",
        "pbx.yaml:13:3: ring_groups['bad name']: invalid name 'bad name': use 1 to 64 of A-Z, "
        "a-z, 0-9, '.', '_', '-'",
        "pbx.yaml:13:43: ring_groups['bad name'].fallback.user: unknown user \"zed\" "
        "(not in users)",
    ]


def test_ivr_errors(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """\
        ivr:
          main:
            option_prompt: "Press {key} for {lable}."
            on_failure: {user: zed}
            options:
              A: {label: Bad key, route: {user: alice}}
              "*": {label: Star, route: {user: alice}}
              "1":
                label: Both
                route: {user: alice}
                menu: {options: {"1": {label: x, route: {user: alice}}}}
              "2": {route: {user: alice}}
              "3":
                label: Sub
                menu:
                  option_prompt: "No key here"
                  options: {"4": {label: x, route: {ring_group: none}}}
          other:
            back_key: "0"
            repeat_key: 0
            timeout: 0
            max_retries: 11
          keys:
            back_key: "0"
            repeat_key: 0
            options: {"1": {label: x, route: {user: bob}}}
          empty: {}
          third:
            direct_dial: true
            option_prompt: "{key"
        """,
    ) == [
        "pbx.yaml:9:5: ivr.main.option_prompt: option_prompt may use only {label} and {key}, "
        "not {lable}",
        'pbx.yaml:10:18: ivr.main.on_failure.user: unknown user "zed" (not in users)',
        "pbx.yaml:12:7: ivr.main.options.A: invalid key 'A': use one of 0-9, * and #",
        "pbx.yaml:13:7: ivr.main.options['*']: key \"*\" is also this menu's back_key; give the "
        "menu another back_key or back_key: null",
        "pbx.yaml:14:7: ivr.main.options.1: give either route or menu (a submenu), not both or "
        "neither",
        "pbx.yaml:18:7: ivr.main.options.2: give a label (spoken through option_prompt) or a "
        "prompt",
        "pbx.yaml:22:11: ivr.main.options.3.menu.option_prompt: option_prompt must say the key: "
        'include {key}, as in "press {key}"',
        "pbx.yaml:23:45: ivr.main.options.3.menu.options.4.route.ring_group: unknown ring "
        'group "none" (not in ring_groups)',
        "pbx.yaml:27:5: ivr.other.timeout: must be greater than 0",
        "pbx.yaml:28:5: ivr.other.max_retries: must be less than or equal to 10",
        'pbx.yaml:29:3: ivr.keys: back_key and repeat_key are both "0"',
        "pbx.yaml:33:3: ivr.empty: a menu needs options (or direct_dial: true)",
        "pbx.yaml:36:5: ivr.third.option_prompt: invalid option_prompt '{key': expected '}' "
        "before end of string",
    ]


def _nested(levels: int) -> str:
    """An IVR whose menus nest ``levels`` deep through key 1 (keys 9 route to alice)."""
    text = ""
    for level in range(levels, 0, -1):
        inner = f', "1": {{label: L{level + 1}, menu: {text}}}' if text else ""
        text = f'{{options: {{"9": {{label: Out, route: {{user: alice}}}}{inner}}}}}'
    return f"ivr:\n  main: {text}\n"


def test_ivr_depth(tmp_path: Path) -> None:
    config = load(tmp_path, _nested(5))
    menu: IvrMenu | None = config.ivr["main"]
    depth = 0
    while menu is not None:
        depth += 1
        menu = menu.options["1"].menu if "1" in menu.options else None
    assert depth == 5
    found = problems(tmp_path, _nested(6))
    assert len(found) == 1, found
    assert found[0].startswith("pbx.yaml:8:")
    assert found[0].endswith(
        ": ivr.main.options.1.menu.options.1.menu.options.1.menu.options.1.menu.options.1.menu: "
        "this menu is level 6; IVR menus nest at most 5 levels deep"
    )


def test_option_keys_against_inherited_back_key(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """\
        ivr:
          main:
            back_key: "0"
            options:
              "1":
                label: A
                menu:
                  options: {"0": {label: zero, route: {user: alice}}}
        """,
    ) == [
        "pbx.yaml:14:21: ivr.main.options.1.menu.options.0: key \"0\" is also this menu's "
        "back_key; give the menu another back_key or back_key: null"
    ]


def test_presence_feature_codes(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    features = config.features
    assert (features.available, features.do_not_disturb, features.offline) == (
        "*21",
        "*22",
        "*23",
    )
    assert config.feature_for_code("*22") == "do_not_disturb"
    assert config.feature_for_code("*43") == "echo_test"
    assert config.feature_for_code("*99") is None
    config = load(tmp_path, "features: {available: 7021, offline: null}\n")
    assert (config.features.available, config.features.offline) == ("7021", None)
    assert config.feature_for_code("*23") is None
    assert problems(
        tmp_path,
        """\
        features:
          available: "101"
          offline: "*43"
          do_not_disturb: "*2 2"
        """,
    ) == [
        "pbx.yaml:8:3: features.available: code \"101\" is also users[0]'s extension or id",
        'pbx.yaml:9:3: features.offline: code "*43" is also features.echo_test',
        "pbx.yaml:10:3: features.do_not_disturb: invalid code '*2 2': use 1 to 16 of 0-9, "
        "* and #",
    ]


def test_programmatic_models() -> None:
    number = Number(number="+81312345678", route=Route(user="alice"))
    assert number.type == "local"
    with pytest.raises(ValidationError, match="expected a valid phone number"):
        Number(number="03-1234-5678", route=Route(user="alice"))
    trunk = Trunk(name="t", host="203.0.113.5", register=False)
    assert not trunk.registration and [str(n) for n in trunk.networks()] == ["203.0.113.5/32"]
    assert Trunk(name="t", host="sip.example.com").networks() == ()
    with pytest.raises(ValidationError, match="duplicate number"):
        Config.model_validate(
            {
                "sip": {"listen": ["udp:127.0.0.1:0"], "domain": "x.test"},
                "users": [{"id": "a", "extension": "1", "password": "p"}],
                "numbers": [
                    {"number": "+12125550123", "route": {"user": "a"}},
                    {"number": "+1 212 555 0123", "route": {"user": "a"}},
                ],
            }
        )


def test_option_text_and_ivr_prompts(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        ivr:
          main:
            welcome: {text: "Welcome."}
            unavailable: {text: "Everyone is busy."}
            back_key: "9"
            repeat_key: "*"
            options:
              "1": {label: Sales, route: {user: alice}}
              "#": {label: Operator, route: {user: bob}}
              "0": {prompt: {text: "For the operator, press zero."}, route: {user: bob}}
              "2":
                label: Billing
                menu:
                  option_prompt: "Press {key}: {label}."
                  welcome: {text: "Billing."}
                  options: {"1": {label: Invoices, route: {user: alice}}}
        """,
    )
    main = config.ivr["main"]
    assert main.option_text("1") == "For Sales, press 1."
    assert main.option_text("#", spoken_key="hash") == "For Operator, press hash."
    assert main.option_text("0") is None  # it has its own prompt
    assert main.option_text("7") is None
    sub = main.options["2"].menu
    assert sub is not None and sub.option_text("1") == "Press 1: Invoices."
    found = [(".".join(map(str, path)), source.text) for path, source in ivr_prompts(config.ivr)]
    assert found == [
        ("ivr.main.welcome", "Welcome."),
        ("ivr.main.unavailable", "Everyone is busy."),
        ("ivr.main.options.0.prompt", "For the operator, press zero."),
        ("ivr.main.options.2.menu.welcome", "Billing."),
    ]


def test_the_documented_example_loads(tmp_path: Path) -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text("utf-8")
    routing = docs[docs.index("## Routing") :]
    example = routing[routing.index("### Example") :]
    block = example.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = load(tmp_path, '  - {id: carol, extension: "103", password: c}\n' + block)
    assert [t.name for t in config.outbound_trunks()] == ["carrier", "backup"]
    assert config.ring_groups["sales"].fallback == Route(user="carol")


def test_trunk_rates_price_calls_by_the_longest_prefix_per_started_increment() -> None:
    from pbx.config_routing import Trunk, call_cost

    trunk = Trunk.model_validate({
        "name": "carrier", "host": "198.51.100.7",
        "rates": [{"prefix": "+81", "per_minute": 0.03}, {"prefix": 8190, "per_minute": 0.12}],
    })
    assert [r.prefix for r in trunk.rates] == ["+81", "+8190"]
    assert call_cost(trunk, "+819012345678", 61.0) == pytest.approx(0.24)  # 2 started minutes
    assert call_cost(trunk, "+81312345678", 60.0) == pytest.approx(0.03)
    assert call_cost(trunk, "+81312345678", 0.0) == 0.0
    assert call_cost(trunk, "+14155550100", 30.0) is None  # no rate for the number
    per_second = trunk.model_copy(update={"billing_increment": 1.0})
    assert call_cost(per_second, "+819012345678", 30.2) == pytest.approx(31 * 0.12 / 60)
    for bad, why in (({"prefix": "+81-3", "per_minute": 1}, "start of an E.164 number"),
                     ({"prefix": "+81", "per_minute": -1}, "greater than or equal to 0")):
        with pytest.raises(ValidationError, match=why):
            Trunk.model_validate({"name": "c", "host": "198.51.100.7", "rates": [bad]})
    with pytest.raises(ValidationError, match=r"prefix \+81 has two rates"):
        Trunk.model_validate({"name": "c", "host": "198.51.100.7", "rates": [
            {"prefix": "+81", "per_minute": 1}, {"prefix": "81", "per_minute": 2}]})
