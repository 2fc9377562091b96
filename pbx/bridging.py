"""Connecting a caller the PBX has answered itself (an IVR, later a queue) to a phone.

The caller is already in a dialog with the PBX, talking to a local media leg
(:class:`pbx.localcall.LocalCall`). :meth:`LocalBridge.bridge_local` makes a :class:`Call` whose A
side *is* that dialog: its B side rings like any call (the plan's steps, with ringback played
to the caller on the local leg), and when a phone answers, the caller is moved onto the relay
with a re-INVITE (RFC 3261 14: a new offer in the existing dialog) whose SDP points at the
relay's A port. Once the caller has accepted it, the local leg is closed and the call goes on
as a bridged call under the same id, so it keeps one record. If nobody answers, the caller stays
with the local leg and the service hears why (the SIP status) and goes on (the IVR plays its
"unavailable" prompt).

Mixed into :class:`pbx.calls.CallController`, which owns the state used here.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

from media.tones import ringback as ringback_tone
from sip.message import Response

from .callstate import Call, CallObserver, Fork, RingStep, Side, user_id, utcnow
from .records import CallAnswered

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from sip.dialog import Dialog
    from sip.transaction import Peer

    from .localcall import LocalCall, LocalCalls
    from .sipapp import SipApp

logger = logging.getLogger(__name__)


class LocalBridge:
    """Bridging answered local calls to phones."""

    app: SipApp
    calls: dict[str, Call]
    local: LocalCalls
    _dialogs: dict[tuple[str, str], tuple[Call, Side]]

    if TYPE_CHECKING:
        async def _start(self, call: Call) -> None: ...

        def ack_2xx(self, dialog: Dialog, peer: Peer, resp: Response) -> None: ...

        def request_in_dialog(self, dialog: Dialog, peer: Peer, method: str, body: bytes,
                              on_final: Callable[[Response | None], None]) -> None: ...

        def hangup(self, call: Call, cause: str) -> None: ...

        def _cancel_fork(self, fork: Fork, call: Call, *, completed_elsewhere: bool) -> None: ...

        def _fail_a(self, call: Call, code: int, cause: str, disposition: str,
                    reason: str | None = None) -> None: ...

        def _relay_answer(self, call: Call, from_side: Side, body: bytes,
                          rename: tuple[str, str] | None = None) -> bytes: ...

    def bridge_local(self, local: LocalCall, plan: list[RingStep], *, to_number: str,
                     group: str | None = None, ringback: bool = True,
                     observer: CallObserver | None = None,
                     headers: tuple[tuple[str, str], ...] = (),
                     caller_name: str | None = None) -> asyncio.Future[int | None]:
        """Ring ``plan`` for the caller of ``local``; the future gets None once the caller is
        talking to whoever answered, else the SIP status of the failure. Without
        ``ringback`` the caller keeps hearing what plays now (a queue's music); ``observer``
        hears of each phone that fails, the answer and the end (a queue counts its offers);
        ``headers`` go on every INVITE to the phones, whose display shows ``caller_name``
        (when given) for the caller."""
        assert local.dialog is not None and local.offer is not None and plan
        loop = asyncio.get_running_loop()
        result: asyncio.Future[int | None] = loop.create_future()
        first = next((u for step in plan for u in step.users), None)
        call = Call(
            id=local.id, caller=local.caller, callee=first or local.caller,
            a_invite=local.invite, a_key=local.txn_key, a_peer=local.peer, a_tag=local.tag,
            a_offer=local.offer, started=local.started, plan=plan, group=group,
        )
        call.a_local = local
        call.a_called = local.placed
        call.a_dialog = local.dialog
        call.bridge_result = result
        call.to_number = to_number
        # RFC 3264 8: the caller's dialog keeps its o= session id and versions.
        call.sdp_ids = {"a": local.sdp_id, "b": int(uuid.uuid4().int % 10**9)}
        call.sdp_version["a"] = local.sdp_version
        call.max_forwards = 69
        call.observer = observer
        call.extra_headers = headers
        call.caller_name = caller_name
        self.calls[call.id] = call
        local.bridge = call
        if ringback:
            local.stream(ringback_tone())
        call.setup_task = self.app.spawn(self._start(call))
        return result

    def _answered_for_local(self, call: Call, body: bytes) -> None:
        """A phone answered a bridged local call: move the caller onto the relay."""
        local = call.a_local
        assert local is not None and call.a_dialog is not None
        dialog, peer = call.a_dialog, call.a_peer
        call.reinvite_pending = True

        def moved(resp: Response | None) -> None:
            call.reinvite_pending = False
            if resp is not None and 200 <= resp.status < 300:
                self.ack_2xx(dialog, peer, resp)  # every 2xx is ACKed (RFC 3261 13.2.2.4)
            if resp is None or not 200 <= resp.status < 300 or call.state != "answered":
                logger.info("call %s: the caller could not be moved to the answering phone",
                            call.id)
                # The phone answered, but the caller never reached it: that leg failed (the
                # caller goes back to where they were, e.g. a queue, and may reach another).
                leg = call.party_legs.get("b")
                if leg is not None:
                    code = resp.status if resp is not None and resp.status >= 300 else None
                    self.app.records.emit(leg.event(call.id, "failed", code, utcnow()))
                    del call.party_legs["b"]
                if call.state == "answered":
                    self.hangup(call, "caller refused the media change")
                return
            if resp.body and resp.content_type == "application/sdp":
                self._relay_answer(call, "a", resp.body)
            self.local.hand_over(local)
            self._dialogs[(dialog.call_id, dialog.local_tag)] = (call, "a")
            app = self.app
            call.answered_at = utcnow()
            call.answered_mono = app.now()
            if app.record_calls and app.recordings is not None and call.relay is not None:
                app.recordings.start(call.id, call.relay, app.now())
            app.records.emit(CallAnswered(call.id, call.answered_at, user_id(call.callee),
                                          (call.answered_at - call.started).total_seconds()))
            result = call.bridge_result
            if result is not None and not result.done():
                result.set_result(None)
            app.flush()

        self.request_in_dialog(dialog, peer, "INVITE", body, moved)

    def _local_failed(self, call: Call, code: int) -> None:
        """Nobody took a bridged local call: the caller stays with the local leg."""
        result = call.bridge_result
        local = call.a_local
        if local is not None:
            local.bridge = None
        if result is not None and not result.done():
            result.set_result(code)

    def withdraw(self, call: Call, users: Collection[str], cause: str) -> None:
        """Stop ringing ``users``' phones for a bridged local call (a queue offer that ran out
        of time or went to someone else). When no phone is left ringing, the call ends
        unanswered at once, without waiting for the phones' 487s; the caller stays where it
        was (a queue's music) and may be offered again."""
        if call.state not in ("setup", "ringing"):
            return
        for fork in call.forks.values():
            if not fork.done and fork.user is not None and fork.user.id in users:
                self._cancel_fork(fork, call, completed_elsewhere=False)
        live = [f for f in call.forks.values()
                if not f.done and not f.cancelled and not f.cancel_pending]
        if not live:
            if call.ring_timer is not None:
                call.ring_timer.cancel()
                call.ring_timer = None
            self._fail_a(call, 480, cause, "no_answer")
