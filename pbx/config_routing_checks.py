"""Cross-checks of the routing configuration, on the plain data of the loaded YAML.

Each problem is a (key path, message) pair, so ``load_config`` can place it at the file, line
and column where the key was written: routes naming targets that exist, ring group members,
numbers unique once in E.164, trunk names and inbound addresses, the dial plan's trunks, IVR
depth and keys. The same checks run on a ``Config`` built in code (on its dumped data).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import phonenumbers

from pbx.config_routing import MAX_IVR_DEPTH, ROUTE_KINDS, code_as_text, e164

__all__ = ["Problem", "routing_problems"]

Problem = tuple[tuple[str | int, ...], str]


def _region_of(data: Mapping[str, Any]) -> str:
    dialplan = data.get("dialplan")
    region = dialplan.get("region") if isinstance(dialplan, Mapping) else None
    if isinstance(region, str) and region.strip().upper() in phonenumbers.SUPPORTED_REGIONS:
        return region.strip().upper()
    return "US"


def _entries(value: object) -> Iterator[tuple[int, Mapping[str, Any]]]:
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if isinstance(item, Mapping):
                yield index, item


def _names(value: object) -> set[str]:
    return {key for key in value if isinstance(key, str)} if isinstance(value, Mapping) else set()


def _menus(
    menu: Mapping[str, Any], path: tuple[str | int, ...], depth: int
) -> Iterator[tuple[tuple[str | int, ...], Mapping[str, Any], int]]:
    yield path, menu, depth
    options = menu.get("options")
    if not isinstance(options, Mapping) or depth > MAX_IVR_DEPTH:
        return
    for key, option in options.items():
        sub = option.get("menu") if isinstance(option, Mapping) else None
        if isinstance(sub, Mapping):
            yield from _menus(sub, (*path, "options", key, "menu"), depth + 1)


def routing_problems(data: Mapping[str, Any]) -> list[Problem]:
    """Problems across routing entries, as (key path, message), found on plain data."""
    problems: list[Problem] = []
    users = {
        value
        for _, user in _entries(data.get("users"))
        for value in (user.get("id"),)
        if isinstance(value, str)
    }
    targets = {
        "user": users,
        "ring_group": _names(data.get("ring_groups")),
        "ivr": _names(data.get("ivr")),
        "queue": _names(data.get("queues")),
    }
    plural = {"user": "users", "ring_group": "ring_groups", "ivr": "ivr", "queue": "queues"}
    label = {"user": "user", "ring_group": "ring group", "ivr": "IVR", "queue": "queue"}

    def check_route(route: object, path: tuple[str | int, ...]) -> None:
        if not isinstance(route, Mapping):
            return
        for kind in ROUTE_KINDS:
            name = route.get(kind)
            if not isinstance(name, str):
                continue
            if name not in targets[kind]:
                problems.append(
                    ((*path, kind), f'unknown {label[kind]} "{name}" (not in {plural[kind]})')
                )

    region = _region_of(data)
    seen_numbers: dict[str, int] = {}
    for index, number in _entries(data.get("numbers")):
        check_route(number.get("route"), ("numbers", index, "route"))
        text = number.get("number")
        normal = e164(text, region) if isinstance(text, str) else None
        if normal is None:
            continue
        if normal in seen_numbers:
            problems.append(
                (
                    ("numbers", index, "number"),
                    f"duplicate number {normal} (also numbers[{seen_numbers[normal]}])",
                )
            )
        else:
            seen_numbers[normal] = index

    groups = data.get("ring_groups")
    if isinstance(groups, Mapping):
        for name, group in groups.items():
            if not isinstance(group, Mapping):
                continue
            members = group.get("members")
            if isinstance(members, list | tuple):
                for index, member in enumerate(members):
                    if isinstance(member, str) and member not in users:
                        problems.append(
                            (
                                ("ring_groups", name, "members", index),
                                f'unknown user "{member}" (not in users)',
                            )
                        )
            check_route(group.get("fallback"), ("ring_groups", name, "fallback"))
        problems.extend(_fallback_loops(groups))

    queues = data.get("queues")
    if isinstance(queues, Mapping):
        for name, queue in queues.items():
            if isinstance(queue, Mapping):
                for key in ("on_full", "on_timeout", "on_exit"):
                    check_route(queue.get(key), ("queues", name, key))

    trunk_names: dict[str, int] = {}
    networks: list[tuple[int, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
    for index, trunk in _entries(data.get("trunks")):
        name = trunk.get("name")
        if isinstance(name, str):
            if name in trunk_names:
                problems.append(
                    (
                        ("trunks", index, "name"),
                        f'duplicate trunk name "{name}" (also trunks[{trunk_names[name]}])',
                    )
                )
            else:
                trunk_names[name] = index
        problems.extend(_overlaps(trunk, index, networks))
    dialplan = data.get("dialplan")
    outbound = dialplan.get("outbound") if isinstance(dialplan, Mapping) else None
    if isinstance(outbound, list | tuple):
        for index, name in enumerate(outbound):
            if isinstance(name, str) and name not in trunk_names:
                problems.append(
                    (("dialplan", "outbound", index), f'unknown trunk "{name}" (not in trunks)')
                )

    ivr = data.get("ivr")
    if isinstance(ivr, Mapping):
        for name, top in ivr.items():
            if isinstance(top, Mapping):
                problems.extend(_ivr_problems(top, ("ivr", name), check_route))
    return problems


def _fallback_loops(groups: Mapping[str, Any]) -> list[Problem]:
    # A group whose fallback leads back to itself with nobody available would bounce the call
    # between groups without end.
    problems: list[Problem] = []
    for start in groups:
        chain = [start]
        current = start
        while True:
            group = groups.get(current)
            fallback = group.get("fallback") if isinstance(group, Mapping) else None
            nxt = fallback.get("ring_group") if isinstance(fallback, Mapping) else None
            if not isinstance(nxt, str) or nxt not in groups:
                break
            if nxt == start:
                loop = " -> ".join([*chain, nxt])
                problems.append((("ring_groups", start, "fallback"), f"fallback loop: {loop}"))
                break
            if nxt in chain:
                break  # a loop that does not pass through `start`; reported for its members
            chain.append(nxt)
            current = nxt
    return problems


def _overlaps(
    trunk: Mapping[str, Any],
    index: int,
    seen: list[tuple[int, ipaddress.IPv4Network | ipaddress.IPv6Network]],
) -> list[Problem]:
    # Two trunks claiming the same source address would make an inbound call's trunk a guess.
    ips = trunk.get("inbound_ips")
    items: list[tuple[tuple[str | int, ...], object]]
    if isinstance(ips, list | tuple):
        items = [(("trunks", index, "inbound_ips", i), ip) for i, ip in enumerate(ips)]
    else:
        items = [(("trunks", index, "host"), trunk.get("host"))] if ips is None else []
    problems: list[Problem] = []
    for path, item in items:
        if not isinstance(item, str):
            continue
        try:
            network = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            continue  # not an address (a host name), or reported by validation
        for other, known in seen:
            if other != index and known.version == network.version and known.overlaps(network):
                problems.append(
                    (
                        path,
                        f"{_net(network)} overlaps {_net(known)}, an inbound address of "
                        f"trunks[{other}]",
                    )
                )
                break
        seen.append((index, network))
    return problems


def _net(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    single = network.num_addresses == 1
    return str(network.network_address) if single else str(network)


def _ivr_problems(
    top: Mapping[str, Any],
    root: tuple[str | int, ...],
    check_route: Callable[[object, tuple[str | int, ...]], None],
) -> list[Problem]:
    problems: list[Problem] = []
    inherited_keys: dict[tuple[str | int, ...], tuple[object, object]] = {}
    for path, menu, depth in _menus(top, root, 1):
        if depth > MAX_IVR_DEPTH:
            problems.append(
                (
                    path,
                    f"this menu is level {depth}; IVR menus nest at most {MAX_IVR_DEPTH} "
                    "levels deep",
                )
            )
            continue
        parent = inherited_keys.get(path[:-3], ("*", "#")) if depth > 1 else ("*", "#")
        back = code_as_text(menu.get("back_key", parent[0]))
        repeat = code_as_text(menu.get("repeat_key", parent[1]))
        inherited_keys[path] = (back, repeat)
        check_route(menu.get("on_failure"), (*path, "on_failure"))
        options = menu.get("options")
        if not isinstance(options, Mapping):
            continue
        for key, option in options.items():
            if not isinstance(option, Mapping):
                continue
            check_route(option.get("route"), (*path, "options", key, "route"))
            for special, value in (("back_key", back), ("repeat_key", repeat)):
                if key == value:
                    problems.append(
                        (
                            (*path, "options", key),
                            f'key "{key}" is also this menu\'s {special}; give the menu '
                            f"another {special} or {special}: null",
                        )
                    )
    return problems
