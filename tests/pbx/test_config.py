"""Loading and validating the PBX configuration: values, and errors that name file:line:col."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pbx.config import Config, ConfigError, ConfigIssue, User, load_config, merge_reload
from pbx.durations import parse_duration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "pbx.yaml"

MINIMAL = """\
sip:
  listen: ["udp:127.0.0.1:5070"]
  domain: pbx.test
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    """The issue lines of an invalid configuration, with the directory stripped."""
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    prefix = str(path.parent if path.is_file() else path) + "/"
    lines = str(caught.value).splitlines()
    assert [str(issue) for issue in caught.value.issues] == lines
    return [line.replace(prefix, "") for line in lines]


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert [str(a) for a in config.sip.listen] == ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
    assert config.sip.domain == "pbx.local"
    assert config.sip.realm == config.sip.digest_realm == "pbx.local"
    assert config.sip.t1 == 0.5
    assert config.sip.nonce_ttl == 300.0
    assert config.media.rtp_ports == (10000, 20000)
    assert [(u.id, u.extension) for u in config.users] == [
        ("alice", "101"),
        ("bob", "102"),
        ("carol", "103"),
    ]
    # Relative storage paths resolve against the config file's directory.
    assert config.storage.database == f"sqlite:///{REPO / 'var' / 'pbx.db'}"
    assert config.storage.recordings == REPO / "var" / "recordings"
    bob = config.user_by_extension("102")
    assert bob is not None and bob.id == "bob"
    assert config.user_by_id("carol") == config.users[2]
    assert config.user_by_extension("999") is None
    assert config.user_by_id("mallory") is None


def test_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "pbx.yaml", MINIMAL))
    assert config.sip.realm == "pbx.test"
    assert config.sip.user_agent == "PBX"
    assert (config.sip.min_expires, config.sip.max_expires, config.sip.default_expires) == (
        60,
        3600,
        3600,
    )
    assert (config.sip.t1, config.sip.t2, config.sip.t4) == (0.5, 4.0, 5.0)
    assert config.sip.ring_timeout == 60.0
    assert config.media.rtp_timeout == 60.0
    assert config.storage.database == "sqlite:////var/lib/pbx/pbx.db"
    assert config.logging.level == "info"
    assert config.users == ()
    assert config.advertised_address() == "127.0.0.1"


def test_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "pbx.yaml", MINIMAL))
    with pytest.raises(ValidationError):
        config.sip.domain = "other"


def test_numbers_stay_text_as_written(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pbx.yaml",
        MINIMAL
        + """\
users:
  - id: alice
    extension: 0123
    password: 0777
    caller_id: +81312345678
    name: 2024
""",
    )
    user = load_config(path).users[0]
    assert user.extension == "0123"
    assert user.password == "0777"
    assert user.caller_id == "+81312345678"
    assert user.name == "2024"


def test_user_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pbx.yaml",
        MINIMAL + 'users:\n  - {id: dave, extension: "104", password: pw}\n',
    )
    user = load_config(path).users[0]
    assert (user.name, user.role, user.caller_id, user.max_contacts) == ("dave", "agent", None, 5)


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    path = write(tmp_path, "pbx.yaml", MINIMAL + "  domian: x\nwebhooks: {}\n")
    assert problems(path) == [
        "pbx.yaml:4:3: sip.domian: unknown key (did you mean 'domain'?)",
        "pbx.yaml:5:1: webhooks: unknown key (allowed here: crm, dialplan, features, http, ivr, "
        "logging, media, numbers, prompts, queues, recording, ring_groups, sip, storage, "
        "trunks, users)",
    ]


def test_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, "pbx.yaml", MINIMAL + "  min_expires: soon\n  listen2: 1\n")
    assert problems(path) == [
        "pbx.yaml:4:3: sip.min_expires: expected a whole number, got 'soon'",
        "pbx.yaml:5:3: sip.listen2: unknown key (did you mean 'listen'?)",
    ]


def test_missing_required_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pbx.yaml",
        'sip:\n  domain: x.test\nusers:\n  - id: alice\n    extension: "101"\n',
    )
    assert problems(path) == [
        "pbx.yaml:1:1: sip.listen: required key is missing",
        "pbx.yaml:4:5: users[0].password: required key is missing",
    ]


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    path = write(tmp_path, "pbx.yaml", MINIMAL + "  domain: again.test\n")
    assert problems(path) == ["pbx.yaml:4:3: sip.domain: duplicate key (first written at line 3)"]


