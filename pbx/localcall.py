"""Calls the PBX answers itself: the caller talks to the PBX's media engine, not to a phone.

A local call has one leg. The PBX answers the INVITE with its own SDP
(:func:`media.sdp.audio_answer`) pointing at a :class:`media.local.LocalMedia` port, so it
hears the caller through a jitter buffer on the engine clock, gets the caller's keys however
the phone sends them (RFC 4733, SIP INFO or in-band, by the user's ``dtmf_mode``), and plays
prompts back on one continuous RTP stream. What happens on the call is a *service*: a coroutine
that takes the :class:`LocalCall` and uses :meth:`LocalCall.play` and :meth:`LocalCall.key`;
when it returns, the PBX hangs up. The echo test and the key test (:mod:`pbx.services`) are
services; so are IVR menus.

The call gets the same call record as any other (started, answered by the PBX, ended), with the
keys the caller pressed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import count
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from media.digits import DigitEvent
from media.endpoint import LocalLeg
from media.local import LocalMedia
from media.player import FrameSource
from media.relay import NoPortsError
from media.sdp import SdpError, SessionDescription, audio_answer, audio_endpoint
from sip.dialog import Dialog, new_tag
from sip.message import Request
from sip.transaction import Peer

from .callstate import ALLOW, SUPPORTED, Outsider, display_name, user_id, utcnow
from .records import CallAnswered, CallEnded, CallStarted

if TYPE_CHECKING:
    from .calls import CallController
    from .callstate import Call, LegState
    from .config import User
    from .routing import Target

logger = logging.getLogger(__name__)

Service = Callable[["LocalCall"], Awaitable[None]]
AudioSink = Callable[[NDArray[np.int16]], None]


class CallerGone(Exception):
    """The caller hung up (or the call was ended) while a service was waiting on it."""


@dataclass(eq=False)
class LocalCall:
    """One call answered by the PBX itself, as a service sees it."""

    id: str
    caller: User | Outsider
    number: str
    """What the caller dialled."""
    invite: Request
    txn_key: str
    """The INVITE's server transaction."""
    peer: Peer
    tag: str
    started: datetime
    state: Literal["answering", "answered", "bridged", "ended"] = "answering"
    media: LocalMedia | None = None
    dialog: Dialog | None = None
    answered_at: datetime | None = None
    answered_mono: float = 0.0
    keys: list[str] = field(default_factory=list)
    """Every key the caller pressed, in order (for the call record)."""
    audio_sink: AudioSink | None = None
    """Gets each 20 ms frame heard from the caller (after the jitter buffer), when set."""
    sdp_id: int = 0
    sdp_version: int = 0
    rx_seen: tuple[int, float] = (0, 0.0)
    """RTP packets counted at the last media check, and when that count last grew."""
    task: asyncio.Task[None] | None = None
    offer: SessionDescription | None = None
    """The caller's SDP offer (a bridge to a phone offers it on)."""
    bridge: Call | None = None
    """The call ringing a phone for this caller right now (see :meth:`connect`)."""
    connector: Callable[[LocalCall, Target], Awaitable[int | None]] | None = None
    missed: bool = False
    """The PBX answered only to say nobody is available: recorded as a missed call."""
    before_end: Callable[[], None] | None = None
    """Run as the call ends, before its record's end is written (a queue writes the caller's
    result and wait first, so the ended record carries them)."""
    placed: bool = False
    """The PBX placed this call itself (:mod:`pbx.originate`): the phone on it was called, so
    in the call record it is the callee's side."""
    leg_numbers: count[int] = field(default_factory=lambda: count(1))
    """Numbers the legs of this call's record (shared by every call of the PBX that makes legs
    of the same record: the bridge to a phone, a callback's agent leg)."""
    leg_kind: str | None = None
    """The kind of the legs this caller is connected through (``callback``); None: as the
    target says (ring, outside)."""
    leg_queue: str | None = None
    party_leg: LegState | None = None
    """The answered leg of the phone on this call, when the PBX called it (a callback's agent)."""
    _keys: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    _ended: asyncio.Event = field(default_factory=asyncio.Event)

    # -- what a service uses ---------------------------------------------------------------
    async def play(self, source: FrameSource, *, barge_in: bool = False) -> str | None:
        """Play ``source`` to the caller until it ends. With ``barge_in``, a key pressed
        meanwhile stops it at once and is returned (and stays consumed); without, keys wait in
        the queue for :meth:`key` (type-ahead). Raises :class:`CallerGone`."""
        media = self._live_media()
        if barge_in and not self._keys.empty():
            return self._keys.get_nowait()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        media.play(source, on_done=finished)
        waits: set[asyncio.Future[Any]] = {done, asyncio.ensure_future(self._ended.wait())}
        key_wait: asyncio.Future[str] | None = None
        if barge_in:
            key_wait = asyncio.ensure_future(self._keys.get())
            waits.add(key_wait)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                if w is not done and not w.done():
                    w.cancel()
        if key_wait is not None and key_wait.done() and not key_wait.cancelled():
            media.stop_playing()
            return key_wait.result()
        if self._ended.is_set():
            raise CallerGone(self.id)
        return None

    async def key(self, timeout: float) -> str | None:
        """The next key the caller presses (or pressed already), or None after ``timeout``
        seconds. Raises :class:`CallerGone`."""
        self._live_media()
        if not self._keys.empty():
            return self._keys.get_nowait()
        get = asyncio.ensure_future(self._keys.get())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({get, ended}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            if not get.done():
                get.cancel()
        if get.done() and not get.cancelled():
            return get.result()
        if self._ended.is_set():
            raise CallerGone(self.id)
        return None

    async def connect(self, target: Target) -> int | None:
        """Ring ``target`` (a user, a ring group) for the caller, who hears ringback meanwhile.
        None when someone answered: the caller now talks to them, and the service must return
        without playing anything more. Otherwise the SIP status why not (480 nobody available,
        486 busy, ...), and the caller is still here. Raises :class:`CallerGone`."""
        self._live_media()
        assert self.connector is not None
        code = await self.connector(self, target)
        if code is None:
            return None
        if self._ended.is_set():
            raise CallerGone(self.id)
        return code

    def stream(self, source: FrameSource) -> None:
        """Play ``source`` (endless ones too: music, an echo) without waiting for its end."""
        self._live_media().play(source)

    async def wait_ended(self, timeout: float) -> bool:
        """Wait until the caller hangs up; False if ``timeout`` seconds passed first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), timeout)
        return self._ended.is_set()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    # -- engine callbacks ------------------------------------------------------------------
    def _on_digit(self, event: DigitEvent) -> None:
        self.keys.append(event.digit)
        self._keys.put_nowait(event.digit)

    def _on_audio(self, frame: NDArray[np.int16]) -> None:
        sink = self.audio_sink
        if sink is not None:
            sink(frame)

    def _live_media(self) -> LocalMedia:
        if self._ended.is_set() or self.media is None:
            raise CallerGone(self.id)
        return self.media


class LocalCalls:
    """The local-call side of the call controller (one per controller)."""

    def __init__(self, calls: CallController) -> None:
        self.calls = calls
        self.app = calls.app
        self._by_dialog: dict[tuple[str, str], LocalCall] = {}
        self._by_key: dict[str, LocalCall] = {}
        self.active: dict[str, LocalCall] = {}
        from .originate import Originator

        #: Calls the PBX places itself (a queue's callback rings the agent first).
        self.originator = Originator(self)

    def __len__(self) -> int:
        return len(self.active)

    # -- a new call --------------------------------------------------------------------------
    def on_invite(self, req: Request, peer: Peer, key: str, caller: User | Outsider,
                  service: Service, name: str, *, number: str | None = None,
                  ) -> LocalCall | None:
        """Answer the INVITE and run ``service``; the call (None if refused at once)."""
        app = self.app
        try:
            offer = SessionDescription.parse(req.body) if req.body else None
        except SdpError as e:
            app.respond(key, req, 400, f"Bad SDP: {e}"[:80], to_tag=new_tag())
            return None
        if offer is None:
            # The PBX answers with media it plays; a delayed offer would need its own offer
            # in the 200 (RFC 3261 13.2.1), which phones calling a service never do.
            app.respond(key, req, 488, "SDP offer required", to_tag=new_tag())
            return None
        call = LocalCall(
            id=str(uuid.uuid4()), caller=caller, number=number or req.uri.user or "",
            invite=req,
            txn_key=key, peer=peer, tag=new_tag(), started=utcnow(),
            sdp_id=int(uuid.uuid4().int % 10**9), offer=offer, connector=self.connect,
        )
        self.active[call.id] = call
        self._by_key[key] = call
        app.records.emit(CallStarted(
            call_id=call.id, sip_call_id=req.call_id,
            direction="inbound" if isinstance(caller, Outsider) else "internal",
            from_number=caller.extension, from_name=display_name(caller),
            to_number=call.number, caller_user=user_id(caller), callee_user=None,
            started_at=call.started,
        ))
        app.respond(key, req, 100)
        self.app.spawn(self._answer(call, offer, service, name))
        return call

    def adopt(self, call: LocalCall) -> None:
        """A call the PBX placed itself was answered (see :mod:`pbx.originate`): from now on
        it is handled like any local call (its dialog's requests, hang-up, media check)."""
        assert call.dialog is not None
        self.active[call.id] = call
        self._by_dialog[(call.dialog.call_id, call.tag)] = call

    def take_over(self, ringing: Call, service: Service, name: str, *,
                  missed: bool = False) -> None:
        """Answer a caller who has been hearing ringback (a ring group nobody picked up) and
        run ``service`` for them; the call keeps its id, so its record goes on. ``missed``:
        the PBX only tells the caller nobody is available, so the record stays a missed call
        (no answer recorded, disposition no_answer)."""
        assert ringing.a_offer is not None
        call = LocalCall(
            id=ringing.id, caller=ringing.caller, number=ringing.a_invite.uri.user or "",
            invite=ringing.a_invite, txn_key=ringing.a_key, peer=ringing.a_peer,
            tag=ringing.a_tag, started=ringing.started, sdp_id=int(uuid.uuid4().int % 10**9),
            offer=ringing.a_offer, connector=self.connect, missed=missed,
            leg_numbers=ringing.leg_numbers,
        )
        self.active[call.id] = call
        self._by_key[call.txn_key] = call
        self.app.spawn(self._answer(call, ringing.a_offer, service, name))

    async def _answer(self, call: LocalCall, offer: SessionDescription, service: Service,
                      name: str) -> None:
        try:
            await self._answer_call(call, offer, service, name)
        except Exception:
            # A fault of ours must not leave the caller with nothing but 100 Trying.
            logger.exception("call %s: could not be answered", call.id)
            if call.state == "answering":
                self._refuse(call, 500, "Internal error")

    async def _answer_call(self, call: LocalCall, offer: SessionDescription,
                           service: Service, name: str) -> None:
        app = self.app
        # Negotiate first (the port is not known before binding): codec and telephone-event.
        probe = audio_answer(offer, app.media_address, 2, call.sdp_id, 0)
        if probe is None:
            self._refuse(call, 488, "No G.711 audio offered")
            return
        _, pt, event = probe
        leg = LocalLeg(pt, event, call.caller.dtmf_mode)
        try:
            media = await LocalMedia.open(app.relay.ports, app.media_bind_host, app.playback,
                                          leg, call._on_digit, call._on_audio)
        except (NoPortsError, OSError) as e:
            logger.error("call %s: no media ports: %s", call.id, e)
            self._refuse(call, 503, "No media ports")
            return
        if call.state == "ended":  # cancelled meanwhile
            await media.close()
            return
        call.media = media
        end = audio_endpoint(offer)
        if end is not None:
            media.set_remote(end)
        sdp = self._sdp(call, offer)
        if sdp is None:
            self._refuse(call, 488, "No G.711 audio offered")
            return
        out = app.make_response(call.invite, 200, to_tag=call.tag, dialog=True)
        out.headers.add("Contact", str(app.contact(call.peer)))
        out.headers.add("Allow", ALLOW)
        out.headers.add("Supported", SUPPORTED)
        out.headers.add("Content-Type", "application/sdp")
        out.body = sdp
        call.dialog = Dialog.as_uas(call.invite, call.tag)
        self._by_dialog[(call.dialog.call_id, call.tag)] = call
        app.send_response(call.txn_key, out, app.now())
        call.state = "answered"
        call.answered_at = utcnow()
        call.answered_mono = app.now()
        if not call.missed:
            app.records.emit(CallAnswered(call.id, call.answered_at, None,
                                          (call.answered_at - call.started).total_seconds()))
        app.flush()
        logger.info("call %s: %s answered %s for %s", call.id, name, call.number,
                    call.caller.id)
        call.task = self.app.spawn(self._run(call, service, name))

    async def _run(self, call: LocalCall, service: Service, name: str) -> None:
        cause = f"{name} finished"
        try:
            await service(call)
        except CallerGone:
            return
        except Exception:
            logger.exception("call %s: service %s failed", call.id, name)
            cause = f"{name} failed"
        if call.state == "bridged":
            return  # connected to a phone: the bridged call goes on without the service
        if call.state == "answered":
            self.hangup(call, cause)
            self.app.flush()

    def _sdp(self, call: LocalCall, offer: SessionDescription) -> bytes | None:
        assert call.media is not None
        call.sdp_version += 1
        answer = audio_answer(offer, self.app.media_address, call.media.port, call.sdp_id,
                              call.sdp_version, codecs=(str(call.media.leg.codec.payload_type),))
        return None if answer is None else bytes(answer[0])

    def _refuse(self, call: LocalCall, code: int, reason: str) -> None:
        self.app.respond(call.txn_key, call.invite, code, reason, to_tag=call.tag)
        self._end(call, "failed", reason, "system", code)
        self.app.flush()

    # -- connecting the caller to a phone ----------------------------------------------------
    async def connect(self, call: LocalCall, target: Target) -> int | None:
        """See :meth:`LocalCall.connect`. A queue keeps the caller until their time there is
        over (connected to an agent, or sent away): None either way."""
        from .routing import ToQueue

        if isinstance(target, ToQueue):
            from .queuewait import join_and_wait

            queues = self.calls.queues
            if queues is None:
                return 404
            await join_and_wait(queues, call, target.name, 0)
            return None
        plan, group = self.calls.plan_for(target)
        if isinstance(plan, int):
            return plan
        number = call.number
        code = await self.calls.bridge_local(call, plan, to_number=number, group=group)
        return code

    def hand_over(self, call: LocalCall) -> None:
        """The caller now talks to a phone through the relay: the local leg is done, and the
        dialog belongs to the bridged call (which also keeps the record going)."""
        call.state = "bridged"
        call.bridge = None
        call._ended.set()
        self.active.pop(call.id, None)
        self._by_key.pop(call.txn_key, None)
        if call.dialog is not None:
            self._by_dialog.pop((call.dialog.call_id, call.tag), None)
        if call.media is not None:
            self.app.spawn(call.media.close())

    # -- requests inside the dialog ----------------------------------------------------------
    def on_in_dialog(self, req: Request, key: str) -> bool:
        """Handle a request of a local call's dialog; False if it is not one."""
        call = self._by_dialog.get((req.call_id, req.to_tag or ""))
        if call is None:
            return False
        app = self.app
        assert call.dialog is not None
        if not call.dialog.accept_remote_cseq(req):
            app.respond(key, req, 500, "CSeq out of order")
            return True
        method = req.method
        if method == "BYE":
            app.respond(key, req, 200)
            self._end(call, "answered", "caller hung up", "caller", None)
        elif method == "INFO":
            if call.media is not None and req.body:
                call.media.on_info(req.content_type or "", req.body)
            app.respond(key, req, 200)
        elif method in ("INVITE", "UPDATE"):
            self._reoffer(call, req, key)
        elif method == "OPTIONS":
            app.respond(key, req, 200)
        else:
            resp = app.make_response(req, 405)
            resp.headers.add("Allow", ALLOW)
            app.send_response(key, resp, app.now())
        return True

    def _reoffer(self, call: LocalCall, req: Request, key: str) -> None:
        """A re-INVITE or UPDATE (hold, a new address): answer with the same port."""
        app = self.app
        assert call.dialog is not None and call.media is not None
        if req.method == "INVITE" and call.bridge is not None and call.bridge.reinvite_pending:
            app.respond(key, req, 491)  # RFC 3261 14.1: our move re-INVITE is under way
            return
        sdp: bytes | None = None
        if req.body:
            try:
                offer = SessionDescription.parse(req.body)
            except SdpError as e:
                app.respond(key, req, 400, f"Bad SDP: {e}"[:80])
                return
            sdp = self._sdp(call, offer)
            if sdp is None:
                app.respond(key, req, 488)
                return
            call.media.set_remote(audio_endpoint(offer))
        if req.method == "INVITE":
            call.dialog.update_target(req)
        out = app.make_response(req, 200)
        out.headers.add("Contact", str(app.contact(call.peer)))
        if sdp is not None:
            out.headers.add("Content-Type", "application/sdp")
            out.body = sdp
        app.send_response(key, out, app.now())

    def on_cancel(self, invite_key: str) -> bool:
        """The caller cancelled before the PBX answered (it answers within milliseconds, so
        this is a race). True if the INVITE was a local call's."""
        call = self._by_key.get(invite_key)
        if call is None:
            return False
        if call.state == "answering":
            self.app.respond(call.txn_key, call.invite, 487, to_tag=call.tag)
            self._end(call, "cancelled", "caller cancelled", "caller", 487)
        return True

    def on_failure(self, key: str) -> bool:
        """Our 200 was never ACKed (RFC 3261 13.3.1.4): end the call."""
        call = self._by_key.get(key)
        if call is None:
            return False
        if call.state == "answered":
            self.hangup(call, "no ACK from caller")
        return True

    # -- the end -----------------------------------------------------------------------------
    def hangup(self, call: LocalCall, cause: str) -> None:
        """End the call from the PBX (the service finished, shutdown, no media)."""
        if call.state == "ended":
            return
        if call.dialog is not None:
            self.calls._send_bye(call.dialog, call.peer)
        self._end(call, "no_answer" if call.missed else "answered", cause, "system", None)

    def ended_elsewhere(self, call: LocalCall, cause: str, by: str) -> None:
        """The caller's dialog was ended by the call it was being connected to (a BYE already
        went out): end the local call without another BYE."""
        if call.state == "answered":
            self._end(call, "answered", cause, by, None)

    def hangup_all(self, cause: str) -> None:
        for call in list(self.active.values()):
            self.hangup(call, cause)

    def check_media(self, now: float, timeout: float) -> None:
        """Hang up answered local calls that sent no RTP for ``timeout`` seconds."""
        if timeout <= 0:
            return
        for call in list(self.active.values()):
            media = call.media
            if call.state != "answered" or media is None:
                continue
            count, since = call.rx_seen
            if media.packets != count or since == 0.0:
                call.rx_seen = (media.packets, now)
                continue
            if now - since >= timeout:
                logger.info("call %s: no RTP for %.0f s, hanging up", call.id, now - since)
                self.hangup(call, "no media")

    def _end(self, call: LocalCall, disposition: str, cause: str, by: str,
             code: int | None) -> None:
        if call.state in ("ended", "bridged"):
            return
        if call.missed and disposition == "answered":
            disposition = "no_answer"  # the PBX answered only to say or play something
        call.state = "ended"
        call._ended.set()
        if call.before_end is not None:
            hook, call.before_end = call.before_end, None
            try:
                hook()
            except Exception:
                logger.exception("call %s: end hook failed", call.id)
        if call.bridge is not None:
            # The caller gave up while a phone rang for them.
            self.calls.close_legs(call.bridge, None, "cancelled")
            self.calls.hangup(call.bridge, "caller hung up")
        self.active.pop(call.id, None)
        self._by_key.pop(call.txn_key, None)
        if call.dialog is not None:
            self._by_dialog.pop((call.dialog.call_id, call.tag), None)
        if call.task is not None and not call.task.done() and by != "system":
            # The service sees CallerGone at its next await; give it no more time than that.
            call.task.cancel()
        if call.media is not None:
            if logger.isEnabledFor(logging.INFO):
                leg = call.media.leg
                rx = leg.reception
                lost, jitter = (rx[1].cumulative_lost, rx[1].jitter_seconds * 1000) if rx \
                    else (0, 0.0)
                logger.info("call %s ended: %s (%s); caller sent %d RTP (%d lost, jitter "
                            "%.1f ms, %d ignored, %d malformed, %d concealed frames), keys %r",
                            call.id, disposition, cause, call.media.packets, lost, jitter,
                            leg.ignored, leg.malformed, leg.concealed, "".join(call.keys))
            self.app.spawn(call.media.close())
        ended = utcnow()
        if call.answered_at is not None and not call.missed:
            duration = (ended - call.answered_at).total_seconds()
            ring = (call.answered_at - call.started).total_seconds()
        else:
            duration, ring = 0.0, (ended - call.started).total_seconds()
        self.app.records.emit(CallEnded(
            call.id, ended, disposition, cause, by, code, max(0.0, duration), ring,
            keys="".join(call.keys) or None,
        ))
