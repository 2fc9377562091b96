"""The B2BUA call controller: extension-to-extension calls with media anchored in the PBX.

Theory of operation. A call has an A leg (the caller's INVITE, answered by us as a UAS) and one B
leg per registered contact of the callee (forks, each its own Call-ID and client transaction, as a
forking proxy would send them). Every SDP that crosses the PBX is rewritten so both phones send
RTP to the PBX's relay (:mod:`media.udp`). The first fork to answer wins: the others are cancelled
with ``Reason: SIP;cause=200;text="Call completed elsewhere"`` (RFC 3326) so those phones log no
missed call. Once answered, requests inside either dialog (BYE, re-INVITE for hold/resume, INFO,
UPDATE, ...) are re-issued on the other dialog and their answers relayed back.

Everything here runs on the event loop thread, driven by transaction events; the only await is
opening the relay's sockets when a call starts.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from media.relay import Leg, NoPortsError
from media.sdp import (
    SdpError,
    SessionDescription,
    audio_endpoint,
)
from media.transcode import offer_both_g711
from sip.dialog import Dialog, new_call_id, new_tag
from sip.errors import LocalSipError
from sip.message import Headers, Request, Response, cancel_for
from sip.registrar import Binding
from sip.transaction import Peer
from sip.uri import Address, SipUri

from .bridging import LocalBridge
from .callmedia import CallMedia
from .callstate import (
    ALLOW,
    SUPPORTED,
    Call,
    Fork,
    Forwarded,
    LegState,
    Outsider,
    RingStep,
    Side,
    display_name,
    max_forwards,
    media_summary,
    user_id,
    utcnow,
)
from .config_routing import call_cost
from .indialog import InDialog
from .ivrservice import ivr_service
from .localcall import LocalCalls
from .presence import PresenceState
from .records import CallAnswered, CallEnded, CallStarted
from .ringing import NAME_LOOKUP_TIMEOUT, Ringing
from .routing import (
    Refuse,
    Target,
    ToIvr,
    ToOutside,
    ToQueue,
    ToRingGroup,
    ToService,
    ToUser,
    route_dialled,
)
from .services import builtin_services
from .transfer import Transfers
from .trunkcalls import TrunkCalls

if TYPE_CHECKING:

    from .config import User
    from .localcall import Service
    from .prompts import Prompts
    from .queues import Queues
    from .sipapp import SipApp

logger = logging.getLogger(__name__)

class CallController(InDialog, TrunkCalls, LocalBridge, Ringing, CallMedia):
    def __init__(self, app: SipApp) -> None:
        self.app = app
        self.calls: dict[str, Call] = {}
        self._by_server_key: dict[str, Call] = {}
        self._by_a_call_id: dict[str, Call] = {}
        self._forks: dict[str, tuple[Call, Fork]] = {}
        self._forwarded: dict[str, Forwarded] = {}
        self._byes: set[str] = set()
        self._dialogs: dict[tuple[str, str], tuple[Call, Side]] = {}
        self._acks: dict[tuple[str, str], tuple[Request, Peer]] = {}
        # Dialogs a transfer took a phone out of: a late BYE on them still gets its 200.
        self._departed: set[tuple[str, str]] = set()
        self.transfers = Transfers(self)
        self.local = LocalCalls(self)
        #: The call queues (set by the server once the controller exists).
        self.queues: Queues | None = None
        #: The CRM look-up that names outside callers on the phones (set by the server).
        self.name_lookup = None
        #: The PBX's own services by ``features:`` key; the config says which code reaches
        #: each (:func:`pbx.routing.route_dialled`).
        self.services: dict[str, tuple[str, Service]] = builtin_services(
            self._prompts, self._set_presence)

    def _prompts(self) -> Prompts:
        prompts = self.app.prompts
        if prompts is None:
            raise RuntimeError("prompts are not loaded")
        return prompts

    def _ivr(self, name: str) -> Service:
        return ivr_service(name, lambda: self.app.config, self._prompts)

    def _set_presence(self, user_id: str, state: PresenceState) -> None:
        self.app.presence.set(user_id, state, time.time())
        logger.info("user %s is now %s", user_id, state.value)

    # -- new calls ---------------------------------------------------------------------------
    def on_invite(self, req: Request, peer: Peer, key: str, caller: User | Outsider, *,
                  target: Target | None = None, dialled: str | None = None,
                  hops: int = 0) -> None:
        app = self.app
        dialled = dialled or req.uri.user or ""
        if target is None:
            assert not isinstance(caller, Outsider)
            target = route_dialled(app.config, dialled, from_trunk=False, caller=caller)
        if isinstance(target, ToService):
            service = self.services.get(target.feature)
            if service is not None:
                self.local.on_invite(req, peer, key, caller, service[1], service[0])
                return
            target = Refuse(404, "not_found", "not_found")
        if isinstance(target, ToIvr):
            self.local.on_invite(req, peer, key, caller, self._ivr(target.name),
                                 f"ivr {target.name}", number=dialled)
            return
        if isinstance(target, ToQueue) and self.queues is not None:
            did = dialled if app.config.number(dialled) is not None else None
            self.queues.on_invite(req, peer, key, caller, target.name, dialled, did=did,
                                  hops=hops)
            return
        if isinstance(target, ToUser | ToRingGroup | ToOutside):
            # SipApp has already refused bodies other than SDP (415) before authenticating.
            try:
                offer = SessionDescription.parse(req.body) if req.body else None
            except SdpError as e:
                app.respond(key, req, 400, f"Bad SDP: {e}"[:80], to_tag=new_tag())
                return
            if offer is not None and audio_endpoint(offer) is None:
                app.respond(key, req, 488, "No audio stream offered", to_tag=new_tag())
                return
            if isinstance(target, ToUser):
                self._call_user(req, peer, key, caller, target.user, offer, dialled)
            elif isinstance(target, ToRingGroup):
                self._call_group(req, peer, key, caller, target, offer, dialled)
            elif not isinstance(caller, Outsider):
                self._call_outside(req, peer, key, caller, target, offer)
            return
        code, cause = _refusal(target)
        self._record_attempt(str(uuid.uuid4()), req, caller, None, utcnow(), code, "failed",
                             cause)
        app.respond(key, req, code, to_tag=new_tag())

    def _call_user(self, req: Request, peer: Peer, key: str, caller: User | Outsider,
                   callee: User, offer: SessionDescription | None, dialled: str) -> None:
        app = self.app
        call_id = str(uuid.uuid4())
        started = utcnow()
        presence = app.presence.get(callee.id)
        if presence is not PresenceState.AVAILABLE:
            dnd = presence is PresenceState.DO_NOT_DISTURB
            self._record_attempt(call_id, req, caller, callee, started, 486 if dnd else 480,
                                 "busy" if dnd else "unavailable",
                                 "do not disturb" if dnd else "user offline")
            app.respond(key, req, 486 if dnd else 480, to_tag=new_tag())
            return
        if not callee.call_waiting and self._on_a_call(callee.id):
            self._record_attempt(call_id, req, caller, callee, started, 486, "busy",
                                 "callee on another call")
            app.respond(key, req, 486, to_tag=new_tag())
            return
        bindings = app.lookup(callee.id)
        if not bindings:
            self._record_attempt(call_id, req, caller, callee, started, 480, "unavailable",
                                 "callee not registered")
            app.respond(key, req, 480, to_tag=new_tag())
            return
        call = Call(
            id=call_id, caller=caller, callee=callee, a_invite=req, a_key=key, a_peer=peer,
            a_tag=new_tag(), a_offer=offer, started=started,
            plan=[RingStep((callee,), app.ring_timeout)],
        )
        to_number = callee.extension if dialled == callee.id else dialled
        self._begin(call, req, key, to_number=to_number, callee_user=callee.id)

    def _begin(self, call: Call, req: Request, key: str, *, to_number: str,
               callee_user: str | None, direction: str | None = None) -> None:
        app = self.app
        base = int(uuid.uuid4().int % 10**9)
        call.sdp_ids = {"a": base, "b": base + 1}
        call.max_forwards = max_forwards(req) - 1
        self.calls[call.id] = call
        self._by_server_key[key] = call
        self._by_a_call_id[req.call_id] = call
        caller = call.caller
        app.records.emit(
            CallStarted(
                call_id=call.id, sip_call_id=req.call_id,
                direction=direction or _direction(caller),
                from_number=caller.extension, from_name=display_name(caller),
                to_number=to_number, caller_user=user_id(caller), callee_user=callee_user,
                started_at=call.started,
            )
        )
        app.respond(key, req, 100)
        self.app.spawn(self._start(call))

    def _notify(self, call: Call, event: str, *args: object) -> None:
        """Tell the call's observer (a queue); its faults must not break the call."""
        try:
            getattr(call.observer, event)(call, *args)
        except Exception:
            logger.exception("call %s: observer failed on %s", call.id, event)

    def busy_users(self) -> set[str]:
        """Users on a call now (either end, answered or ringing them, or talking to one of
        the PBX's own services): one pass over the calls for the queues' tick."""
        busy: set[str] = set()
        for c in self.calls.values():
            if c.state == "ended":
                continue
            busy.add(c.caller.id)
            if c.state == "answered":
                busy.add(c.callee.id)
            elif 0 <= c.step < len(c.plan):
                busy.update(u.id for u in c.plan[c.step].users)
        for local in self.local.active.values():
            busy.add(local.caller.id)
        return busy

    def _on_a_call(self, user_id: str, ignore: Call | None = None) -> bool:
        """Whether ``user_id`` is in a call other than ``ignore``: its caller, its answered
        callee, or one of the phones ringing for it now."""
        for c in self.calls.values():
            if c is ignore or c.state == "ended":
                continue
            if c.caller.id == user_id:
                return True
            if c.state == "answered" or c.group is None:
                if c.callee.id == user_id:
                    return True
            elif 0 <= c.step < len(c.plan) and any(u.id == user_id for u in c.plan[c.step].users):
                return True
        return False

    def _record_attempt(
        self, call_id: str, req: Request, caller: User | Outsider, callee: User | None,
        started: datetime, code: int, disposition: str, cause: str,
    ) -> None:
        rec = self.app.records
        rec.emit(CallStarted(
            call_id=call_id, sip_call_id=req.call_id, direction=_direction(caller),
            from_number=caller.extension, from_name=display_name(caller),
            to_number=req.uri.user or "", caller_user=user_id(caller),
            callee_user=callee.id if callee else None, started_at=started,
        ))
        ended = utcnow()
        rec.emit(CallEnded(call_id=call_id, ended_at=ended, disposition=disposition,
                           hangup_cause=cause, hangup_by="system", sip_code=code,
                           duration=0.0, ring_seconds=(ended - started).total_seconds()))

    async def _start(self, call: Call) -> None:
        try:
            await self._open(call)
        except Exception:
            # A fault of ours must not leave the caller ringing forever.
            logger.exception("call %s: could not be set up", call.id)
            if call.state in ("setup", "ringing"):
                self._cancel_forks(call, completed_elsewhere=False)
                self._fail_a(call, 500, "internal error", "failed")
                self.app.flush()

    async def _open(self, call: Call) -> None:
        app = self.app
        # The CRM names an outside caller while the media ports open; the phones ring without
        # the name if it takes too long.
        deadline = app.now() + NAME_LOOKUP_TIMEOUT
        lookup = self._start_name_lookup(call)
        try:
            call.relay = await app.relay.open_session(app.media_bind_host)
        except (NoPortsError, OSError) as e:
            logger.error("call %s: no media ports: %s", call.id, e)
            if call.state == "setup":
                self._fail_a(call, 503, "no media ports", "failed")
                app.flush()
            return
        if call.state == "ended":
            await call.relay.close()
            return
        for step in call.plan:
            if step.trunk is not None and step.trunk.name not in call.trunk_peers:
                trunk_peer = await self._trunk_peer(step.trunk)
                if trunk_peer is not None:
                    call.trunk_peers[step.trunk.name] = trunk_peer
        await self._caller_name(call, lookup, deadline - app.now())
        if call.state == "ended":  # type: ignore[comparison-overlap]  # changed meanwhile
            await call.relay.close()
            return
        if call.a_offer is not None:
            call.last_sdp["a"] = call.a_offer
            a_end = audio_endpoint(call.a_offer)
            if a_end is not None:
                call.relay.set_remote(Leg.A, a_end)
            call.b_offer = self._sdp_for(call, "b", offer_both_g711(call.a_offer))
        # else: a delayed offer, passed on as one (the callee's 200 will carry the offer)
        call.state = "ringing"
        self._next_step(call)
        app.flush()

    def _send_fork(self, call: Call, binding: Binding, callee: User,
                   leg: LegState | None = None) -> None:
        app = self.app
        caller = call.caller
        body = call.b_offer
        peer = app.binding_peer(binding)
        h = Headers()
        h.add("Max-Forwards", str(call.max_forwards))
        from_uri = SipUri("sip", user=caller.extension, host=app.domain)
        shown = call.caller_name or display_name(caller)
        h.add("From", str(Address(from_uri, shown, {"tag": new_tag()})))
        h.add("To", str(Address(SipUri("sip", user=callee.extension, host=app.domain),
                                display_name(callee))))
        h.add("Call-ID", new_call_id(app.domain))
        h.add("CSeq", "1 INVITE")
        h.add("Contact", str(app.contact(peer)))
        h.add("Allow", ALLOW)
        h.add("Supported", SUPPORTED)
        h.add("User-Agent", app.user_agent)
        for name, value in call.extra_headers:
            h.add(name, value)
        if body:
            h.add("Content-Type", "application/sdp")
        req = Request("INVITE", SipUri.parse(binding.uri), h, body)
        app.add_via(req, peer)
        key = app.layer.send_request(req, peer, app.now())
        fork = Fork(key=key, invite=req, peer=peer, step=call.step, user=callee, leg=leg)
        call.forks[key] = fork
        self._forks[key] = (call, fork)

    # -- responses on B-leg forks ------------------------------------------------------------
    def on_response(self, resp: Response, key: str) -> None:
        if self.transfers.on_response(resp, key) or self.local.originator.on_response(resp, key):
            return
        if key in self._forks:
            call, fork = self._forks[key]
            self._on_fork_response(call, fork, resp)
        elif key in self._forwarded:
            self._on_forwarded_response(self._forwarded[key], resp, key)
        elif key in self._byes:
            if resp.status >= 200:
                self._byes.discard(key)
        elif resp.status // 100 == 2 and resp.cseq.method == "INVITE":
            # A retransmitted 2xx (RFC 6026 7.2): the ACK got lost; send it again.
            self._reack(resp)

    def _on_fork_response(self, call: Call, fork: Fork, resp: Response) -> None:
        app = self.app
        code = resp.status
        if code < 200:
            # RFC 3261 9.1: any provisional, 100 Trying included, allows a CANCEL.
            fork.provisional = True
            if fork.cancel_pending:
                self._cancel_fork(fork, call, completed_elsewhere=call.state == "answered")
                return
            if code == 100 or call.state != "ringing" or call.a_local is not None:
                return  # an answered local caller hears the PBX's own ringback
            body = b""
            if resp.body and resp.content_type == "application/sdp":
                body = self._relay_answer(call, "b", resp.body)
            out = app.make_response(call.a_invite, 183 if body else 180, to_tag=call.a_tag)
            if body:
                out.headers.add("Content-Type", "application/sdp")
                out.body = body
            out.headers.add("Contact", str(app.contact(call.a_peer)))
            app.send_response(call.a_key, out, app.now())
            return
        if code < 300:
            self._on_fork_answer(call, fork, resp)
            return
        if code in (401, 407) and fork.trunk is not None and not fork.auth_tried \
                and call.state == "ringing" and self._authenticate(call, fork, resp):
            return
        fork.done = True
        fork.status = code
        self._forks.pop(fork.key, None)
        self._leg_fork_ended(call, fork)  # before the queue hears of it and offers again
        if call.observer is not None and not (fork.cancelled or fork.cancel_pending):
            self._notify(call, "fork_failed", fork)
        self._step_failed(call, fork)

    def _on_fork_answer(self, call: Call, fork: Fork, resp: Response) -> None:
        app = self.app
        dialog = Dialog.as_uac(fork.invite, resp)
        ack = dialog.create_request("ACK", app.contact(fork.peer), cseq=fork.invite.cseq.seq)
        app.add_via(ack, fork.peer)
        fork.done = True
        fork.status = resp.status
        self._forks.pop(fork.key, None)
        delayed = call.a_offer is None
        has_sdp = bool(resp.body) and resp.content_type == "application/sdp"
        # A phone a queue withdrew its offer from answered as the CANCEL crossed: the queue
        # has moved on (another agent rings, the agent paused), so that answer is not taken.
        withdrawn = call.observer is not None and (fork.cancelled or fork.cancel_pending)
        if call.state != "ringing" or (delayed and not has_sdp) or withdrawn:
            # Another fork won, the caller gave up, or a delayed offer got no offer back:
            # this phone's answer cannot be used.
            if fork.leg is not None and not fork.leg.done:
                self._leg_done(call, fork.leg, "cancelled" if withdrawn else "failed",
                               None if withdrawn else 488)
            self._send_ack(dialog, ack, fork.peer)
            self._send_bye(dialog, fork.peer)
            if call.state == "ringing" and not withdrawn:
                self._cancel_forks(call, completed_elsewhere=False)
                self._fail_a(call, 488, "callee sent no offer", "failed")
            return
        rename = None if delayed else self._transcoding(call, resp.body)
        if delayed:
            # RFC 3261 13.2.1: the callee's 200 holds the offer; its ACK must carry the
            # caller's answer, which comes with the caller's ACK (see on_ack).
            call.pending_b_ack = (dialog, ack, fork.peer)
        else:
            self._send_ack(dialog, ack, fork.peer)
        call.state = "answered"
        if fork.user is not None:
            call.callee = fork.user  # the member of a ring group who answered
        if fork.trunk is not None and 0 <= fork.step < len(call.plan):
            call.billed = (fork.trunk, call.plan[fork.step].number)
        self._leg_answered(call, fork)
        call.b_dialog = dialog
        call.b_peer = fork.peer
        self._dialogs[(dialog.call_id, dialog.local_tag)] = (call, "b")
        if call.ring_timer is not None:
            call.ring_timer.cancel()
        self._cancel_forks(call, completed_elsewhere=True)
        body = b""
        if resp.body and resp.content_type == "application/sdp":
            body = self._relay_answer(call, "b", resp.body, rename)
        if not body and call.a_offer is not None:
            # No answer SDP: answer A with the relay on its side and the original codecs.
            body = self._sdp_for(call, "a", call.a_offer)
        if call.observer is not None:
            self._notify(call, "answered")
        if call.a_local is not None:
            self._answered_for_local(call, body)
            return
        out = app.make_response(call.a_invite, 200, to_tag=call.a_tag, dialog=True)
        out.headers.add("Contact", str(app.contact(call.a_peer)))
        out.headers.add("Allow", ALLOW)
        out.headers.add("Supported", SUPPORTED)
        if body:
            out.headers.add("Content-Type", "application/sdp")
            out.body = body
        a_dialog = Dialog.as_uas(call.a_invite, call.a_tag)
        call.a_dialog = a_dialog
        self._dialogs[(a_dialog.call_id, a_dialog.local_tag)] = (call, "a")
        app.send_response(call.a_key, out, app.now())
        call.answered_at = utcnow()
        call.answered_mono = app.now()
        if app.record_calls and app.recordings is not None and call.relay is not None:
            app.recordings.start(call.id, call.relay, app.now())
        app.records.emit(CallAnswered(call.id, call.answered_at, user_id(call.callee),
                                      (call.answered_at - call.started).total_seconds()))

    def _cancel_forks(self, call: Call, *, completed_elsewhere: bool) -> None:
        """Stop every phone of the callee that is still ringing."""
        for fork in call.forks.values():
            if not fork.done:
                self._cancel_fork(fork, call, completed_elsewhere=completed_elsewhere)

    def _cancel_fork(self, fork: Fork, call: Call, *, completed_elsewhere: bool) -> None:
        # RFC 3261 9.1: a CANCEL may only be sent once a provisional response arrived.
        if not fork.provisional:
            fork.cancel_pending = True
            return
        fork.cancel_pending = False
        if fork.cancelled:
            return
        fork.cancelled = True
        cancel = cancel_for(fork.invite, 'SIP;cause=200;text="Call completed elsewhere"'
                            if completed_elsewhere else None)
        self.app.layer.send_request(cancel, fork.peer, self.app.now())

    def _fail_a(
        self, call: Call, code: int, cause: str, disposition: str, reason: str | None = None
    ) -> None:
        """End an unanswered call with a final error to the caller."""
        app = self.app
        if call.a_local is not None:
            # The caller is the PBX's own (an IVR): it stays there and hears why.
            self._local_failed(call, code)
            self._end(call, disposition, cause, "system", code, record=False)
            return
        app.respond(call.a_key, call.a_invite, code, reason, to_tag=call.a_tag)
        self._end(call, disposition, cause, "system" if code != 487 else "caller", code)

    # -- caller gives up ---------------------------------------------------------------------
    def on_cancel(self, req: Request, key: str) -> None:
        app = self.app
        inv_key = app.layer.cancel_info(req)
        call = self._by_server_key.get(inv_key) if inv_key else None
        if call is None and inv_key and self.local.on_cancel(inv_key):
            app.respond(key, req, 200)
            return
        if call is None:
            call = self._by_a_call_id.get(req.call_id)
            app.respond(key, req, 200 if call is not None else 481, to_tag=new_tag())
            return
        app.respond(key, req, 200)
        if call.state in ("setup", "ringing"):
            if call.ring_timer is not None:
                call.ring_timer.cancel()
            self.close_legs(call, None, "cancelled")
            self._cancel_forks(call, completed_elsewhere=False)
            self._fail_a(call, 487, "caller cancelled", "cancelled")

    # -- failures and the end of a call ------------------------------------------------------
    def on_failure(self, key: str) -> None:
        """A client transaction timed out or its transport failed (treated as 408)."""
        if self.transfers.on_failure(key) or self.local.on_failure(key) \
                or self.local.originator.on_failure(key):
            return
        if key in self._forks:
            call, fork = self._forks[key]
            self._on_fork_failure(call, fork)
        elif key in self._forwarded:
            fw = self._forwarded.pop(key)
            if fw.request.method == "INVITE":
                fw.call.reinvite_pending = False
            # Ended or not, the phone's request gets its final answer (RFC 3261 15.1.2).
            with contextlib.suppress(LocalSipError):
                self.app.respond(fw.origin_key, fw.origin_request,
                                 408 if fw.call.state != "ended" else 487)
        elif key in self._by_server_key:
            # Our 2xx to the caller was never ACKed (RFC 3261 13.3.1.4): end the call.
            call = self._by_server_key[key]
            if call.state == "answered":
                self.hangup(call, "no ACK from caller")
        self._byes.discard(key)

    def _on_fork_failure(self, call: Call, fork: Fork) -> None:
        fork.done = True
        fork.status = 408
        self._forks.pop(fork.key, None)
        self._leg_fork_ended(call, fork)
        if call.observer is not None and not (fork.cancelled or fork.cancel_pending):
            self._notify(call, "fork_failed", fork)
        self._step_failed(call, fork)

    def check_media(self, now: float, timeout: float) -> None:
        """Hang up answered calls whose RTP stopped both ways for ``timeout`` seconds (a phone
        that lost power or network never sends its BYE). Calls on hold are exempt."""
        if timeout <= 0:
            return
        self.local.check_media(now, timeout)
        for call in list(self.calls.values()):
            if call.state != "answered" or call.held or call.relay is None \
                    or call.answered_at is None:  # a caller still being moved to the phone
                continue
            last = max(
                call.relay.last_rx(Leg.A) or call.answered_mono,
                call.relay.last_rx(Leg.B) or call.answered_mono,
            )
            if now - last >= timeout:
                logger.info("call %s: no RTP for %.0f s, hanging up", call.id, now - last)
                self.hangup(call, "no media")

    def hangup(self, call: Call, cause: str) -> None:
        """End a call from the PBX side (shutdown, media timeout, missing ACK)."""
        if call.state == "answered":
            for side in ("a", "b"):
                d, p = call.dialog(side), call.peer(side)
                if d is not None and p is not None:
                    self._send_bye(d, p)
            self._end(call, "answered", cause, "system", None)
        elif call.state in ("setup", "ringing"):
            self._cancel_forks(call, completed_elsewhere=False)
            self._fail_a(call, 503, cause, "failed")

    def _end(
        self, call: Call, disposition: str, cause: str, by: str | None, code: int | None,
        *, record: bool = True,
    ) -> None:
        if call.state == "ended":
            return
        was = call.state
        call.state = "ended"
        if call.ring_timer is not None:
            call.ring_timer.cancel()
        self._end_legs(call, disposition, code)  # the record keeper must have them first
        local = call.a_local
        if local is not None and local.state != "bridged":
            # A caller the PBX had answered (an IVR): if nobody answered, it goes back there;
            # if the call ended while the caller was being moved to the phone, it ends too.
            self._local_failed(call, code or 487)
            if was == "answered":
                self.local.ended_elsewhere(local, cause, by or "system")
        self.transfers.abort(call)
        self.calls.pop(call.id, None)
        self._by_server_key.pop(call.a_key, None)
        self._by_a_call_id.pop(call.a_invite.call_id, None)
        for d in (call.a_dialog, call.b_dialog):
            if d is not None:
                self._dialogs.pop((d.call_id, d.local_tag), None)
        self.app.playback.stop(call.id)
        self.app.playback.stop((call.id, "notice"))
        recording = self.app.recordings.stop(call.id) if self.app.recordings else None
        if call.relay is not None:
            if logger.isEnabledFor(logging.INFO):
                logger.info("call %s ended: %s (%s)%s", call.id, disposition, cause,
                            media_summary(call.relay))
            self.app.spawn(call.relay.close())
        if disposition != "answered":
            by = by or "system"
        ended = utcnow()
        if call.answered_at is not None:
            duration = (ended - call.answered_at).total_seconds()
            ring = (call.answered_at - call.started).total_seconds()
        else:
            duration, ring = 0.0, (ended - call.started).total_seconds()
        if call.a_local is not None and call.answered_at is None:
            record = False  # never bridged: the caller's local call keeps the record
        if call.observer is not None:
            self._notify(call, "ended")
        if record:
            keys = "".join(call.a_local.keys) if call.a_local is not None else ""
            cost = None
            if call.billed is not None and call.answered_at is not None:
                cost = call_cost(*call.billed, max(0.0, duration))
            self.app.records.emit(CallEnded(
                call.id, ended, disposition, cause, by, code, max(0.0, duration), ring,
                recording[0] if recording else None, recording[1] if recording else None,
                keys=keys or None, cost=cost,
            ))


def _refusal(target: Target) -> tuple[int, str]:
    """The SIP status and record cause for a call the PBX cannot route."""
    if isinstance(target, Refuse):
        return target.status, target.reason.replace("_", " ")
    return 480, f"{type(target).__name__} is not reachable yet"


def _direction(caller: User | Outsider) -> str:
    return "inbound" if isinstance(caller, Outsider) else "internal"