def test_duplicate_extension_and_id(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pbx.yaml",
        MINIMAL
        + """\
users:
  - {id: alice, extension: "101", password: a}
  - {id: bob, extension: "102", password: b}
  - id: alice
    extension: "101"
    password: c
""",
    )
    assert problems(path) == [
        'pbx.yaml:7:5: users[2].id: duplicate user id "alice" (also users[0])',
        'pbx.yaml:8:5: users[2].extension: duplicate extension "101" (also users[0])',
    ]


def test_id_that_is_another_users_extension(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pbx.yaml",
        MINIMAL
        + """\
users:
  - {id: "102", extension: "101", password: a}
  - {id: bob, extension: "102", password: b}
  - {id: "103", extension: "103", password: c}
""",
    )
    assert problems(path) == [
        'pbx.yaml:5:6: users[0].id: id "102" is also the extension of users[1]'
    ]


def test_duplicate_extension_with_leading_zero_is_not_the_same(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pbx.yaml",
        MINIMAL
        + """\
users:
  - {id: a, extension: 0123, password: a}
  - {id: b, extension: 123, password: b}
""",
    )
    assert [u.extension for u in load_config(path).users] == ["0123", "123"]


def test_bad_user_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pbx.yaml",
        MINIMAL
        + """\
users:
  - id: Bob!
    extension: 10a
    password: ""
    role: boss
    caller_id: call-me
    max_contacts: 0
""",
    )
    assert problems(path) == [
        "pbx.yaml:5:5: users[0].id: invalid id 'Bob!': use 1 to 64 of a-z, 0-9, '.', '_' and '-'",
        "pbx.yaml:6:5: users[0].extension: invalid extension '10a': use 1 to 15 digits",
        "pbx.yaml:7:5: users[0].password: password must not be empty",
        "pbx.yaml:8:5: users[0].role: must be 'agent', 'supervisor' or 'admin', got 'boss'",
        "pbx.yaml:9:5: users[0].caller_id: invalid caller_id 'call-me': "
        "use digits with an optional leading +",
        "pbx.yaml:10:5: users[0].max_contacts: must be greater than or equal to 1",
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("sctp:1.2.3.4:5060", "unknown transport 'sctp' in 'sctp:1.2.3.4:5060': use udp or tcp"),
        ("udp:::1:5060", "IPv6 address in 'udp:::1:5060' needs brackets, as in udp:[::1]:5060"),
        ("udp:1.2.3.4:70000", "invalid port '70000' in 'udp:1.2.3.4:70000': expected 0 to 65535"),
        ("udp:1.2.3.4", "invalid listen address 'udp:1.2.3.4': expected transport:host:port"),
        ("udp:[zz]:5060", "invalid IPv6 address 'zz' in 'udp:[zz]:5060'"),
        ("udp:bad_host!:5060", "invalid host 'bad_host!' in 'udp:bad_host!:5060'"),
    ],
)
def test_bad_listen_spec(tmp_path: Path, spec: str, message: str) -> None:
    text = f'sip:\n  domain: x.test\n  listen:\n    - "udp:127.0.0.1:5070"\n    - "{spec}"\n'
    assert problems(write(tmp_path, "pbx.yaml", text)) == [
        f"pbx.yaml:5:7: sip.listen[1]: {message}"
    ]


def test_listen_forms_and_duplicates(tmp_path: Path) -> None:
    good = 'sip:\n  domain: x.test\n  listen: ["UDP:[::1]:5060", "tcp:localhost:0"]\n'
    config = load_config(write(tmp_path, "good.yaml", good))
    assert [str(a) for a in config.sip.listen] == ["udp:[::1]:5060", "tcp:localhost:0"]
    assert config.sip.listen[0].host == "::1"
    dup = 'sip:\n  domain: x.test\n  listen: ["udp:127.0.0.1:5070", "udp:127.0.0.1:5070"]\n'
    assert problems(write(tmp_path, "dup.yaml", dup)) == [
        "dup.yaml:3:34: sip.listen[1]: duplicate listen address udp:127.0.0.1:5070 "
        "(also sip.listen[0])"
    ]
    empty = "sip:\n  domain: x.test\n  listen: []\n"
    assert problems(write(tmp_path, "empty.yaml", empty)) == [
        "empty.yaml:3:3: sip.listen: give at least one address to listen on, e.g. udp:0.0.0.0:5060"
    ]


