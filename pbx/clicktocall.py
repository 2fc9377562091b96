"""Click-to-call: a CRM user clicks a number and their own phone rings first.

The PBX places a call to the agent's registered phones with an auto-answer hint
(``Call-Info: <...>;answer-after=0`` and ``Alert-Info: ...;info=alert-autoanswer``, which
Yealink, Polycom, Grandstream and most softphones honour); once the agent's phone is up it
dials the number the way the agent would (an extension, one of our numbers, or an outside
number through the trunks with the agent's caller ID), the agent hearing ringback, and moves the
agent's phone onto the relay when the other side answers. The whole call is one record, an
outbound (or internal) call of the agent; its progress is in the event stream like any call.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from .callstate import utcnow
from .localcall import CallerGone
from .originate import Origination
from .queueviews import QueueControlError, QueueNotFound
from .records import CallEnded, CallStarted
from .routing import ToOutside, ToRingGroup, ToUser, route_dialled

if TYPE_CHECKING:
    from .sipapp import SipApp

logger = logging.getLogger(__name__)

#: How long the agent's phone may take to pick up (auto-answer is near instant).
AGENT_TIMEOUT = 30.0
AUTO_ANSWER = (("Call-Info", "<sip:pbx>;answer-after=0"),
               ("Alert-Info", "<http://localhost>;info=alert-autoanswer"))


class ClickToCall:
    """Starts click-to-call calls (see the module)."""

    def __init__(self, app: SipApp) -> None:
        self.app = app

    def start(self, agent: str, number: str, *, auto_answer: bool = True) -> str:
        """Ring ``agent``'s phone, then dial ``number``; returns the call id at once.
        Raises :class:`QueueNotFound` (unknown user) or :class:`QueueControlError` (no
        registered phone, a number the agent may not dial) with the reason."""
        app = self.app
        user = app.config.user_by_id(agent)
        if user is None:
            raise QueueNotFound(f"no user {agent!r}")
        if not app.lookup(agent):
            raise QueueControlError(f"{agent} has no registered phone to ring")
        text = number.strip()
        target = route_dialled(app.config, text, from_trunk=False, caller=user)
        if not isinstance(target, ToUser | ToRingGroup | ToOutside):
            raise QueueControlError(f"{number!r} cannot be dialled from {agent}'s phone")
        if isinstance(target, ToUser) and target.user.id == agent:
            raise QueueControlError("an agent cannot call their own phone")
        call_id = str(uuid.uuid4())
        started = utcnow()
        app.records.emit(CallStarted(
            call_id=call_id, sip_call_id=f"click-to-call:{call_id}",
            direction="outbound" if isinstance(target, ToOutside) else "internal",
            from_number=user.extension, from_name=user.name or user.id, to_number=text,
            caller_user=agent,
            callee_user=target.user.id if isinstance(target, ToUser) else None,
            started_at=started,
        ))
        app.flush()
        app.spawn(self._run(call_id, agent, text, target, auto_answer))
        logger.info("click-to-call %s: ringing %s for %s", call_id, agent, text)
        return call_id

    async def _run(self, call_id: str, agent: str, number: str,
                   target: ToUser | ToRingGroup | ToOutside, auto_answer: bool) -> None:
        app = self.app
        user = app.config.user_by_id(agent)
        assert user is not None
        placed = await app.calls.local.originator.call_users(
            [user], call_id=call_id, shown_number=number, shown_name=f"Calling {number}",
            number=number, timeout=AGENT_TIMEOUT, headers=AUTO_ANSWER if auto_answer else ())
        result = await placed.result if isinstance(placed, Origination) else placed
        if isinstance(result, int):
            self._failed(call_id, result, f"{agent}'s phone did not answer ({result})")
            return
        leg = result
        leg.placed = False  # the agent is the caller of this call's record
        leg.missed = True  # until the other side answers
        try:
            code = await leg.connect(target)
        except CallerGone:
            return  # the agent hung up while it rang: the leg's end is the record's end
        if code is None:
            return  # talking: the bridged call keeps the record
        logger.info("click-to-call %s: %s did not answer (%d)", call_id, number, code)
        prompts = app.prompts
        try:
            if prompts is not None:
                await leg.play(prompts.get("busy" if code in (486, 600) else "unavailable"))
        except CallerGone:
            return
        app.calls.local.hangup(leg, f"callee answered {code}")
        app.flush()

    def _failed(self, call_id: str, code: int, cause: str) -> None:
        now = utcnow()
        self.app.records.emit(CallEnded(call_id, now, "failed", cause, "system", code,
                                        0.0, 0.0))
        self.app.flush()
        logger.info("click-to-call %s: %s", call_id, cause)
