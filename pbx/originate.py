"""Calls the PBX places itself to users' phones, with its own media on the leg.

A queue's callback rings the agent first and dials the customer only once the agent has
answered; the agent meanwhile talks to the PBX (a short notice, then ringback). So the PBX is
the calling party here: it offers SDP for a :class:`media.local.LocalMedia` port, sends an
INVITE to every registered phone of the users asked for, takes the first 2xx (ACKed, RFC 3261
13.2.2.4), cancels the others (RFC 3261 9.1) and BYEs any second 2xx that crossed the CANCEL.
The answered leg becomes a :class:`pbx.localcall.LocalCall` in a dialog where the PBX is the
UAC; everything a service does on it works as on a call the PBX answered, including
:meth:`LocalCall.connect`, which moves the phone onto the relay by re-INVITE.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from itertools import count
from typing import TYPE_CHECKING

from media.endpoint import LocalLeg
from media.local import LocalMedia
from media.relay import NoPortsError
from media.sdp import SdpError, SessionDescription, audio_endpoint
from sip.dialog import Dialog, new_call_id, new_tag
from sip.message import Headers, Request, Response, cancel_for
from sip.transaction import Peer
from sip.uri import Address, SipUri

from .callstate import ALLOW, SUPPORTED, LegState, leg_result, new_leg, utcnow
from .localcall import LocalCall

if TYPE_CHECKING:
    from .config import User
    from .localcall import LocalCalls

logger = logging.getLogger(__name__)

#: What the PBX offers for its own leg: PCMU (every phone has it, RFC 3551 4.5.14) and
#: telephone-event for keys (RFC 4733 7.1.1).
_EVENT_PT = 101


@dataclass(eq=False)
class _Attempt:
    key: str
    invite: Request
    peer: Peer
    user: User
    provisional: bool = False
    cancel_pending: bool = False
    cancelled: bool = False
    done: bool = False
    status: int | None = None


@dataclass(eq=False)
class Origination:
    """The INVITEs of one call the PBX places; :meth:`cancel` stops some or all of them."""

    call: LocalCall
    media: LocalMedia
    attempts: dict[str, _Attempt] = field(default_factory=dict)
    result: asyncio.Future[LocalCall | int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    on_fail: Callable[[str, int], None] | None = None
    """Told (user id, status) of each phone that refused or timed out (not those cancelled)."""
    legs: dict[str, LegState] = field(default_factory=dict)
    """Each user's leg of the call record, when the call has legs (a queue's callback)."""


class Originator:
    """The PBX's own outgoing calls (one per :class:`LocalCalls`)."""

    def __init__(self, local: LocalCalls) -> None:
        self.local = local
        self.app = local.app
        self._by_key: dict[str, tuple[Origination, _Attempt]] = {}

    async def call_users(self, users: list[User], *, call_id: str, shown_number: str,
                         shown_name: str, number: str, timeout: float,
                         headers: tuple[tuple[str, str], ...] = (),
                         leg_kind: str | None = None, leg_queue: str | None = None,
                         leg_numbers: count[int] | None = None) -> Origination | int:
        """Ring every registered phone of ``users``, showing ``shown_name`` <``shown_number``>
        as the caller. The origination's ``result`` gets the answered :class:`LocalCall`
        (its ``caller`` is the user who answered) or the SIP status why nobody did.
        Returns a status at once when no phone can be rung or no media port is free.

        With ``leg_kind``, each user rung is a leg of the record ``call_id`` (numbered by
        ``leg_numbers``, the record's counter), and so is whatever the answered call connects
        to (:attr:`LocalCall.leg_kind`)."""
        app = self.app
        targets = [(u, b) for u in users for b in app.lookup(u.id)]
        if not targets:
            return 480
        leg = LocalLeg(0, _EVENT_PT, users[0].dtmf_mode)
        tag = new_tag()
        call = LocalCall(
            id=call_id, caller=users[0], number=number,
            invite=Request("INVITE", SipUri("sip", host=app.domain), Headers()),
            txn_key="", peer=app.binding_peer(targets[0][1]), tag=tag, started=utcnow(),
            sdp_id=int(uuid.uuid4().int % 10**9), connector=self.local.connect, placed=True,
            leg_kind=leg_kind, leg_queue=leg_queue,
        )
        if leg_numbers is not None:
            call.leg_numbers = leg_numbers
        try:
            media = await LocalMedia.open(app.relay.ports, app.media_bind_host, app.playback,
                                          leg, call._on_digit, call._on_audio)
        except (NoPortsError, OSError) as e:
            logger.error("call %s: no media ports to call %s: %s", call_id,
                         ", ".join(u.id for u in users), e)
            return 503
        call.media = media
        orig = Origination(call, media)
        if leg_kind is not None:
            for user in dict.fromkeys(u for u, _ in targets):
                orig.legs[user.id] = new_leg(call_id, call.leg_numbers, leg_kind, user=user.id,
                                             queue=leg_queue)
        call.sdp_version = 1
        body = _offer(app.media_address, media.port, call.sdp_id, call.sdp_version)
        for user, binding in targets:
            peer = app.binding_peer(binding)
            h = Headers()
            h.add("Max-Forwards", "70")
            h.add("From", str(Address(SipUri("sip", user=shown_number or "pbx", host=app.domain),
                                      shown_name, {"tag": tag})))
            h.add("To", str(Address(SipUri("sip", user=user.extension, host=app.domain),
                                    user.name)))
            # One dialog per phone (RFC 3261 8.2.2.2: a phone registered for two of the users
            # must not see one request twice and answer 482).
            h.add("Call-ID", new_call_id(app.domain))
            h.add("CSeq", "1 INVITE")
            h.add("Contact", str(app.contact(peer)))
            h.add("Allow", ALLOW)
            h.add("Supported", SUPPORTED)
            h.add("User-Agent", app.user_agent)
            for name, value in headers:
                h.add(name, value)
            h.add("Content-Type", "application/sdp")
            req = Request("INVITE", SipUri.parse(binding.uri), h, body)
            app.add_via(req, peer)
            key = app.layer.send_request(req, peer, app.now())
            attempt = _Attempt(key, req, peer, user)
            orig.attempts[key] = attempt
            self._by_key[key] = (orig, attempt)
        call.invite = next(iter(orig.attempts.values())).invite
        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout, self._timeout, orig)
        orig.result.add_done_callback(lambda _f: timer.cancel())
        app.flush()
        return orig

    # -- responses ----------------------------------------------------------------------------
    def on_response(self, resp: Response, key: str) -> bool:
        """A response to one of our INVITEs; False if it is not one."""
        found = self._by_key.get(key)
        if found is None:
            return False
        orig, attempt = found
        code = resp.status
        if code < 200:
            attempt.provisional = True
            if attempt.cancel_pending:
                self._cancel(attempt)
            return True
        attempt.done = True
        attempt.status = code
        self._by_key.pop(key, None)
        if code < 300:
            self._answered(orig, attempt, resp)
        else:
            self._failed(orig, attempt, code)
        return True

    def _failed(self, orig: Origination, attempt: _Attempt, code: int) -> None:
        leg = orig.legs.get(attempt.user.id)
        if leg is not None and not leg.done:
            tried = [a for a in orig.attempts.values() if a.user.id == attempt.user.id]
            if all(a.done for a in tried):
                self._leg_done(orig, leg, *leg_result(
                    [code if a is attempt else a.status or 500 for a in tried]))
        if not attempt.cancelled and orig.on_fail is not None and not orig.result.done():
            orig.on_fail(attempt.user.id, code)
        self._check_all_failed(orig)

    def _leg_done(self, orig: Origination, leg: LegState, result: str,
                  code: int | None = None) -> None:
        leg.done = True
        self.app.records.emit(leg.event(orig.call.id, result, code, utcnow()))

    def on_failure(self, key: str) -> bool:
        """Our INVITE timed out or its transport failed (counted as 408)."""
        found = self._by_key.pop(key, None)
        if found is None:
            return False
        orig, attempt = found
        attempt.done, attempt.status = True, 408
        self._failed(orig, attempt, 408)
        return True

    def _answered(self, orig: Origination, attempt: _Attempt, resp: Response) -> None:
        app = self.app
        calls = self.local.calls
        dialog = Dialog.as_uac(attempt.invite, resp)
        ack = dialog.create_request("ACK", app.contact(attempt.peer),
                                    cseq=attempt.invite.cseq.seq)
        app.add_via(ack, attempt.peer)
        calls._send_ack(dialog, ack, attempt.peer)
        answer: SessionDescription | None = None
        if resp.body and resp.content_type == "application/sdp":
            try:
                answer = SessionDescription.parse(resp.body)
            except SdpError:
                answer = None
        if orig.result.done() or attempt.cancelled or answer is None \
                or audio_endpoint(answer) is None:
            # Someone else answered first, the call was given up or withdrawn from this
            # phone (its 200 crossed our CANCEL), or no usable answer.
            calls._send_bye(dialog, attempt.peer)
            self._failed(orig, attempt, 488)
            app.flush()
            return
        call = orig.call
        call.caller = attempt.user
        call.peer = attempt.peer
        call.invite = attempt.invite
        call.txn_key = attempt.key
        call.dialog = dialog
        call.offer = answer
        orig.media.set_remote(audio_endpoint(answer))
        call.state = "answered"
        call.answered_at = utcnow()
        call.answered_mono = app.now()
        leg = orig.legs.get(attempt.user.id)
        if leg is not None:
            leg.answered_at, leg.done = call.answered_at, True
            app.records.emit(leg.event(call.id, "answered"))
            call.party_leg = leg
        for other in orig.legs.values():
            if not other.done:
                self._leg_done(orig, other, "elsewhere")
        self.local.adopt(call)
        orig.result.set_result(call)
        self.cancel(orig, None)  # the other phones stop ringing
        app.flush()

    def _check_all_failed(self, orig: Origination) -> None:
        if orig.result.done() or not all(a.done or a.cancelled for a in orig.attempts.values()):
            return
        codes = [a.status or 500 for a in orig.attempts.values()]
        best = 486 if 486 in codes else 603 if 603 in codes else min(codes)
        self._give_up(orig, best)

    def _timeout(self, orig: Origination) -> None:
        if not orig.result.done():
            for attempt in orig.attempts.values():
                if not attempt.done and not attempt.cancelled and orig.on_fail is not None:
                    orig.on_fail(attempt.user.id, 408)
            self.cancel(orig, None, "no_answer")
            self._give_up(orig, 408)
            self.app.flush()

    def _give_up(self, orig: Origination, code: int) -> None:
        if not orig.result.done():
            orig.result.set_result(code)
        self.app.spawn(orig.media.close())

    # -- cancelling ---------------------------------------------------------------------------
    def cancel(self, orig: Origination, users: Collection[str] | None,
               result: str = "cancelled") -> None:
        """Stop ringing ``users``' phones (None: every phone still ringing); their legs end
        with ``result``. When nothing is left ringing and nobody answered, the origination
        fails with 487."""
        for uid, leg in orig.legs.items():
            if not leg.done and (users is None or uid in users):
                self._leg_done(orig, leg, result)
        for attempt in orig.attempts.values():
            if not attempt.done and (users is None or attempt.user.id in users):
                attempt.cancelled = True
                self._cancel(attempt)
        if not orig.result.done() and all(a.done or a.cancelled
                                          for a in orig.attempts.values()):
            self._give_up(orig, 487)

    def _cancel(self, attempt: _Attempt) -> None:
        # RFC 3261 9.1: a CANCEL only after a provisional response.
        if attempt.done:
            return
        if not attempt.provisional:
            attempt.cancel_pending = True
            return
        attempt.cancel_pending = False
        self.app.layer.send_request(cancel_for(attempt.invite), attempt.peer,
                                    self.app.now())


def _offer(address: str, port: int, session_id: int, version: int) -> bytes:
    kind = "IP6" if ":" in address else "IP4"
    lines = [
        "v=0",
        f"o=- {session_id} {version} IN {kind} {address}",
        "s=-",
        f"c=IN {kind} {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0 {_EVENT_PT}",
        "a=rtpmap:0 PCMU/8000",
        f"a=rtpmap:{_EVENT_PT} telephone-event/8000",
        f"a=fmtp:{_EVENT_PT} 0-16",
        "a=ptime:20",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()
