"""The ``queues:`` section: values as loaded, the design's caps, and every error with its
file:line:col and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

from pbx.acd import MAX_CALLERS, MAX_WAIT
from tests.pbx.test_config_routing import load, problems

USERS_MORE = """\
  - {id: carol, extension: "103", password: c, department: sales}
"""


def test_a_queue_loads_with_its_defaults_and_durations(tmp_path: Path) -> None:
    config = load(tmp_path, USERS_MORE + textwrap.dedent("""\
        queues:
          support:
            members: [alice, bob]
            max_wait: 10m
            wrap_up: 30s
            announcements: [{text: "Please hold."}]
            on_full: {user: carol}
            exit_key: 0
            on_exit: {queue: support}
        """))
    q = config.queues["support"]
    assert q.members == ("alice", "bob") and q.strategy == "longest_idle"
    assert q.max_callers == MAX_CALLERS and q.max_wait == 600.0 and q.wrap_up == 30.0
    assert q.exit_key == "0" and q.on_exit is not None and q.on_exit.queue == "support"
    assert config.user_by_id("carol") is not None
    assert config.user_by_id("carol").department == "sales"  # type: ignore[union-attr]


def test_caps_above_the_design_are_errors(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
        queues:
          big:
            members: [alice]
            max_callers: 26
            max_wait: 26m
        """)
    assert len(found) == 2
    assert "queues.big.max_callers" in found[0] and "25" in found[0]
    assert "queues.big.max_wait" in found[1] and str(int(MAX_WAIT)) in found[1]


def test_unknown_members_routes_and_rule_agents_are_errors_at_their_keys(
        tmp_path: Path) -> None:
    found = problems(tmp_path, """\
        queues:
          support:
            members: [alice, zed]
            on_timeout: {ring_group: nowhere}
            rules:
              - {target: {agents: [bob]}}
        numbers:
          - {number: "+81312345678", route: {queue: sales}}
        """)
    text = "\n".join(found)
    assert 'queues.support.members[1]: unknown user "zed"' in text
    assert 'queues.support.on_timeout.ring_group: unknown ring group "nowhere"' in text
    assert "queues.support.rules[0]" in text and "bob" in text
    assert 'numbers[0].route.queue: unknown queue "sales" (not in queues)' in text


def test_exit_key_needs_its_route_and_keys_must_differ(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
        queues:
          a: {members: [alice], exit_key: "9"}
          b: {members: [alice], exit_key: "9", on_exit: {user: bob}, callback_key: "9"}
          c: {members: [alice], callback_key: "12"}
        """)
    text = "\n".join(found)
    assert "queues.a: exit_key needs on_exit" in text
    assert "queues.b: exit_key and callback_key are both '9'" in text
    assert "queues.c.callback_key: invalid key '12'" in text
