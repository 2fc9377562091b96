"""Call transfer (REFER, RFC 3515), blind and attended (Replaces, RFC 3891), in the B2BUA.

Theory of operation. A phone in an answered call (the transferor, on side X of the call) sends
REFER; the party on the other side (Y, the transferee) stays where it is, on its relay port, and
only the party on side X changes. The PBX acts for the transferee (RFC 5589 role), answers the
REFER with 202 and reports progress to the transferor in NOTIFYs carrying a ``message/sipfrag``
status line (RFC 3515 2.4.5) until the final one that ends the implicit subscription.

- Blind: ``Refer-To: <sip:103@pbx>``. The target's phones are called with the transferee's SDP
  pointed at side X's relay port; meanwhile the transferee hears ringback and nothing of the
  transferor. When the target answers, side X of the call *is* the target's dialog: the relay
  leg X is pointed at its phone, the transferor gets NOTIFY 200 and a BYE. If the target fails,
  the transferor gets the failure and the call goes on as before (or, when the transferor has
  already hung up, the transferee is hung up too).
- Attended: ``Refer-To: <sip:103@pbx?Replaces=...>`` names the transferor's other call (the
  consultation). The consultation's other party (the target) is re-INVITEd onto this call's relay
  port on side X, its dialog moves into this call, and both of the transferor's dialogs get BYE.

Either way the call keeps its id, its relay and therefore its recording and its call record,
which gets a ``CallTransferred`` event: the recording follows the call, not the phone. A
transferee left on hold by the transferor is taken off hold with a re-INVITE.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote

from media.g711 import get_codec
from media.player import RtpStream
from media.sdp import (
    SdpError,
    SessionDescription,
    audio_endpoint,
    direction,
    rewrite_for_anchor,
    with_direction,
)
from media.tones import ringback
from media.transcode import Transcoding, g711_formats, g711_offer
from sip.dialog import Dialog, new_call_id, new_tag
from sip.message import Headers, Request, Response
from sip.transaction import Peer
from sip.uri import Address, SipUri

from .callstate import (
    ALLOW,
    SUPPORTED,
    Call,
    Fork,
    LegState,
    Outsider,
    Side,
    codec_of,
    display_name,
    leg_numbers,
    leg_of,
    leg_result,
    new_leg,
    other_side,
    user_id,
    utcnow,
)
from .indialog import OwnRequest
from .presence import PresenceState
from .records import CallTransferred

if TYPE_CHECKING:
    from .calls import CallController
    from .config import User

logger = logging.getLogger(__name__)

Kind = Literal["blind", "attended"]


@dataclass(slots=True)
class Transfer:
    """One transfer in progress on ``call``; ``side`` is the transferor's side."""

    call: Call
    side: Side
    kind: Kind
    target: User | Outsider
    refer_dialog: Dialog
    refer_peer: Peer
    forks: dict[str, Fork] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None
    transferor_gone: bool = False
    consult: Call | None = None
    consult_side: Side | None = None
    """Attended: the target's side in the consultation call."""
    done: bool = False
    leg: LegState | None = None
    """Blind: the target's leg of the call record while it rings."""


@dataclass(frozen=True, slots=True)
class ReplacesRef:
    """The dialog a ``Replaces`` parameter names (RFC 3891 6.1)."""

    call_id: str
    to_tag: str
    from_tag: str

    @classmethod
    def parse(cls, value: str) -> ReplacesRef | None:
        call_id, _, rest = value.partition(";")
        params: dict[str, str] = {}
        for item in rest.split(";"):
            name, _, v = item.partition("=")
            params[name.strip().lower()] = v.strip()
        to_tag, from_tag = params.get("to-tag"), params.get("from-tag")
        if not call_id.strip() or to_tag is None or from_tag is None:
            return None
        return cls(call_id.strip(), to_tag, from_tag)


def replaces_of(uri: SipUri) -> ReplacesRef | Literal[False] | None:
    """The Replaces named in a Refer-To URI's headers; False when there is none (blind),
    None when there is one but it is malformed."""
    for item in uri.headers.split("&") if uri.headers else ():
        name, _, value = item.partition("=")
        if name.strip().lower() == "replaces":
            return ReplacesRef.parse(unquote(value))
    return False


