"""IVR menus on calls the PBX answers itself: the config's menus run by the :mod:`ivr` engine.

:func:`build_menu` turns an ``ivr:`` entry of the config into the engine's plain model, with
every prompt named by where it was written (its audio was resolved when the config loaded, see
:func:`pbx.prompts.resolve`); :func:`ivr_service` is the service a :class:`LocalCall` runs: the
menu until the caller chooses, then :meth:`LocalCall.connect` to the chosen user or ring group
(the caller hears ringback); when nobody is available the menu plays its ``unavailable`` prompt
and takes the caller back, as the engine decides. An option that opens another IVR by name
continues there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ivr import DIRECT_DIAL_KIND, IvrRunner, IvrSession, Menu, Option, Prompt, Route, RouteTo
from media.sources import PlaylistSource

from .localcall import LocalCall, Service
from .prompts import ivr_key
from .routing import Refuse, Target, ToIvr, ToUser, route_target

if TYPE_CHECKING:
    from .config import Config
    from .config_routing import IvrMenu
    from .config_routing import Route as ConfigRoute
    from .prompts import Prompts

#: IVRs one call may pass through (an option opening another IVR), so two menus naming each
#: other cannot keep a caller forever.
_MAX_IVRS = 10


def _route(route: ConfigRoute) -> Route:
    for kind in ("user", "ring_group", "ivr", "queue"):
        if getattr(route, kind) is not None:
            return Route(kind, route.target)
    raise ValueError(f"route {route!r} names nothing")


def build_menu(name: str, menu: IvrMenu, path: tuple[str | int, ...] | None = None,
               unavailable: str | None = None) -> Menu:
    """The engine's menu for ``ivr.<name>`` (``path`` is the config key path of ``menu``)."""
    path = path or ("ivr", name)
    if menu.unavailable is not None and (unavailable is None or path == ("ivr", name)):
        unavailable = ivr_key((*path, "unavailable"))
    options: dict[str, Option] = {}
    for key, option in menu.options.items():
        sub = None
        if option.menu is not None:
            sub_path = (*path, "options", key, "menu")
            inherited = unavailable
            if option.menu.unavailable is not None and option.menu.unavailable != menu.unavailable:
                inherited = ivr_key((*sub_path, "unavailable"))
            sub = build_menu(name, option.menu, sub_path, inherited)
        options[key] = Option(
            label=option.label or key,
            route=_route(option.route) if option.route is not None else None,
            submenu=sub,
            prompt=(Prompt("clip", ivr_key((*path, "options", key, "prompt")))
                    if option.prompt is not None else None),
        )
    return Menu(
        name=".".join(str(p) for p in path),
        welcome=Prompt("clip", ivr_key((*path, "welcome"))) if menu.welcome else None,
        options=options,
        option_prompt=menu.option_prompt,
        timeout=float(menu.timeout),
        max_retries=menu.max_retries,
        on_failure=_route(menu.on_failure) if menu.on_failure is not None else None,
        back_key=menu.back_key,
        repeat_key=menu.repeat_key,
        direct_dial=menu.direct_dial,
        invalid=Prompt("system", "invalid_choice"),
        goodbye=Prompt("system", "goodbye"),
        unavailable=Prompt("clip", unavailable) if unavailable else Prompt("system",
                                                                            "unavailable"),
    )


class _Channel:
    """The caller's side of a menu: prompts through the local leg, keys from it."""

    def __init__(self, call: LocalCall, prompts: Prompts) -> None:
        self._call = call
        self._prompts = prompts

    async def play(self, prompts: tuple[Prompt, ...], barge_in: bool) -> str | None:
        clips = [await self._clip(p) for p in prompts]
        source = PlaylistSource(clips or [np.zeros(160, dtype=np.int16)])
        return await self._call.play(source, barge_in=barge_in)

    async def key(self, timeout: float) -> str | None:
        return await self._call.key(timeout)

    async def _clip(self, prompt: Prompt) -> np.ndarray:
        p = self._prompts
        if prompt.kind == "clip":
            return p.ivr_clip(prompt.value)
        if prompt.kind == "system":
            return p.clip(prompt.value)
        # Option announcements were spoken at load; anything else is spoken now, off the loop.
        return await asyncio.to_thread(p.text_clip, prompt.value)


def ivr_service(name: str, config: Callable[[], Config],
                prompts: Callable[[], Prompts]) -> Service:
    """The service running ``ivr.<name>`` (and the IVRs its options open) for a caller."""

    async def run(call: LocalCall) -> None:
        current = name
        for _ in range(_MAX_IVRS):
            cfg = config()
            menu_config = cfg.ivr.get(current)
            if menu_config is None:
                await call.play(prompts().get("not_found"))
                return
            session = IvrSession(build_menu(current, menu_config), _known(cfg))
            runner = IvrRunner(session, _Channel(call, prompts()))
            outcome = await runner.run()
            while isinstance(outcome, RouteTo):
                target = _target(cfg, outcome.route)
                if isinstance(target, ToIvr):
                    current = target.name
                    break
                code = 404 if isinstance(target, Refuse) else await call.connect(target)
                if code is None:
                    return  # the caller is talking to whoever answered
                outcome = await runner.target_unavailable()
            else:
                return  # Hangup: its goodbye has played
        await call.play(prompts().get("goodbye"))

    return run


def _known(config: Config) -> Callable[[str], bool]:
    return lambda extension: config.user_by_extension(extension) is not None


def _target(config: Config, route: Route) -> Target:
    if route.kind == DIRECT_DIAL_KIND:
        user = config.user_by_extension(route.target)
        return ToUser(user) if user is not None else Refuse(404, "not_found", "not_found")
    from .config_routing import Route as ConfigRoute

    return route_target(config, ConfigRoute.model_validate({route.kind: route.target}))