def test_durations(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pbx.yaml",
        MINIMAL + "  ring_timeout: 1m30s\n  t1: 250ms\n  t4: 7\n  nonce_ttl: 1h\n",
    )
    sip = load_config(path).sip
    assert (sip.ring_timeout, sip.t1, sip.t4, sip.nonce_ttl) == (90.0, 0.25, 7.0, 3600.0)
    assert parse_duration("20s") == 20.0
    assert parse_duration("0.5") == 0.5
    for bad in ("5 parsecs", "", "-3s", True, [1]):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_bad_durations(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pbx.yaml",
        MINIMAL + "  ring_timeout: 5 parsecs\n  t1: 0\n  t2: yes\nmedia:\n  rtp_timeout: -1\n",
    )
    assert problems(path) == [
        "pbx.yaml:4:3: sip.ring_timeout: invalid duration '5 parsecs': use seconds (30) or a "
        "number with a unit ms, s, m or h (500ms, 20s, 5m, 1h, 1m30s)",
        "pbx.yaml:5:3: sip.t1: must be greater than 0",
        "pbx.yaml:6:3: sip.t2: invalid duration 'yes': use seconds (30) or a number with a unit "
        "ms, s, m or h (500ms, 20s, 5m, 1h, 1m30s)",
        "pbx.yaml:8:3: media.rtp_timeout: duration must be a finite number of seconds >= 0, got -1",
    ]


def test_expires_and_timer_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pbx.yaml",
        MINIMAL + "  min_expires: 600\n  max_expires: 300\n  t1: 5s\n  t2: 1s\n",
    )
    assert problems(path) == [
        "pbx.yaml:5:3: sip.max_expires: max_expires (300) must be >= min_expires (600)",
        "pbx.yaml:7:3: sip.t2: t2 (1s) must not be shorter than t1 (5s)",
    ]


@pytest.mark.parametrize(
    ("ports", "message"),
    [
        ("[20000, 10000]", "first port must be below the last, got [20000, 10000]"),
        ("[10001, 20000]", "first port must be even (RTP uses even ports), got 10001"),
        ("[80, 2000]", "ports must lie within 1024..65535, got [80, 2000]"),
        ("[10000, 70000]", "ports must lie within 1024..65535, got [10000, 70000]"),
        ("[10000]", "expected [first, last], two port numbers, got 1 items"),
        ("10000", "expected a list, got 10000"),
    ],
)
def test_bad_rtp_range(tmp_path: Path, ports: str, message: str) -> None:
    path = write(tmp_path, "pbx.yaml", MINIMAL + f"media:\n  rtp_ports: {ports}\n")
    assert problems(path) == [f"pbx.yaml:5:3: media.rtp_ports: {message}"]


def test_media_address(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "a.yaml", MINIMAL + "media: {address: 192.0.2.10}\n"))
    assert config.advertised_address() == "192.0.2.10"
    assert problems(write(tmp_path, "b.yaml", MINIMAL + "media: {address: '0.0.0.0'}\n")) == [
        "b.yaml:4:9: media.address: 0.0.0.0 cannot be advertised in SDP; give this host's address"
    ]


def test_storage_paths(tmp_path: Path) -> None:
    relative = MINIMAL + "storage:\n  database: sqlite:///data/pbx.db\n  recordings: rec\n"
    config = load_config(write(tmp_path, "rel.yaml", relative))
    assert config.storage.database == f"sqlite:///{tmp_path}/data/pbx.db"
    assert config.storage.recordings == tmp_path / "rec"
    absolute = MINIMAL + "storage:\n  database: sqlite:////srv/pbx.db\n  recordings: /srv/rec\n"
    config = load_config(write(tmp_path, "abs.yaml", absolute))
    assert config.storage.database == "sqlite:////srv/pbx.db"
    assert config.storage.recordings == Path("/srv/rec")
    pg = MINIMAL + "storage: {database: 'postgresql://pbx:pw@db/pbx'}\n"
    assert load_config(write(tmp_path, "pg.yaml", pg)).storage.database == (
        "postgresql://pbx:pw@db/pbx"
    )


def test_folder_merges_files(tmp_path: Path) -> None:
    folder = tmp_path / "conf.d"
    folder.mkdir()
    write(folder, "10-sip.yaml", MINIMAL)
    write(folder, "20-users.yml", 'users:\n  - {id: alice, extension: "101", password: a}\n')
    write(folder, "30-storage.yaml", "storage: {database: 'sqlite:///pbx.db'}\n")
    write(folder, ".#30-storage.yaml", "this is: [an editor lock file")
    write(folder, "README.txt", "not yaml")
    config = load_config(folder)
    assert config.user_by_id("alice") is not None
    assert config.storage.database == f"sqlite:///{folder}/pbx.db"


