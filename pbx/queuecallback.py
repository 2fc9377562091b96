"""Callbacks that keep the caller's place in line.

A waiting caller presses the queue's ``callback_key``, confirms the number to be called back
at (the number they call from, or digits they key in, ended by ``#``), and hangs up. Their
entry stays in the line, marked as a callback, and counts in everyone's position. When its
turn comes the queue offers it like any caller, but the PBX rings the *agent* first
(:mod:`pbx.originate`); the agent who answers hears a short notice and ringback while the PBX
dials the customer (an extension directly, an outside number through the trunks with the
agent's caller ID), and once the customer answers the agent's phone is moved onto the relay.
If the customer does not answer, the attempt is counted in the call record and the callback
goes back to the front of the line after ``callback_retry``, at most ``callback_attempts``
times. One attempt runs at a time, so a customer is never dialled twice at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from media.sources import PlaylistSource

from .acd import AcdError
from .callstate import Outsider
from .config_routing import e164
from .localcall import CallerGone, LocalCall
from .originate import Origination
from .records import CallAnswered, CallQueued
from .routing import Refuse, ToOutside, ToUser, route_dialled

if TYPE_CHECKING:
    from .queues import QueueCaller, Queues

logger = logging.getLogger(__name__)

#: The longest keyed callback number, and the wait for each of its keys.
MAX_DIGITS = 20
DIGIT_TIMEOUT = 10.0


async def ask_callback(queues: Queues, caller: QueueCaller) -> bool:
    """The caller pressed the callback key: ask for the number and confirm. True when the
    callback is set (the caller may hang up; the PBX hangs up after the confirmation)."""
    call = caller.local
    prompts = queues.app.prompts
    assert prompts is not None
    own = _callable_number(queues, call.caller)
    choice = await call.play(prompts.get("callback_offer"), barge_in=True) \
        or await call.key(DIGIT_TIMEOUT)
    number: str | None = None
    if choice == "1" and own is not None:
        number = own
    elif choice == "2" or (choice == "1" and own is None):
        digits = await _keyed_number(call, prompts.get("callback_enter"))
        number = _normalise(queues, digits) if digits else None
    if number is None:
        if choice is not None:
            await call.play(prompts.get("invalid_choice"))
        return False
    state = queues.states.get(caller.queue)
    if state is None or not state.has(call.id):
        return False
    # The entry becomes a callback when this line is gone (see pbx.queuewait._wait).
    caller.callback_number = number
    queues.app.records.emit(CallQueued(call.id, caller.queue, "callback",
                                       round(queues.app.now() - caller.arrived, 3), None,
                                       caller.rule, number))
    logger.info("queue %s: caller %s asked for a callback at %s (position %d)",
                caller.queue, caller.caller_number, number, queues.position(caller))
    await call.play(prompts.get("callback_confirmed"))
    await call.wait_ended(10.0)
    return True


async def _keyed_number(call: LocalCall, prompt: PlaylistSource) -> str:
    first = await call.play(prompt, barge_in=True)
    digits = ""
    key = first
    while len(digits) <= MAX_DIGITS:
        if key is None:
            key = await call.key(DIGIT_TIMEOUT)
        if key is None or key == "#":
            break
        if key.isdigit():
            digits += key
        key = None
    return digits


def _callable_number(queues: Queues, party: object) -> str | None:
    if isinstance(party, Outsider):
        return party.number if party.number.startswith("+") else None
    extension = getattr(party, "extension", None)
    return extension if isinstance(extension, str) else None


def _normalise(queues: Queues, digits: str) -> str | None:
    config = queues.app.config
    if config.user_by_extension(digits) is not None:
        return digits
    return e164(digits, config.dialplan.region)


# -- the callback's turn ----------------------------------------------------------------------
def start_callback(queues: Queues, caller: QueueCaller, agents: tuple[str, ...]) -> None:
    """The queue offers a callback to ``agents``: ring them, then dial the customer."""
    queues.app.spawn(_run(queues, caller, agents))


async def _run(queues: Queues, caller: QueueCaller, agents: tuple[str, ...]) -> None:
    app = queues.app
    config = app.config
    users = [u for u in (config.user_by_id(a) for a in agents) if u is not None]
    number = caller.callback_number
    assert number is not None
    qc = queues.config(caller.queue)
    ring = float(qc.ring_timeout) if qc is not None else 20.0
    state = queues.states.get(caller.queue)
    orig = await app.calls.local.originator.call_users(
        users, call_id=caller.local.id, shown_number=number,
        shown_name=f"Callback {number}", number=number, timeout=ring + 30.0,
        headers=(("X-Queue", caller.queue),),
        # The agents rung and the customer dialled are legs of the caller's own record.
        leg_kind="callback", leg_queue=caller.queue, leg_numbers=caller.local.leg_numbers,
    )
    if not isinstance(orig, Origination):
        for uid in agents:
            queues.offer_outcome(caller, uid, "missed")
        return
    caller.callback_offer = orig
    orig.on_fail = lambda uid, code: queues.offer_outcome(
        caller, uid, "rejected" if code in (486, 600, 603) else "missed")
    result = await orig.result
    caller.callback_offer = None
    if isinstance(result, int):
        if state is not None and state.has(caller.local.id):
            for view in state.waiting(app.now()):
                if view.call_id == caller.local.id:
                    for uid in view.offered_to:
                        queues.offer_outcome(caller, uid, "missed")
        queues.kick()
        return
    agent_leg = result
    agent_leg.missed = True  # the agent's leg alone is not an answered call
    agent = agent_leg.caller.id
    try:
        callback_answered(queues, caller, agent)
    except AcdError:
        logger.warning("queue %s: %s answered a callback outside an offer", caller.queue, agent)
    await _dial_customer(queues, caller, agent_leg, agent, number)


async def _dial_customer(queues: Queues, caller: QueueCaller, agent_leg: LocalCall,
                         agent: str, number: str) -> None:
    app = queues.app
    prompts = app.prompts
    assert prompts is not None
    caller.callback_attempts += 1
    user = app.config.user_by_id(agent)
    target = route_dialled(app.config, number, from_trunk=False, caller=user) \
        if user is not None else Refuse(404, "not_found", "not_found")
    code: int | None = 404
    try:
        await agent_leg.play(prompts.get("callback_connecting"))
        if isinstance(target, ToUser | ToOutside):
            code = await agent_leg.connect(target)
        if code is None:
            logger.info("queue %s: callback to %s connected to %s (attempt %d)", caller.queue,
                        number, agent, caller.callback_attempts)
            app.records.emit(CallAnswered(caller.local.id, agent_leg.answered_at or
                                          caller.local.started, agent, 0.0))
            app.records.emit(CallQueued(caller.local.id, caller.queue, "answered",
                                        round(app.now() - caller.arrived, 3), agent,
                                        caller.rule, number, caller.callback_attempts))
            callback_done(queues, caller)
            return
        await agent_leg.play(prompts.get("unavailable"))
    except CallerGone:
        pass
    finally:
        if code is not None:
            callback_failed(queues, caller, agent, code)
    if agent_leg.state == "answered":
        app.calls.local.hangup(agent_leg, "callback not answered")


def retry_later(queues: Queues, caller: QueueCaller, delay: float) -> None:
    """Put a callback whose customer did not answer back in line after ``delay``."""
    loop = asyncio.get_running_loop()
    loop.call_later(delay, requeue_callback, queues, caller)


# -- the queue's side of a callback ----------------------------------------------------------
def set_callback(queues: Queues, caller: QueueCaller, number: str) -> None:
    """The caller's line is gone and they wait for a callback at ``number``."""
    caller.callback_number = number
    state = queues.states.get(caller.queue)
    if state is None or not state.has(caller.local.id):
        queues.callers.pop(caller.local.id, None)
        return
    state.set_callback(caller.local.id)
    queues.kick()


