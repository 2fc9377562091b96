"""What a caller waiting in a queue hears and can do: the queue's waiting service.

The caller is answered by the PBX (a :class:`pbx.localcall.LocalCall`). The service looks the
caller up in the CRM (in a worker thread, bounded in time), lets the queue's assignment rules
decide who may take the call, joins the line, and then plays: the greeting, the caller's place
and estimated wait when so configured, music, and every ``announce_every`` the next
announcement. Announcements wait while an agent's phone is ringing for the caller, so nobody
is talked over at the moment they are connected. The exit key leaves for ``on_exit``; the
callback key keeps the caller's place and lets them hang up. When the queue ends the wait
(``max_wait``, a rule with nobody to offer), the caller goes to the queue's route or hears a
polite message. When an agent answers, the caller is moved to them and the service ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import TYPE_CHECKING

from media.sources import PlaylistSource

from .acdrules import CallFacts, CrmFacts, NoOne, assign
from .callerlookup import look_up
from .ivrservice import ivr_service
from .localcall import CallerGone, LocalCall, Service
from .prompts import ivr_key
from .queuecallback import ask_callback, set_callback
from .queues import MAX_HOPS, QueueCaller, Queues, local_time
from .queueviews import CallerRecord, QueueControlError
from .routing import ToIvr, ToQueue, ToRingGroup, ToUser, route_target

if TYPE_CHECKING:

    from .config_routing import Route

logger = logging.getLogger(__name__)

#: The longest the CRM look-up may hold a caller before they join the line without it.
LOOKUP_TIMEOUT = 1.0


def full_service(queues: Queues, name: str) -> Service:
    """A full queue without ``on_full``: say so politely and hang up."""

    async def run(call: LocalCall) -> None:
        call.missed = True
        await call.play(queues.app.prompts.get("queue_full"))  # type: ignore[union-attr]

    return run


def wait_service(queues: Queues) -> Service:
    """The service of a caller admitted by :meth:`Queues.on_invite`."""

    async def run(call: LocalCall) -> None:
        caller = queues.callers.get(call.id)
        if caller is None:
            return
        await _wait(queues, caller)

    return run


async def join_and_wait(queues: Queues, call: LocalCall, name: str, hops: int) -> None:
    """An answered caller (in an IVR, or sent on by another queue) waits in queue ``name``."""
    caller = queues.join(call, name, hops)
    prompts = queues.app.prompts
    assert prompts is not None
    if caller is None:
        qc = queues.config(name)
        if qc is not None and qc.on_full is not None and hops < MAX_HOPS:
            await follow(queues, call, qc.on_full, hops + 1)
            return
        await call.play(prompts.get("queue_full"))
        return
    await _wait(queues, caller)


async def _wait(queues: Queues, caller: QueueCaller) -> None:
    caller.local.before_end = lambda: _leave(queues, caller)
    try:
        await _admit(queues, caller)
        if caller.outcome == "unassigned":
            await _sent_away(queues, caller)
            return
        await _waiting(queues, caller)
    except CallerGone:
        pass
    finally:
        _leave(queues, caller)


def _leave(queues: Queues, caller: QueueCaller) -> None:
    """The caller's line is gone or their time here is over (once, whichever comes first:
    the call's end hook or the service's end). A callback keeps the caller's place once their
    line is gone (only then can it be offered: the agent's phone rings first, and the customer
    must not still be on the line); anyone else leaves the line (counted abandoned if still
    in it)."""
    if caller.left:
        return
    caller.left = True
    if caller.callback_number is not None and caller.connected_to is None:
        set_callback(queues, caller, caller.callback_number)
    else:
        queues.release(caller)


async def _admit(queues: Queues, caller: QueueCaller) -> None:
    """Look the caller up, apply the rules, join the line."""
    name = caller.queue
    qc = queues.config(name)
    assert qc is not None
    match, last_agent = await _lookup(queues, caller.caller_number)
    if caller.local.ended:
        raise CallerGone(caller.local.id)
    caller.crm = match
    cfg = queues.app.config
    facts = CallFacts(
        did=caller.did, caller=caller.caller_number, local_time=local_time(cfg),
        crm=None if match is None else CrmFacts(
            "lead" if match.kind == "lead" else "contact", match.record_id, match.name,
            match.owner),
        last_agent=last_agent,
    )
    departments = {u.id: u.department for u in cfg.users}
    assignment = assign(qc.rules, facts, qc.members, departments)
    caller.rule = assignment.rule
    if isinstance(assignment, NoOne):
        queues._reserved[name].discard(caller.local.id)
        queues.states[name].count_unassigned()
        queues._record(caller, "unassigned", 0.0, None)
        caller.outcome = "unassigned"
        return
    queues.admit(caller, assignment)
    logger.info("queue %s: caller %s waits at %d%s", name, caller.caller_number,
                queues.position(caller), f" (rule {caller.rule})" if caller.rule else "")


async def _lookup(queues: Queues, number: str) -> tuple[CallerRecord | None, str | None]:
    return await look_up(queues.lookup, number, LOOKUP_TIMEOUT, (None, None), "queued")


async def _waiting(queues: Queues, caller: QueueCaller) -> None:
    call = caller.local
    prompts = queues.app.prompts
    assert prompts is not None
    loop = asyncio.get_running_loop()
    qc = queues.config(caller.queue)
    assert qc is not None
    music = prompts.queue_music(caller.queue)
    said: tuple[int, float | None] | None = None
    if qc.greeting is not None:
        await call.play(PlaylistSource([prompts.ivr_clip(ivr_key(("queues", caller.queue,
                                                                   "greeting")))]))
    said = await _status(queues, caller, said)
    call.stream(music)
    announce_at = loop.time() + qc.announce_every
    index = 0
    while True:
        if caller.outcome is not None:
            outcome, caller.outcome = caller.outcome, None
            caller.wake.clear()
            if outcome == "moved":
                qc = queues.config(caller.queue) or qc
                prompts = queues.app.prompts or prompts
                music = prompts.queue_music(caller.queue)
                call.stream(music)
                said = None
                announce_at = loop.time() + qc.announce_every
                continue
            await _sent_away(queues, caller, outcome)
            return
        key = await _key_or_wake(call, caller, max(0.05, announce_at - loop.time()))
        if key is not None:
            if key == qc.exit_key and qc.on_exit is not None:
                logger.info("queue %s: caller %s left by the exit key", caller.queue,
                            caller.caller_number)
                queues.release(caller, "exit")
                await follow(queues, call, qc.on_exit, caller.hops + 1)
                return
            if key == qc.callback_key:
                if await ask_callback(queues, caller):
                    return
                call.stream(music)
            continue
        if caller.outcome is not None or loop.time() < announce_at:
            continue
        if queues.ringing_now(caller):
            announce_at = loop.time() + 1.0  # never talk over an agent picking up
            continue
        qc = queues.config(caller.queue) or qc  # a reload may have changed it
        prompts = queues.app.prompts or prompts
        if qc.announcements:
            which = index % len(qc.announcements)
            index += 1
            try:
                clip = prompts.ivr_clip(ivr_key(("queues", caller.queue, "announcements",
                                                 which)))
            except KeyError:
                clip = None  # the queue was renamed or removed by a reload
            if clip is not None:
                await call.play(PlaylistSource([clip]))
        said = await _status(queues, caller, said)
        call.stream(music)
        announce_at = loop.time() + qc.announce_every


async def _key_or_wake(call: LocalCall, caller: QueueCaller, timeout: float) -> str | None:
    key_task = asyncio.ensure_future(call.key(timeout))
    wake_task = asyncio.ensure_future(caller.wake.wait())
    try:
        done, _ = await asyncio.wait({key_task, wake_task},
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        wake_task.cancel()
        if not key_task.done():
            key_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, CallerGone):
                await key_task
    if key_task in done:
        return key_task.result()  # raises CallerGone when the caller hung up
    return None


async def _status(queues: Queues, caller: QueueCaller,
                  said: tuple[int, float | None] | None) -> tuple[int, float | None] | None:
    """Say the caller's place and estimated wait, when configured (and, with
    ``announce_only_better``, only when either improved since last said)."""
    qc = queues.config(caller.queue)
    prompts = queues.app.prompts
    if qc is None or prompts is None or not (qc.announce_position or qc.announce_wait):
        return said
    if queues.ringing_now(caller):
        return said
    position = queues.position(caller)
    if position <= 0:
        return said
    wait = queues.estimated_wait(caller) if qc.announce_wait else None
    minutes = None if wait is None else math.ceil(wait / 60)
    if said is not None and qc.announce_only_better:
        better = position < said[0] or (
            minutes is not None and said[1] is not None and minutes < said[1])
        if not better:
            return said
    section = queues.app.config.prompts
    texts = []
    if qc.announce_position:
        texts.append(section.queue_next if position == 1 else
                     section.queue_position.replace("{position}", str(position)))
    if minutes is not None:
        texts.append(section.queue_wait_short if minutes <= 1 else
                     section.queue_wait.replace("{minutes}", str(minutes)))
    clips = [await asyncio.to_thread(prompts.text_clip, text) for text in texts]
    if clips:
        await caller.local.play(PlaylistSource(clips))
    return position, minutes


async def _sent_away(queues: Queues, caller: QueueCaller, outcome: str = "unassigned") -> None:
    """The queue gave up on the caller: its route, or a polite message and goodbye."""
    qc = queues.config(caller.queue)
    prompts = queues.app.prompts
    assert prompts is not None
    route = qc.on_timeout if qc is not None and outcome == "timeout" else None
    queues.release(caller)
    if route is not None and caller.hops < MAX_HOPS:
        await follow(queues, caller.local, route, caller.hops + 1)
        return
    await caller.local.play(prompts.get("queue_timeout" if outcome == "timeout"
                                        else "queue_closed"))


async def follow(queues: Queues, call: LocalCall, route: Route, hops: int) -> None:
    """Send an answered caller on along ``route`` (a user, a ring group, an IVR, a queue)."""
    app = queues.app
    target = route_target(app.config, route)
    prompts = app.prompts
    assert prompts is not None
    if isinstance(target, ToQueue):
        await join_and_wait(queues, call, target.name, hops)
        return
    if isinstance(target, ToIvr):
        await ivr_service(target.name, lambda: app.config, lambda: prompts)(call)
        return
    if isinstance(target, ToUser | ToRingGroup):
        code = await call.connect(target)
        if code is None:
            return
        await call.play(prompts.get("unavailable"))
        return
    await call.play(prompts.get("not_found"))


def agent_services(queues: Queues) -> dict[str, tuple[str, Service]]:
    """The agents' feature codes (``features.agent_*``): log in, log out, pause, unpause in
    every queue the caller is a member of, confirmed by a short announcement."""

    def service(action: str) -> Service:
        async def run(call: LocalCall) -> None:
            prompts = queues.app.prompts
            assert prompts is not None
            uid = call.caller.id
            try:
                if action == "login":
                    queues.ops.agent_login(uid)
                elif action == "logout":
                    queues.ops.agent_logout(uid)
                elif action == "pause":
                    queues.ops.agent_pause(uid, "paused from phone")
                else:
                    queues.ops.agent_unpause(uid)
            except QueueControlError:
                await call.play(prompts.get("agent_not_member"))
                return
            logger.info("agent %s: %s from phone", uid, action)
            done = {"login": "logged_in", "logout": "logged_out", "pause": "paused",
                    "unpause": "unpaused"}[action]
            await call.play(prompts.get(f"agent_{done}"))

        return run

    return {f"agent_{action}": (f"agent {action}", service(action))
            for action in ("login", "logout", "pause", "unpause")}