def test_folder_errors_name_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "conf.d"
    folder.mkdir()
    write(folder, "a.yaml", MINIMAL + 'users:\n  - {id: alice, extension: "101", password: a}\n')
    write(folder, "b.yaml", "logging: {level: info}\n\nusers: []\n")
    write(folder, "c.yaml", "media:\n  rtp_ports: [1, 2]\n")
    assert problems(folder) == [
        "b.yaml:3:1: users: section also defined in a.yaml:4; each top-level key belongs in "
        "one file",
        "c.yaml:2:3: media.rtp_ports: ports must lie within 1024..65535, got [1, 2]",
    ]


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert str(caught.value) == f"{tmp_path}: no *.yaml or *.yml files here"


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "nope.yaml")


def test_yaml_syntax_error_is_reported_alone(tmp_path: Path) -> None:
    path = write(tmp_path, "pbx.yaml", "sip:\n  listen: [udp\n  domain: x\n")
    [line] = problems(path)
    assert line.startswith("pbx.yaml:3:")
    assert "invalid YAML" in line


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert problems(write(tmp_path, "pbx.yaml", "- sip\n")) == [
        "pbx.yaml:1:1: the top level must be a mapping of sections (sip:, users:, ...)"
    ]


def test_merge_keys_and_aliases(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pbx.yaml",
        MINIMAL
        + """\
users:
  - &agent {id: alice, extension: "101", password: a, role: supervisor, max_contacts: 2}
  - <<: *agent
    id: bob
    extension: "102"
""",
    )
    bob = load_config(path).users[1]
    assert (bob.id, bob.extension, bob.role, bob.max_contacts) == ("bob", "102", "supervisor", 2)


def test_recursive_alias_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "pbx.yaml", MINIMAL + "users: &u [*u]\n")
    assert "pbx.yaml:4:8: users[0]: recursive YAML alias" in problems(path)


def test_unsupported_tag(tmp_path: Path) -> None:
    path = write(tmp_path, "pbx.yaml", MINIMAL + "logging: {level: !secret info}\n")
    assert problems(path) == ["pbx.yaml:4:18: logging.level: unsupported YAML tag !secret"]


def test_issue_format() -> None:
    issue = ConfigIssue("pbx.yaml", 14, 5, "users[2].extension", 'duplicate extension "101"')
    assert str(issue) == 'pbx.yaml:14:5: users[2].extension: duplicate extension "101"'
    assert str(ConfigIssue("pbx.yaml", 0, 0, "", "not UTF-8 text")) == "pbx.yaml: not UTF-8 text"
    error = ConfigError([issue, issue])
    assert error.issues == (issue, issue)
    assert str(error).count("\n") == 1


def test_programmatic_config_rejects_duplicates() -> None:
    users = (
        User(id="a", extension="101", password="x"),
        User(id="b", extension="101", password="y"),
    )
    with pytest.raises(ValidationError, match='duplicate extension "101"'):
        Config(sip={"listen": ["udp:127.0.0.1:0"], "domain": "x.test"}, users=users)  # type: ignore[arg-type]


def test_merge_reload_keeps_restart_only_keys(tmp_path: Path) -> None:
    running = load_config(write(tmp_path, "old.yaml", MINIMAL))
    changed = MINIMAL.replace("5070", "5080") + (
        "  ring_timeout: 20s\nmedia: {rtp_ports: [30000, 30100]}\n"
        'users:\n  - {id: alice, extension: "101", password: a}\n'
    )
    new = load_config(write(tmp_path, "new.yaml", changed))
    applied, kept = merge_reload(running, new)
    assert kept == ("sip.listen", "media.rtp_ports")
    assert applied.sip.listen == running.sip.listen
    assert applied.media.rtp_ports == running.media.rtp_ports
    assert applied.sip.ring_timeout == 20.0
    assert applied.user_by_id("alice") is not None
    assert merge_reload(running, running) == (running, ())
    # Everything else of the new config comes along, including where its keys were written.
    assert applied.users == new.users and applied.prompts == new.prompts
    issue = applied.issue(("sip", "ring_timeout"), "x")
    assert str(issue) == f"{tmp_path}/new.yaml:4:3: sip.ring_timeout: x"