class Transfers:
    """The transfer side of the call controller (one per controller)."""

    def __init__(self, calls: CallController) -> None:
        self.calls = calls
        self.app = calls.app
        self._forks: dict[str, tuple[Transfer, Fork]] = {}

    # -- the REFER ---------------------------------------------------------------------------
    def on_refer(self, call: Call, side: Side, req: Request, key: str) -> None:
        app = self.app
        raw = req.headers.get("Refer-To")
        if raw is None or req.headers.get_all("Refer-To")[1:]:
            app.respond(key, req, 400, "Exactly one Refer-To required")  # RFC 3515 2.4.1
            return
        try:
            refer_to = Address.parse(raw).uri
        except ValueError:
            app.respond(key, req, 400, "Bad Refer-To")
            return
        if call.state != "answered" or call.transfer is not None:
            app.respond(key, req, 491)  # one transfer at a time
            return
        replaces = replaces_of(refer_to)
        if replaces is None:
            app.respond(key, req, 400, "Bad Replaces in Refer-To")
            return
        if replaces is False:
            self._blind(call, side, req, key, refer_to)
        else:
            self._attended(call, side, req, key, replaces)

    def _accept(self, call: Call, side: Side, req: Request, key: str, kind: Kind,
                target: User | Outsider) -> Transfer:
        app = self.app
        dialog, peer = call.dialog(side), call.peer(side)
        assert dialog is not None and peer is not None
        resp = app.make_response(req, 202)
        resp.headers.add("Contact", str(app.contact(peer)))
        app.send_response(key, resp, app.now())
        t = Transfer(call, side, kind, target, dialog, peer)
        call.transfer = t
        self._notify(t, 100, "Trying")
        logger.info("call %s: %s transfer of %s by %s to %s", call.id, kind,
                    call.user(other_side(side)).id, call.user(side).id, target.id)
        return t

    # -- blind -------------------------------------------------------------------------------
    def _blind(self, call: Call, side: Side, req: Request, key: str, uri: SipUri) -> None:
        app = self.app
        target = app.find_user(uri.user or "")
        if target is None:
            app.respond(key, req, 404, "Transfer target not found")
            return
        bindings = app.lookup(target.id)
        if not bindings:
            app.respond(key, req, 480, "Transfer target not registered")
            return
        if not target.call_waiting and self.calls._on_a_call(target.id):
            app.respond(key, req, 486, "Transfer target busy")
            return
        presence = app.presence.get(target.id)
        if presence is PresenceState.DO_NOT_DISTURB:
            app.respond(key, req, 486, "Transfer target on do not disturb")
            return
        if presence is PresenceState.OFFLINE:
            app.respond(key, req, 480, "Transfer target offline")
            return
        y = other_side(side)
        offer = self._offer_for_new_party(call, y)
        if offer is None or call.relay is None:
            app.respond(key, req, 488, "No audio to transfer")
            return
        t = self._accept(call, side, req, key, "blind", target)
        t.leg = new_leg(call.id, leg_numbers(call), "transfer", user=target.id)
        if app.on_offer is not None:
            app.on_offer(call.id, target.id)  # the target's screen pops as their phones ring
        # The transferee hears ringback, and nothing of the transferor, while the target rings.
        relay = call.relay
        relay.mute(leg_of(side), True)
        codec = get_codec(int(codec_of(call, y) or "0"))
        app.playback.play(call.id, RtpStream(ringback(), codec),
                          lambda data: relay.send_rtp(leg_of(y), data))
        body = self.calls._sdp_for(call, side, offer)
        referred_by = f"<sip:{call.user(side).extension}@{app.domain}>"
        for b in bindings:
            peer = app.binding_peer(b)
            transferee = call.user(y)
            h = Headers()
            h.add("Max-Forwards", "70")
            h.add("From", str(Address(SipUri("sip", user=transferee.extension, host=app.domain),
                                      display_name(transferee), {"tag": new_tag()})))
            h.add("To", str(Address(SipUri("sip", user=target.extension, host=app.domain),
                                    display_name(target))))
            h.add("Call-ID", new_call_id(app.domain))
            h.add("CSeq", "1 INVITE")
            h.add("Contact", str(app.contact(peer)))
            h.add("Allow", ALLOW)
            h.add("Supported", SUPPORTED)
            h.add("Referred-By", referred_by)  # RFC 3892
            h.add("User-Agent", app.user_agent)
            h.add("Content-Type", "application/sdp")
            invite = Request("INVITE", SipUri.parse(b.uri), h, body)
            app.add_via(invite, peer)
            fkey = app.layer.send_request(invite, peer, app.now())
            fork = Fork(key=fkey, invite=invite, peer=peer)
            t.forks[fkey] = fork
            self._forks[fkey] = (t, fork)
        t.timer = asyncio.get_running_loop().call_later(
            app.ring_timeout, self._blind_timeout, t)

    def _blind_timeout(self, t: Transfer) -> None:
        t.timer = None
        if not t.done:
            self._leg_failed(t, "no_answer", 408)
            self._cancel_forks(t)
            self._failed(t, 480, "Temporarily Unavailable")
            self.app.flush()

    def _on_fork_response(self, t: Transfer, fork: Fork, resp: Response) -> None:
        code = resp.status
        if code < 200:
            fork.provisional = True
            if fork.cancel_pending:
                self.calls._cancel_fork(fork, t.call, completed_elsewhere=t.done)
            elif code == 180 and not t.done:
                self._notify(t, 180, "Ringing")
            return
        fork.done, fork.status = True, code
        self._forks.pop(fork.key, None)
        if code < 300:
            self._blind_answered(t, fork, resp)
            return
        if not t.done and all(f.done for f in t.forks.values()):
            codes = [f.status or 500 for f in t.forks.values()]
            best = 486 if 486 in codes else min(codes)
            self._failed(t, best, resp.reason if best == code else "Failed")

    def _blind_answered(self, t: Transfer, fork: Fork, resp: Response) -> None:
        app, calls, call = self.app, self.calls, t.call
        dialog = Dialog.as_uac(fork.invite, resp)
        ack = dialog.create_request("ACK", app.contact(fork.peer), cseq=fork.invite.cseq.seq)
        app.add_via(ack, fork.peer)
        calls._send_ack(dialog, ack, fork.peer)
        answer = _sdp(resp)
        if t.done or call.state != "answered" or answer is None:
            # Another phone of the target won, or the call ended meanwhile.
            calls._send_bye(dialog, fork.peer)
            if not t.done and call.state == "answered":
                self._cancel_forks(t)
                self._failed(t, 488, "Not Acceptable Here")
            return
        self._cancel_forks(t, completed_elsewhere=True)
        self._complete(t, dialog, fork.peer, t.target, answer, call.sdp_ids[t.side],
                       call.sdp_version[t.side])

    # -- attended ----------------------------------------------------------------------------
    def _attended(self, call: Call, side: Side, req: Request, key: str,
                  ref: ReplacesRef) -> None:
        app, calls = self.app, self.calls
        found = calls._dialogs.get((ref.call_id, ref.to_tag)) or calls._dialogs.get(
            (ref.call_id, ref.from_tag))
        if found is None:
            app.respond(key, req, 481, "Replaced dialog not found")
            return
        consult, consult_x = found
        if consult is call or consult.state != "answered" or consult.transfer is not None:
            app.respond(key, req, 491 if consult is not call else 400)
            return
        if consult.user(consult_x).id != call.user(side).id:
            # Only the transferor may hand over its own consultation call.
            app.respond(key, req, 403, "Replaced dialog belongs to another user")
            return
        t_side = other_side(consult_x)
        target_dialog, target_peer = consult.dialog(t_side), consult.peer(t_side)
        offer = self._offer_for_new_party(call, other_side(side))
        if target_dialog is None or target_peer is None or offer is None or call.relay is None:
            app.respond(key, req, 488, "No audio to transfer")
            return
        t = self._accept(call, side, req, key, "attended", consult.user(t_side))
        t.consult, t.consult_side = consult, t_side
        consult.transfer = t
        consult.reinvite_pending = True
        # The target keeps its dialog (and the o= session id it knows) but gets this call's
        # relay port for side X (RFC 3264 8: a new offer in the same dialog).
        consult.sdp_version[t_side] += 1
        body = bytes(rewrite_for_anchor(
            offer, app.media_address, call.relay.port(leg_of(side)),
            consult.sdp_ids[t_side], consult.sdp_version[t_side]))
        self.calls.request_in_dialog(target_dialog, target_peer, "INVITE", body,
                      lambda resp: self._target_moved(t, resp))

    def _target_moved(self, t: Transfer, resp: Response | None) -> None:
        consult, t_side = t.consult, t.consult_side
        assert consult is not None and t_side is not None
        consult.reinvite_pending = False
        call = t.call
        answer = _sdp(resp) if resp is not None and 200 <= resp.status < 300 else None
        dialog, peer = consult.dialog(t_side), consult.peer(t_side)
        if resp is not None and 200 <= resp.status < 300 and dialog is not None \
                and peer is not None:
            self.calls.ack_2xx(dialog, peer, resp)
        if t.done:
            # Aborted meanwhile (a party hung up): the target was pointed at a relay that is
            # going away, so its consultation call ends too.
            if consult.state == "answered":
                self.calls.hangup(consult, "transfer aborted")
            return
        if answer is None or call.state != "answered" or consult.state != "answered" \
                or dialog is None or peer is None:
            consult.transfer = None
            code = resp.status if resp is not None and resp.status >= 300 else 500
            self._failed(t, code, "Target could not be moved")
            return
        calls = self.calls
        # The consultation call gives its target's dialog away, then ends; the transferor's
        # dialog in it gets a BYE.
        calls._dialogs.pop((dialog.call_id, dialog.local_tag), None)
        sdp_id, sdp_version = consult.sdp_ids[t_side], consult.sdp_version[t_side]
        consult.set_party(t_side, consult.user(t_side), None, None)
        consult.transfer = None
        x2 = other_side(t_side)
        xd, xp = consult.dialog(x2), consult.peer(x2)
        if xd is not None and xp is not None:
            calls._depart(xd)
            calls._send_bye(xd, xp)
        calls._end(consult, "answered", "transferred", "caller" if x2 == "a" else "callee", None)
        self._complete(t, dialog, peer, t.target, answer, sdp_id, sdp_version)

    # -- completion and failure --------------------------------------------------------------
    def _complete(self, t: Transfer, dialog: Dialog, peer: Peer, user: User | Outsider,
                  answer: SessionDescription, sdp_id: int, sdp_version: int) -> None:
        """Side X of the call is now ``dialog`` (the target's phone)."""
        app, calls, call = self.app, self.calls, t.call
        t.done = True
        call.transfer = None
        if t.timer is not None:
            t.timer.cancel()
        x, y = t.side, other_side(t.side)
        mine = codec_of(call, y)
        old_user = call.user(x)
        old_dialog, old_peer = call.dialog(x), call.peer(x)
        if old_dialog is not None:
            calls._dialogs.pop((old_dialog.call_id, old_dialog.local_tag), None)
            calls._depart(old_dialog)
        call.set_party(x, user, dialog, peer)
        calls._dialogs[(dialog.call_id, dialog.local_tag)] = (call, x)
        call.sdp_ids[x], call.sdp_version[x] = sdp_id, sdp_version
        call.last_sdp[x] = answer
        relay = call.relay
        assert relay is not None
        app.playback.stop(call.id)
        relay.mute(leg_of(x), False)
        end = audio_endpoint(answer)
        relay.set_remote(leg_of(x), end)
        self._match_codecs(call, x, answer, mine)
        self._legs_transferred(t, user)
        self._notify(t, 200, "OK", final=True)
        if not t.transferor_gone and old_dialog is not None and old_peer is not None:
            calls._send_bye(old_dialog, old_peer)
        app.records.emit(CallTransferred(call.id, utcnow(), old_user.id, user.id, t.kind))
        held = call.held or direction(call.last_sdp.get(y) or answer) != "sendrecv"
        call.held = False
        if held:
            self._resume(call, y, answer, mine)
        app.flush()

    def _legs_transferred(self, t: Transfer, user: User | Outsider) -> None:
        """The transferor's leg ends here; the target's is answered (RFC 5589: the call is
        theirs now)."""
        call, emit = t.call, self.app.records.emit
        now = utcnow()
        old = call.party_legs.pop(t.side, None)
        if old is not None:
            emit(old.event(call.id, "answered", ended_at=now))
        leg = t.leg or new_leg(call.id, leg_numbers(call), "transfer", user=user_id(user),
                               number=user.number if isinstance(user, Outsider) else None)
        leg.answered_at, leg.done = now, True
        emit(leg.event(call.id, "answered"))
        call.party_legs[t.side] = leg

    def _leg_failed(self, t: Transfer, result: str | None, code: int) -> None:
        """The target of a blind transfer did not take the call."""
        leg = t.leg
        if leg is None or leg.done:
            return
        leg.done = True
        found, code = leg_result([code])
        self.app.records.emit(leg.event(t.call.id, result or found,
                                        code if result is None else None, utcnow()))

    def _failed(self, t: Transfer, code: int, reason: str) -> None:
        app, call = self.app, t.call
        self._leg_failed(t, None, code)
        t.done = True
        call.transfer = None
        if t.timer is not None:
            t.timer.cancel()
        logger.info("call %s: transfer to %s failed: %d %s", call.id, t.target.id, code, reason)
        self._notify(t, code, reason, final=True)
        if call.state != "answered":
            return
        app.playback.stop(call.id)
        if t.transferor_gone:
            y = other_side(t.side)
            d, p = call.dialog(y), call.peer(y)
            if d is not None and p is not None:
                self.calls._send_bye(d, p)
            self.calls._end(call, "answered", f"transfer failed: {code} {reason}", "system",
                            None)
            return
        if call.relay is not None:
            call.relay.mute(leg_of(t.side), False)
            if call.held:
                # Back as it was before the REFER: the transferor had the call on hold.
                self.calls._hold_music(call, t.side, True)

    def on_transferor_bye(self, call: Call, side: Side) -> bool:
        """The transferor hung up during a blind transfer (RFC 5589 allows it right after the
        202): the transferee stays, waiting for the target. True if the BYE was taken here."""
        t = call.transfer
        if t is None or t.side != side or t.kind != "blind" or t.done:
            return False
        t.transferor_gone = True
        old = call.party_legs.pop(side, None)
        if old is not None:  # the transferor's phone is off the call from now on
            self.app.records.emit(old.event(call.id, "answered", ended_at=utcnow()))
        dialog = call.dialog(side)
        if dialog is not None:
            self.calls._dialogs.pop((dialog.call_id, dialog.local_tag), None)
        return True

    def abort(self, call: Call) -> None:
        """The call ends while a transfer of it is in progress."""
        t = call.transfer
        if t is None or t.done:
            return
        t.done = True
        call.transfer = None
        t.call.transfer = None
        if t.timer is not None:
            t.timer.cancel()
        self._leg_failed(t, "cancelled", 487)
        self._cancel_forks(t)
        if t.consult is not None:
            t.consult.transfer = None
        self._notify(t, 487, "Request Terminated", final=True)

    # -- helpers -----------------------------------------------------------------------------
    def _offer_for_new_party(self, call: Call, y: Side) -> SessionDescription | None:
        """The transferee's SDP, re-offered to the party that will replace the transferor."""
        sd = call.last_sdp.get(y)
        codec = codec_of(call, y)
        if sd is None or codec is None or sd.audio is None:
            return None
        try:
            return with_direction(g711_offer(sd, codec), "sendrecv")
        except (SdpError, ValueError):
            return None

    def _match_codecs(
        self, call: Call, x: Side, answer: SessionDescription, mine: str | None
    ) -> None:
        """Transcode between the transferee's codec (``mine``) and the one the new party
        picked in ``answer``."""
        y = other_side(x)
        relay = call.relay
        assert relay is not None
        chosen = g711_formats(answer)
        new = chosen[0] if chosen else mine
        if mine is None or new is None or new == mine:
            relay.set_transcoding(leg_of(x), None)
            relay.set_transcoding(leg_of(y), None)
            call.caller_codec = None
        else:
            relay.set_transcoding(leg_of(y), Transcoding.between(int(mine), int(new)))
            relay.set_transcoding(leg_of(x), Transcoding.between(int(new), int(mine)))
            # `caller_codec` is the a side's codec when the legs differ (see _hold_music).
            call.caller_codec = mine if y == "a" else new
        if logger.isEnabledFor(logging.INFO) and new != mine:
            logger.info("call %s: transcoding %s <-> %s after transfer", call.id, mine, new)

    @staticmethod
    def _first_g711(sd: SessionDescription | None) -> str | None:
        f = g711_formats(sd)
        return f[0] if f else None

    def _resume(
        self, call: Call, y: Side, answer: SessionDescription, codec: str | None
    ) -> None:
        """Take the transferee off the hold the transferor put it on (RFC 3264 8.4); ``codec``
        is the one it talks."""
        d, p = call.dialog(y), call.peer(y)
        if d is None or p is None or call.relay is None or call.state != "answered":
            return
        if call.reinvite_pending:
            # An offer/answer of the phones is still in flight (RFC 3261 14.1): try again
            # once it is over rather than cause a 491.
            asyncio.get_running_loop().call_later(
                0.2, self._resume, call, y, answer, codec)
            return
        call.reinvite_pending = True
        codec = codec or self._first_g711(answer) or "0"
        try:
            offer = with_direction(g711_offer(answer, codec), "sendrecv")
        except (SdpError, ValueError):
            offer = answer
        body = self.calls._sdp_for(call, y, offer)

        def done(resp: Response | None) -> None:
            call.reinvite_pending = False
            if resp is not None and 200 <= resp.status < 300:
                self.calls.ack_2xx(d, p, resp)
                sd = _sdp(resp)
                if sd is not None and call.relay is not None:
                    call.last_sdp[y] = sd
                    end = audio_endpoint(sd)
                    if end is not None:
                        call.relay.set_remote(leg_of(y), end)
        self.calls.request_in_dialog(d, p, "INVITE", body, done)

    def _notify(self, t: Transfer, code: int, reason: str, *, final: bool = False) -> None:
        """RFC 3515 2.4.4/2.4.5: the progress of the referenced call, as a sipfrag."""
        if t.transferor_gone:
            return
        app = self.app
        body = f"SIP/2.0 {code} {reason}\r\n".encode()
        req = t.refer_dialog.create_request("NOTIFY", app.contact(t.refer_peer), body=body)
        req.headers.add("Event", "refer")
        req.headers.add("Subscription-State",
                        "terminated;reason=noresource" if final else "active;expires=60")
        req.headers.add("Content-Type", "message/sipfrag;version=2.0")
        app.add_via(req, t.refer_peer)
        # Nothing to do with the answer: the NOTIFY only reports (RFC 3515 2.4.5).
        key = app.layer.send_request(req, t.refer_peer, app.now())
        app.own_requests[key] = OwnRequest(app, lambda _resp: None)

    def _cancel_forks(self, t: Transfer, *, completed_elsewhere: bool = False) -> None:
        for fork in t.forks.values():
            if not fork.done:
                self.calls._cancel_fork(fork, t.call, completed_elsewhere=completed_elsewhere)

    # -- responses and failures of the PBX's own requests ------------------------------------
    def on_response(self, resp: Response, key: str) -> bool:
        if key in self._forks:
            t, fork = self._forks[key]
            self._on_fork_response(t, fork, resp)
            return True
        return False

    def on_failure(self, key: str) -> bool:
        if key in self._forks:
            t, fork = self._forks.pop(key)
            fork.done, fork.status = True, 408
            if not t.done and all(f.done for f in t.forks.values()):
                self._failed(t, 408, "Request Timeout")
            return True
        return False


def _sdp(msg: Response | None) -> SessionDescription | None:
    if msg is None or not msg.body or msg.content_type != "application/sdp":
        return None
    try:
        sd = SessionDescription.parse(msg.body)
    except SdpError:
        return None
    return sd if sd.audio is not None else None
