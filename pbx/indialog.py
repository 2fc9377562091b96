"""Requests inside the dialogs of a bridged call: relayed to the other leg, with what the PBX
itself does on the way (hold music, the record key, transfers, ACK bookkeeping).

Mixed into :class:`pbx.calls.CallController`, which owns the state used here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from media.g711 import Codec, get_codec
from media.player import FrameSource, RtpStream
from sip.dialog import Dialog
from sip.errors import LocalSipError
from sip.message import Request, Response
from sip.transaction import Peer

from .callstate import (
    ALLOW,
    FORWARDED_METHODS,
    SUPPORTED,
    Call,
    Forwarded,
    Side,
    codec_of,
    is_hold,
    leg_of,
    max_forwards,
    other_side,
)

if TYPE_CHECKING:
    from media.sdp import SessionDescription

    from .localcall import LocalCalls
    from .sipapp import SipApp
    from .transfer import Transfers

logger = logging.getLogger(__name__)


class OwnRequest:
    """Hands the final answer of one request the PBX sent itself to a callback (registered
    in ``SipApp.own_requests``, which drops it on a timeout)."""

    __slots__ = ("_app", "_on_final")

    def __init__(self, app: SipApp, on_final: Callable[[Response | None], None]) -> None:
        self._app = app
        self._on_final = on_final

    def on_response(self, response: Response, key: str) -> None:
        if response.status >= 200:
            self._app.own_requests.pop(key, None)
            self._on_final(response)

    def on_failure(self, key: str) -> None:
        self._on_final(None)


class InDialog:
    """BYE, re-INVITE, INFO, UPDATE, REFER, ... inside an answered call, and the ACKs."""

    app: SipApp
    transfers: Transfers
    local: LocalCalls
    _dialogs: dict[tuple[str, str], tuple[Call, Side]]
    _forwarded: dict[str, Forwarded]
    _byes: set[str]
    _acks: dict[tuple[str, str], tuple[Request, Peer]]
    _departed: set[tuple[str, str]]

    if TYPE_CHECKING:
        def _end(self, call: Call, disposition: str, cause: str, by: str | None,
                 code: int | None) -> None: ...

        def _relay_answer(self, call: Call, from_side: Side, body: bytes,
                          rename: tuple[str, str] | None = None) -> bytes: ...

    def on_in_dialog(self, req: Request, peer: Peer, key: str) -> bool:
        """Handle a request with a To tag; False if it belongs to no dialog (answer 481)."""
        app = self.app
        found = self._dialogs.get((req.call_id, req.to_tag or ""))
        if found is None:
            if self.local.on_in_dialog(req, key):
                return True
            if (req.call_id, req.to_tag or "") in self._departed and req.method == "BYE":
                app.respond(key, req, 200)  # the BYE crossed ours after a transfer
                return True
            return False
        call, side = found
        dialog = call.dialog(side)
        assert dialog is not None
        if not dialog.accept_remote_cseq(req):
            app.respond(key, req, 500, "CSeq out of order")
            return True
        method = req.method
        if method == "BYE":
            app.respond(key, req, 200)
            if self.transfers.on_transferor_bye(call, side):
                return True
            other = other_side(side)
            od, op = call.dialog(other), call.peer(other)
            if od is not None and op is not None:
                self._send_bye(od, op)
            by_caller = (side == "a") != call.a_called
            self._end(call, "answered", "caller hung up" if by_caller else "callee hung up",
                      "caller" if by_caller else "callee", None)
            return True
        if method == "INVITE":
            if call.reinvite_pending:
                app.respond(key, req, 491)  # RFC 3261 14.1: glare
                return True
            dialog.update_target(req)
            call.reinvite_pending = True
            self._forward(call, side, key, req)
            return True
        if method == "REFER":
            self.transfers.on_refer(call, side, req, key)
            return True
        if method == "INFO" and req.headers.get("Record") is not None:
            self._record_key(call, side, req, key)
            return True
        if method in FORWARDED_METHODS:
            self._forward(call, side, key, req)
            return True
        resp = app.make_response(req, 405)
        resp.headers.add("Allow", ALLOW)
        app.send_response(key, resp, app.now())
        return True

    def _forward(self, call: Call, side: Side, key: str, req: Request) -> None:
        app = self.app
        other = other_side(side)
        od, op = call.dialog(other), call.peer(other)
        if od is None or op is None:
            if req.method == "INVITE":
                call.reinvite_pending = False
            app.respond(key, req, 481)
            return
        body = req.body
        if body and req.content_type == "application/sdp":
            if req.method in ("INVITE", "UPDATE"):
                was_held, call.held = call.held, is_hold(body)
                if call.held != was_held:
                    # Resume: whoever sends it, the muted leg is the one that put it on hold.
                    holder = side if call.held else (call.holder or side)
                    call.holder = side if call.held else None
                    self._hold_music(call, holder, call.held)
            body = self._relay_answer(call, side, body) or body
        fwd = od.create_request(req.method, app.contact(op), body=body)
        fwd.headers.set("Max-Forwards", str(max(0, max_forwards(req) - 1)))
        for name in ("Content-Type", "Event", "Subscription-State", "Info-Package"):
            v = req.headers.get(name)
            if v is not None and (name != "Content-Type" or body):
                fwd.headers.add(name, v)
        app.add_via(fwd, op)
        ckey = app.layer.send_request(fwd, op, app.now())
        self._forwarded[ckey] = Forwarded(call, side, key, req, fwd)

    def _on_forwarded_response(self, fw: Forwarded, resp: Response, key: str) -> None:
        app = self.app
        call = fw.call
        if resp.status == 100:
            return
        final = resp.status >= 200
        if final:
            self._forwarded.pop(key, None)
        other = other_side(fw.origin)
        is_invite = fw.request.method == "INVITE"
        if is_invite and final:
            call.reinvite_pending = False
        if is_invite and 200 <= resp.status < 300:
            od, op = call.dialog(other), call.peer(other)
            if od is not None and op is not None:
                od.update_target(resp)
                ack = od.create_request("ACK", app.contact(op), cseq=fw.request.cseq.seq)
                app.add_via(ack, op)
                app.layer.send_ack(ack, op)
                self._remember_ack(od, ack, op)
        if call.state == "ended":
            if final and fw.origin_request.method != "BYE":
                # RFC 3261 15.1.2: the other side hung up meanwhile; the request still gets
                # its final answer.
                with contextlib.suppress(LocalSipError):
                    app.respond(fw.origin_key, fw.origin_request, 487)
            return
        out = app.make_response(fw.origin_request, resp.status, resp.reason)
        if resp.body:
            body = resp.body
            if resp.content_type == "application/sdp":
                body = self._relay_answer(call, other, body) or body
            out.headers.add("Content-Type", resp.headers.get("Content-Type") or "")
            out.body = body
        if is_invite and resp.status < 300:
            out.headers.add("Contact", str(app.contact(call.peer(fw.origin) or call.a_peer)))
        app.send_response(fw.origin_key, out, app.now())

    def _hold_music(self, call: Call, holder: Side, on: bool) -> None:
        """While ``holder`` has the call on hold, the PBX plays music to the other phone and
        does not forward whatever the holding phone sends (its own music or silence)."""
        app = self.app
        relay = call.relay
        if relay is None:
            return
        if not on:
            app.playback.stop(call.id)
            relay.mute(leg_of(holder), False)
            return
        codec = _g711(call.last_sdp.get("b"))
        if other_side(holder) == "a" and call.caller_codec is not None:
            codec = get_codec(int(call.caller_codec))  # the caller's side is transcoded
        if codec is None or app.hold_music is None:
            logger.info("call %s: no G.711 codec agreed, no music on hold", call.id)
            return
        held_leg = leg_of(other_side(holder))
        relay.mute(leg_of(holder), True)
        app.playback.play(call.id, RtpStream(app.hold_music(), codec),
                          lambda data: relay.send_rtp(held_leg, data))

    def _send_ack(self, dialog: Dialog, ack: Request, peer: Peer) -> None:
        self.app.layer.send_ack(ack, peer)
        self._remember_ack(dialog, ack, peer)

    def on_ack(self, req: Request) -> None:
        """The caller's ACK for our 200. Usually nothing to do (the callee was ACKed when it
        answered); after a delayed offer it carries the caller's answer for the callee."""
        found = self._dialogs.get((req.call_id, req.to_tag or ""))
        if found is None:
            return
        call, side = found
        pending = call.pending_b_ack
        if side != "a" or pending is None:
            return
        call.pending_b_ack = None
        dialog, ack, peer = pending
        if req.body and req.content_type == "application/sdp":
            body = self._relay_answer(call, "a", req.body)
            if body:
                ack.headers.add("Content-Type", "application/sdp")
                ack.body = body
        self._send_ack(dialog, ack, peer)

    def _reack(self, resp: Response) -> None:
        found = self._acks.get((resp.call_id, resp.to_tag or ""))
        if found is not None:
            ack, peer = found
            self.app.layer.send_ack(ack, peer)

    def request_in_dialog(self, dialog: Dialog, peer: Peer, method: str, body: bytes,
                          on_final: Callable[[Response | None], None]) -> None:
        """Send a request of the PBX's own in ``dialog`` (a re-INVITE moving or resuming a
        party); ``on_final`` gets its final response, or None on a timeout."""
        app = self.app
        req = dialog.create_request(method, app.contact(peer), body=body)
        if body:
            req.headers.add("Content-Type", "application/sdp")
        if method == "INVITE":
            req.headers.add("Allow", ALLOW)
            req.headers.add("Supported", SUPPORTED)
        app.add_via(req, peer)
        key = app.layer.send_request(req, peer, app.now())
        app.own_requests[key] = OwnRequest(app, on_final)

    def ack_2xx(self, dialog: Dialog, peer: Peer, resp: Response) -> None:
        """ACK a 2xx to a re-INVITE of the PBX's own (RFC 3261 13.2.2.4)."""
        app = self.app
        dialog.update_target(resp)
        ack = dialog.create_request("ACK", app.contact(peer), cseq=resp.cseq.seq)
        app.add_via(ack, peer)
        self._send_ack(dialog, ack, peer)

    def _send_bye(self, dialog: Dialog, peer: Peer) -> None:
        app = self.app
        bye = dialog.create_request("BYE", app.contact(peer))
        app.add_via(bye, peer)
        self._byes.add(app.layer.send_request(bye, peer, app.now()))

    def _depart(self, dialog: Dialog) -> None:
        """``dialog``'s phone left the call in a transfer; answer its BYE for a while."""
        k = (dialog.call_id, dialog.local_tag)
        self._departed.add(k)
        asyncio.get_running_loop().call_later(64 * self.app.t1 + 1.0, self._departed.discard, k)

    def _record_key(self, call: Call, side: Side, req: Request, key: str) -> None:
        """A phone's record key (INFO with ``Record: on|off``, as BroadWorks-style phones
        send it): "on" starts or resumes the call's recording, "off" pauses it (the file keeps
        its timeline, with silence for the paused time)."""
        app = self.app
        value = (req.headers.get("Record") or "").strip().lower()
        recordings = app.recordings
        if value not in ("on", "off") or recordings is None or call.relay is None:
            app.respond(key, req, 400 if recordings is not None else 403,
                        "Record must be on or off" if recordings is not None
                        else "Recording disabled")
            return
        now = app.now()
        if value == "on":
            if not recordings.is_recording(call.id):
                recordings.start(call.id, call.relay, now)
            elif recordings.is_paused(call.id):
                recordings.resume(call.id, now)
        elif recordings.is_recording(call.id):
            recordings.pause(call.id, now)
        logger.info("call %s: recording %s by %s", call.id,
                    "on" if value == "on" else "paused", call.user(side).id)
        app.respond(key, req, 200)
        if app.prompts is not None:
            self._notice(call, side, app.prompts.get(
                "recording_resumed" if value == "on" else "recording_paused"))

    def _notice(self, call: Call, side: Side, source: FrameSource) -> None:
        """Play a short announcement to ``side``'s phone only (the other party does not hear
        it); what the other phone says is held back meanwhile, so the phone gets one stream at
        a time, as with music on hold."""
        relay, app = call.relay, self.app
        codec = codec_of(call, side)
        if relay is None or codec is None or call.held or call.id in app.playback:
            return
        other = leg_of(other_side(side))
        key = (call.id, "notice")

        def done() -> None:
            if not call.held and call.id not in app.playback:
                relay.mute(other, False)

        relay.mute(other, True)
        app.playback.play(key, RtpStream(source, get_codec(int(codec))),
                          lambda data: relay.send_rtp(leg_of(side), data), done)

    def _remember_ack(self, dialog: Dialog, ack: Request, peer: Peer) -> None:
        # Kept as long as the far side may retransmit its 2xx (Timer M, 64*T1, RFC 6026),
        # so a lost ACK is re-sent; then forgotten.
        k = (dialog.call_id, dialog.remote_tag)
        entry = (ack, peer)
        self._acks[k] = entry

        def forget() -> None:
            if self._acks.get(k) is entry:
                del self._acks[k]

        asyncio.get_running_loop().call_later(64 * self.app.t1 + 1.0, forget)


def _g711(sd: SessionDescription | None) -> Codec | None:
    """The G.711 codec the answer agreed on (its first audio format that is PCMU or PCMA)."""
    audio = sd.audio if sd is not None else None
    if audio is None:
        return None
    for fmt in audio.formats:
        if fmt in ("0", "8"):
            return get_codec(int(fmt))
    return None