def test_media_defaults_and_where_the_prompt_cache_goes(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "pbx.yaml", MINIMAL + "storage: {recordings: var/rec}\n"))
    assert config.media.language == "en"
    assert config.media.hold_music.is_default
    assert config.media.fetch.timeout == 10.0 and config.media.fetch.max_bytes == 50_000_000
    assert config.storage.cache is None
    assert config.storage.cache_dir == tmp_path / "var" / "prompt-cache"
    assert config.prompts.unavailable.text == "The person you are calling is not available."
    assert config.prompts.not_found.text == "The number you dialled does not exist."
    assert config.prompts.digits.for_key("1") == "You pressed 1."
    explicit = load_config(
        write(
            tmp_path,
            "cache.yaml",
            MINIMAL
            + "storage: {cache: cache}\n"
            + "media: {language: EN_us, hold_music: default}\n"
            + 'users:\n  - {id: a, extension: "1", password: p}\n',
        )
    )
    assert explicit.storage.cache_dir == tmp_path / "cache"
    assert explicit.media.language == "en-us"
    assert explicit.users[0].dtmf_mode == "auto"


def test_text_fields_reject_line_breaks(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pbx.yaml",
        MINIMAL
        + """\
  user_agent: "PBX\\r\\nX-Evil: 1"
  realm: corp
users:
  - id: alice
    extension: "101"
    password: |
      secret
""",
    )
    assert problems(path) == [
        "pbx.yaml:4:3: sip.user_agent: user_agent must not contain control characters or "
        "line breaks",
        "pbx.yaml:9:5: users[0].password: password must not contain control characters or "
        "line breaks",
    ]
    fixed = path.read_text().replace("\\r\\nX-Evil: 1", "").replace("|\n      ", "")
    config = load_config(write(tmp_path, "fixed.yaml", fixed))
    assert (config.sip.realm, config.sip.domain) == ("corp", "pbx.test")
    assert config.users[0].password == "secret"


_YAML_BITS = st.sampled_from(
    [
        "sip:",
        "  listen:",
        '    - "udp:127.0.0.1:5070"',
        "  domain: pbx.test",
        "users:",
        "  - id: a",
        "    extension: 0101",
        "    password: p",
        "media: {rtp_ports: [1, 2]}",
        "&a",
        "*a",
        "<<: *a",
        "!!str",
        "!tag",
        "[",
        "]",
        "{",
        "}",
        ":",
        "- ",
        "'",
        '"',
        "\t",
        "---",
        "~",
        "0x1F",
        "1e3",
        ".inf",
        "\x00",
        "é",
    ]
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(st.lists(_YAML_BITS, max_size=4).map(" ".join), max_size=12))
def test_garbage_never_crashes(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.issues
        assert all(str(issue).startswith(str(path)) for issue in exc.issues)


def test_feature_codes(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "pbx.yaml", MINIMAL))
    assert (config.features.echo_test, config.features.key_test) == ("*43", "*44")
    path = write(tmp_path, "pbx.yaml", MINIMAL + "features: {echo_test: 9043, key_test: null}\n")
    config = load_config(path)
    assert (config.features.echo_test, config.features.key_test) == ("9043", None)


def test_bad_feature_codes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pbx.yaml",
        MINIMAL
        + """\
features:
  echo_test: "101"
  key_test: "*4 4"
users:
  - {id: alice, extension: "101", password: a}
""",
    )
    found = problems(path)
    assert any(p.startswith("pbx.yaml:5:") and "features.echo_test" in p
               and "users[0]" in p for p in found), found
    assert any(p.startswith("pbx.yaml:6:") and "features.key_test" in p for p in found), found


def test_example_routing_block_loads_when_uncommented(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    start = text.index("# dialplan:")
    block = "\n".join(
        line[2:] if line.startswith("# ") else line for line in text[start:].splitlines()
    )
    config = load_config(write(tmp_path, "pbx.yaml", text[:start] + block + "\n"))
    assert config.dialplan.region == "JP"
    assert [n.number for n in config.numbers] == ["+81312345678", "+81120123456"]
    assert config.trunks[0].registration
    assert sorted(config.ring_groups) == ["sales"]
    billing = config.ivr["main"].options["2"].menu
    assert billing is not None and billing.max_retries == 2  # taken from the menu above
    support = config.queues["support"]
    assert support.members == ("alice", "bob") and support.callback_key == "9"
    assert support.rules[0].target == "crm_owner"


def test_shared_port_needs_ipv4_and_a_restart(tmp_path: Path) -> None:
    ok = load_config(write(tmp_path, "pbx.yaml", MINIMAL + "media: {shared_port: true}\n"))
    assert ok.media.shared_port is True
    running = load_config(write(tmp_path, "pbx.yaml", MINIMAL))
    applied, kept = merge_reload(running, ok)
    assert kept == ("media.shared_port",) and applied.media.shared_port is False
    bad = write(tmp_path, "pbx.yaml", """\
sip:
  listen: ["udp:[::1]:5070"]
  domain: pbx.test
media: {shared_port: true}
""")
    assert any("media.shared_port" in p and "IPv4" in p for p in problems(bad))