def callback_answered(queues: Queues, caller: QueueCaller, agent: str) -> None:
    """The agent answered a callback offer: theirs now; the customer is dialled next."""
    state = queues.states[caller.queue]
    now = queues.app.now()
    try:
        actions = state.offer_result(caller.local.id, agent, "answered", now)
    except AcdError:
        actions = state.pick(caller.local.id, agent, now)
    queues._run_actions(actions, now)


def callback_done(queues: Queues, caller: QueueCaller) -> None:
    """The customer answered: the callback is over for the queue."""
    queues.dialling.discard(caller.local.id)
    queues.callers.pop(caller.local.id, None)


def callback_failed(queues: Queues, caller: QueueCaller, agent: str, code: int) -> None:
    """The customer was not reached: the agent is free; retry later or give up."""
    call_id = caller.local.id
    queues.dialling.discard(call_id)
    info = queues._connected.pop(call_id, None)
    if info is not None:
        queues._agent_done_quietly(info[0], info[1])
    qc = queues.config(caller.queue)
    attempts = qc.callback_attempts if qc is not None else 1
    caller.connected_to = None
    queues._record(caller, "callback", queues.app.now() - caller.arrived, None)
    if caller.callback_attempts < attempts and qc is not None:
        logger.info("queue %s: callback to %s not answered (%d), attempt %d of %d; "
                    "again in %.0f s", caller.queue, caller.callback_number, code,
                    caller.callback_attempts, attempts, qc.callback_retry)
        retry_later(queues, caller, float(qc.callback_retry))
        return
    logger.info("queue %s: callback to %s given up after %d attempts", caller.queue,
                caller.callback_number, caller.callback_attempts)
    queues._record(caller, "callback_failed", queues.app.now() - caller.arrived, None)
    queues.callers.pop(call_id, None)


def requeue_callback(queues: Queues, caller: QueueCaller) -> None:
    """A callback whose customer did not answer goes back in line (its first place)."""
    state = queues.states.get(caller.queue)
    if state is None or state.has(caller.local.id):
        return
    state.arrive(caller.local.id, caller.callback_number or caller.caller_number,
                 caller.arrived, callback=True, priority=1, readmit=True)
    caller.admitted = True
    queues.kick()
