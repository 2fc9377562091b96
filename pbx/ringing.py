"""Ringing: a call's plan of steps (a user's phones, a ring group's members, outside trunks),
ring groups, what happens when nobody answers, and the legs of the call record (each user whose
phones rang, each number dialled, and what became of it: :class:`pbx.records.CallLeg`).

Mixed into :class:`pbx.calls.CallController`, which owns the state used here.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

from media.sdp import SessionDescription
from sip.dialog import new_tag
from sip.message import Request
from sip.registrar import Binding
from sip.transaction import Peer

from .callerlookup import start_lookup, wait_lookup
from .callstate import (
    Call,
    Fork,
    LegState,
    Outsider,
    RingStep,
    best_failure,
    leg_numbers,
    leg_result,
    new_leg,
    utcnow,
)
from .presence import PresenceState
from .routing import (
    AVAILABLE,
    Target,
    ToIvr,
    ToOutside,
    ToRingGroup,
    ToUser,
    ring_plan,
    route_target,
)
from .trunkcalls import try_next_trunk

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from .config import User
    from .localcall import LocalCall, LocalCalls, Service
    from .prompts import Prompts
    from .queues import Queues
    from .queueviews import CallerRecord
    from .sipapp import SipApp


logger = logging.getLogger(__name__)

#: Ring group fallbacks followed by one call at most.
_MAX_HOPS = 5
#: The longest an outside caller's phones wait for the CRM to name the caller (then they
#: ring showing the trunk's display name).
NAME_LOOKUP_TIMEOUT = 0.5
#: What became of the legs still ringing when a call ends, by the call's disposition.
_END_RESULT = {"cancelled": "cancelled", "no_answer": "no_answer", "answered": "elsewhere"}


class Ringing:
    """Plans of ring steps, ring groups, fallbacks."""

    app: SipApp
    name_lookup: Callable[[str], CallerRecord | None] | None
    """The CRM record of an outside caller's number (blocking: run in the look-up pool)."""
    local: LocalCalls
    queues: Queues | None

    if TYPE_CHECKING:
        def _begin(self, call: Call, req: Request, key: str, *, to_number: str,
                   callee_user: str | None, direction: str | None = None) -> None: ...

        def _cancel_fork(self, fork: Fork, call: Call, *, completed_elsewhere: bool) -> None: ...

        def _end(self, call: Call, disposition: str, cause: str, by: str | None,
                 code: int | None, *, record: bool = True) -> None: ...

        def _fail_a(self, call: Call, code: int, cause: str, disposition: str,
                    reason: str | None = None) -> None: ...

        def _ivr(self, name: str) -> Service: ...

        def _on_a_call(self, user_id: str, ignore: Call | None = None) -> bool: ...

        def _prompts(self) -> Prompts: ...

        def _send_fork(self, call: Call, binding: Binding, callee: User,
                       leg: LegState | None = None) -> None: ...

        def _send_trunk_fork(self, call: Call, step: RingStep, peer: Peer,
                             leg: LegState | None = None) -> None: ...

    def _call_group(self, req: Request, peer: Peer, key: str, caller: User | Outsider,
                    target: ToRingGroup, offer: SessionDescription | None, dialled: str,
                    ) -> None:
        """A ring group: its members ring step by step (see :meth:`_next_step`); when nobody
        answers, the group's fallback route, else the unavailable prompt."""
        plan = self._group_plan(target)
        first = plan[0].users[0] if plan else caller
        call = Call(
            id=str(uuid.uuid4()), caller=caller, callee=first, a_invite=req, a_key=key,
            a_peer=peer, a_tag=new_tag(), a_offer=offer, started=utcnow(), plan=plan,
            group=target.name, fallback=target.group.fallback,
        )
        self._begin(call, req, key, to_number=dialled or target.name, callee_user=None)

    def plan_for(self, target: Target) -> tuple[list[RingStep], str | None] | tuple[int, None]:
        """What ringing ``target`` means now (steps, and the ring group's name), or the SIP
        status why nobody can be rung (used when an IVR connects a caller)."""
        app = self.app
        if isinstance(target, ToUser):
            user = target.user
            presence = app.presence.get(user.id)
            if presence is PresenceState.DO_NOT_DISTURB:
                return 486, None
            if presence is not PresenceState.AVAILABLE or not app.lookup(user.id):
                return 480, None
            if not user.call_waiting and self._on_a_call(user.id):
                return 486, None
            return [RingStep((user,), app.ring_timeout)], None
        if isinstance(target, ToRingGroup):
            plan = self._group_plan(target)
            return (plan, target.name) if plan else (480, None)
        if isinstance(target, ToOutside):
            # Through the trunks in order, the next when one fails (a queue's callback).
            seconds = max(app.ring_timeout, 60.0)
            steps = [RingStep((), seconds, trunk, target.e164) for trunk in target.trunks]
            return (steps, None) if steps else (403, None)
        return 404, None

    def _group_plan(self, target: ToRingGroup) -> list[RingStep]:
        app = self.app
        states: dict[str, str] = {}
        for member in target.group.members:
            user = app.config.user_by_id(member)
            if user is None:
                continue
            presence = app.presence.get(member)
            if presence is not PresenceState.AVAILABLE:
                states[member] = presence.value
            elif not app.lookup(member):
                states[member] = "unregistered"
            elif not user.call_waiting and self._on_a_call(member):
                states[member] = "on_call"
            else:
                states[member] = AVAILABLE
        steps = ring_plan(target.group, states, app.config.user_index())
        seconds = float(target.group.ring_seconds)
        return [RingStep(tuple(users), seconds) for users in steps]

    def _next_step(self, call: Call) -> None:
        """Ring the next step of the call's plan that has a phone to ring; when none is left,
        the call is unanswered. Users on a call (without call waiting) and users with no
        registered phone are skipped without using up their time."""
        app = self.app
        while call.state == "ringing":
            call.step += 1
            if call.step >= len(call.plan):
                self._unanswered(call)
                return
            step = call.plan[call.step]
            sent = 0
            if step.trunk is not None:
                trunk_peer = call.trunk_peers.get(step.trunk.name)
                if trunk_peer is not None:
                    leg = self._new_leg(call, number=step.number, outside=True)
                    self._send_trunk_fork(call, step, trunk_peer, leg)
                    sent += 1
            for user in step.users:
                if not app.presence.available(user.id):
                    continue
                if not user.call_waiting and self._on_a_call(user.id, call):
                    continue
                bindings = app.lookup(user.id)
                if not bindings:
                    continue
                leg = self._new_leg(call, user=user.id)  # one leg for all the user's phones
                for binding in bindings:
                    self._send_fork(call, binding, user, leg)
                    sent += 1
            if sent:
                call.ring_timer = asyncio.get_running_loop().call_later(
                    step.seconds, self._step_timeout, call, call.step)
                return

    def _step_timeout(self, call: Call, step: int) -> None:
        call.ring_timer = None
        if call.state != "ringing" or call.step != step:
            return
        call.timed_out = True
        for leg in self._open_legs(call, step):
            self._leg_done(call, leg, "no_answer")
        for fork in call.forks.values():
            if fork.step == step and not fork.done:
                self._cancel_fork(fork, call, completed_elsewhere=False)
        self._next_step(call)
        self.app.flush()

    def _step_failed(self, call: Call, fork: Fork) -> None:
        """A phone refused or failed: when every phone of the ringing step has, move on."""
        if call.state != "ringing" or fork.step != call.step:
            return
        if fork.trunk is not None and not try_next_trunk(fork.status or 500):
            call.step = len(call.plan) - 1  # the number itself was refused: no failover
        if all(f.done for f in call.forks.values() if f.step == call.step):
            if call.ring_timer is not None:
                call.ring_timer.cancel()
                call.ring_timer = None
            self._next_step(call)

    def _unanswered(self, call: Call) -> None:
        """Every step has rung (or had nobody to ring) without an answer."""
        if call.group is not None and call.a_local is None and self._group_fallback(call):
            return
        if call.timed_out:
            self._fail_a(call, 480, "no answer", "no_answer", reason="No Answer")
            return
        codes = [f.status or 500 for f in call.forks.values()]
        if not codes:
            self._fail_a(call, 480, "nobody to ring", "unavailable")
            return
        best = best_failure(codes)
        disposition = {486: "busy", 600: "busy", 603: "rejected"}.get(best, "failed")
        if best in (408, 480, 487):
            disposition = "no_answer"
        self._fail_a(call, best, f"callee answered {best}", disposition)

    def _group_fallback(self, call: Call) -> bool:
        """Nobody in a ring group answered: follow its fallback route (ringing on in the same
        call), or answer and play the unavailable prompt. False to fail the call as usual."""
        app = self.app
        route, call.fallback = call.fallback, None
        call.hops += 1
        target = route_target(app.config, route) if route is not None else None
        if isinstance(target, ToUser) and call.hops <= _MAX_HOPS:
            call.plan = [RingStep((target.user,), app.ring_timeout)]
            call.step, call.group = -1, None
            self._next_step(call)
            return True
        if isinstance(target, ToRingGroup) and call.hops <= _MAX_HOPS:
            call.plan, call.step = self._group_plan(target), -1
            call.group, call.fallback = target.name, target.group.fallback
            self._next_step(call)
            return True
        if call.a_offer is None:
            return False  # a delayed offer: the PBX cannot answer with media of its own
        if isinstance(target, ToIvr):
            self._hand_to_local(call, self._ivr(target.name), f"ivr {target.name}")
            return True
        prompts = self._prompts

        async def unavailable(local: LocalCall) -> None:
            await local.play(prompts().get("unavailable"))

        self._hand_to_local(call, unavailable, "nobody available", missed=True)
        return True

    def _hand_to_local(self, call: Call, service: Service, name: str, *,
                       missed: bool = False) -> None:
        """The PBX answers the still-ringing caller itself and runs ``service``; the call's
        record goes on under the same id."""
        self.local.take_over(call, service, name, missed=missed)
        self._end(call, "answered", name, "system", None, record=False)

    # -- legs of the call record (pbx.records.CallLeg) -------------------------------------
    def _new_leg(self, call: Call, *, user: str | None = None, number: str | None = None,
                 outside: bool = False) -> LegState:
        """A leg for the phones of ``user`` (or ``number`` through a trunk) about to ring."""
        local = call.a_local
        queue: str | None = None
        if call.leg_queue is not None:
            kind, queue = "queue", call.leg_queue
        elif local is not None and local.leg_kind is not None:
            kind, queue = local.leg_kind, local.leg_queue  # a callback dialling the customer
        else:
            kind = "outside" if outside else "ring"
        if user is not None and self.app.on_offer is not None:
            self.app.on_offer(call.id, user)  # the user's screen pops as their phones ring
        return new_leg(call.id, leg_numbers(call), kind, user=user, number=number, queue=queue)

    def _leg_done(self, call: Call, leg: LegState, result: str, code: int | None = None,
                  ) -> None:
        leg.done = True
        self.app.records.emit(leg.event(call.id, result, code, utcnow()))

    @staticmethod
    def _open_legs(call: Call, step: int | None = None) -> list[LegState]:
        """The legs of ``call`` (of ring step ``step``) whose outcome is not known yet."""
        found: dict[str, LegState] = {}
        for fork in call.forks.values():
            leg = fork.leg
            if leg is not None and not leg.done and (step is None or fork.step == step):
                found[leg.id] = leg
        return list(found.values())

    def close_legs(self, call: Call, users: Collection[str] | None, result: str) -> None:
        """The legs of ``call`` still ringing (only ``users``', when given) end with
        ``result``: called before the PBX stops them, so the record says why (the caller gave
        up, a queue's offer ran out or went to someone else)."""
        for leg in self._open_legs(call):
            if users is None or leg.user in users:
                self._leg_done(call, leg, result)

    def _leg_fork_ended(self, call: Call, fork: Fork) -> None:
        """A phone refused or failed: its leg ends once every phone of it has (the best of
        their answers says how, RFC 3261 16.7 step 6)."""
        leg = fork.leg
        if leg is None or leg.done:
            return
        forks = [f for f in call.forks.values() if f.leg is leg]
        if all(f.done for f in forks):
            self._leg_done(call, leg, *leg_result([f.status or 500 for f in forks]))

    def _leg_answered(self, call: Call, fork: Fork) -> None:
        """``fork``'s phone answered the call: its leg is answered, every other one still
        ringing was answered elsewhere."""
        leg = fork.leg
        if leg is not None:
            leg.answered_at = utcnow()
            leg.done = True
            self.app.records.emit(leg.event(call.id, "answered"))
            call.party_legs["b"] = leg
        local = call.a_local
        if local is not None and local.party_leg is not None:
            call.party_legs["a"] = local.party_leg  # a callback's agent, for a transfer
        for other in self._open_legs(call):
            self._leg_done(call, other, "elsewhere")

    def _end_legs(self, call: Call, disposition: str, code: int | None) -> None:
        """The call ends with legs still ringing (a fault, a shutdown, a withdrawn offer)."""
        result = _END_RESULT.get(disposition, "failed")
        for leg in self._open_legs(call):
            self._leg_done(call, leg, result, code if result == "failed" else None)

    # -- the caller's name from the CRM ----------------------------------------------------
    def _start_name_lookup(self, call: Call) -> asyncio.Future[CallerRecord | None] | None:
        """Ask the CRM who an outside caller is, so the phones can show their name (a queue
        names its callers itself, before it offers them)."""
        caller = call.caller
        lookup = self.name_lookup
        if lookup is None or not isinstance(caller, Outsider) or call.caller_name is not None \
                or call.observer is not None or not any(ch.isdigit() for ch in caller.number):
            return None
        return start_lookup(lookup, caller.number)

    async def _caller_name(self, call: Call,
                           lookup: asyncio.Future[CallerRecord | None] | None,
                           timeout: float) -> None:
        """Wait for the look-up (at most ``timeout`` seconds) and name the caller from it."""
        if lookup is None:
            return
        match = await wait_lookup(lookup, call.caller.extension, timeout, None, "ringing")
        # A record with neither a name nor a company is "named" by its number: the trunk's
        # display name says more.
        if match is not None and any(ch.isalpha() for ch in match.name):
            call.caller_name = match.name
