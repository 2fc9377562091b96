"""The SIP application: the transaction user that turns SIP events into PBX behaviour.

It answers OPTIONS, REGISTER (through :mod:`pbx.registration`) and the generic errors of
RFC 3261 8.2 (416 unsupported URI scheme, 420 bad extension, 405/501 methods, 481 unknown
dialog), and hands calls to :class:`pbx.calls.CallController`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from media.playback import PlaybackEngine
from media.player import FrameSource
from sip.dialog import new_tag
from sip.errors import LocalSipError, ParseError
from sip.message import Request, Response
from sip.registrar import Binding
from sip.transaction import (
    AckReceived,
    Peer,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionEvent,
    TransactionLayer,
    TransactionTimeout,
    TransportError,
    new_branch,
)
from sip.uri import Address, SipUri
from sip.via import Via

from .auth import Authenticator, Challenge
from .calls import CallController
from .callstate import ALLOW, max_forwards
from .presence import Presence
from .recording import Recordings
from .records import RecordSink
from .registration import RegistrationService, source_to_peer
from .routing import trunk_for_source

if TYPE_CHECKING:
    from media.udp import RtpRelay

    from .config import Config, User
    from .prompts import Prompts

logger = logging.getLogger(__name__)


class ClientOwner(Protocol):
    """Takes the answers to requests the PBX sent itself (see ``SipApp.own_requests``)."""

    def on_response(self, response: Response, key: str) -> None: ...

    def on_failure(self, key: str) -> None: ...


#: Methods the PBX knows but does not serve outside a dialog: 405 (RFC 3261 8.2.1).
_KNOWN_METHODS = frozenset(
    {"SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE", "REFER", "PRACK", "INFO", "UPDATE", "BYE"}
)


class SipApp:
    """Composition of the SIP services; everything runs on the event loop thread."""

    def __init__(
        self,
        config: Config,
        layer: TransactionLayer,
        relay: RtpRelay,
        records: RecordSink,
        registration: RegistrationService,
        auth: Authenticator,
        flush: Callable[[], None],
        local_address: Callable[[str], tuple[str, int]],
        media_address: str,
        media_bind_host: str,
    ) -> None:
        self.layer = layer
        self.relay = relay
        self.records = records
        self.registration = registration
        self.auth = auth
        self.flush = flush
        self._local_address = local_address
        self._advertised_cache: dict[str, tuple[str, int]] = {}
        self.media_address = media_address
        self.media_bind_host = media_bind_host
        self.calls = CallController(self)
        self.playback = PlaybackEngine()
        #: Told when a user's phones start ringing for a call (call id, user id): the event
        #: stream's screen pop for that user (set by the server; None: nobody listens).
        self.on_offer: Callable[[str, str], None] | None = None
        #: Makes the source played to a party on hold (None: no music on hold).
        self.hold_music: Callable[[], FrameSource] | None = None
        #: The resolved prompts of the running config (set by the server, swapped on reload).
        self.prompts: Prompts | None = None
        #: Where answered calls are recorded when ``record_calls`` is on (set by the server).
        self.recordings: Recordings | None = None
        #: Client transactions of requests the PBX sends on its own behalf (trunk REGISTERs,
        #: ...) by key, with the object that takes their answers. The owner removes the entry
        #: after a final response; a timeout or transport failure removes it here.
        self.own_requests: dict[str, ClientOwner] = {}
        #: Users' presence (the server replaces it with one backed by the database).
        self.presence = Presence(lambda _job: None)
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self.apply_config(config)

    def apply_config(self, config: Config) -> None:
        """Take a new config (reload): users, timers and names; calls in progress keep going."""
        self.config = config
        self._users = config.user_index()
        sip = config.sip
        self.domain = sip.domain
        self.user_agent = sip.user_agent
        self.ring_timeout = float(sip.ring_timeout)
        self.t1 = float(sip.t1)
        self.record_calls = config.recording.enabled

    # -- helpers used by the services --------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` as a task the PBX keeps a reference to until it is done (the event
        loop itself only keeps a weak one)."""
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def now(self) -> float:
        return self._loop.time()

    def find_user(self, name: str) -> User | None:
        """The user with this extension or id (config forbids an id equal to another's
        extension, so the two never clash)."""
        return self._users.get(name)

    def lookup(self, user_id: str) -> list[Binding]:
        return self.registration.registrar.lookup(user_id, time.time())

    def binding_peer(self, binding: Binding) -> Peer:
        return source_to_peer(binding.source)

    def _advertised(self, transport: str) -> tuple[str, int]:
        """Host (IPv6 in brackets) and port to put in our Via and Contact for ``transport``.

        The sockets do not move once listening, so this is worked out once per transport
        rather than asked of the socket for every request the PBX sends.
        """
        found = self._advertised_cache.get(transport)
        if found is None:
            host, port = self._local_address(transport)
            if host in ("0.0.0.0", "::"):
                host = self.media_address
            found = (f"[{host}]" if ":" in host else host, port)
            self._advertised_cache[transport] = found
        return found

    def contact(self, peer: Peer) -> Address:
        host, port = self._advertised(peer.transport)
        params: dict[str, str | None] = {}
        if peer.transport != "udp":
            params["transport"] = peer.transport
        return Address(SipUri("sip", user="pbx", host=host, port=port, params=params))

    def add_via(self, req: Request, peer: Peer) -> None:
        host, port = self._advertised(peer.transport)
        # RFC 3581: ask for rport so answers come back through NATs to our source port.
        req.add_via(Via(peer.transport.upper(), host, port,
                        {"branch": new_branch(), "rport": None}))

    def make_response(
        self,
        req: Request,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        dialog: bool = False,
    ) -> Response:
        resp = req.response(status, reason, to_tag=to_tag, copy_record_route=dialog)
        resp.headers.add("Server", self.user_agent)
        return resp

    def send_response(self, key: str, resp: Response, now: float | None = None) -> None:
        """Send through a server transaction; one that already ended (the phone gave up,
        or a timer fired while a call was being set up) makes this a no-op."""
        try:
            self.layer.send_response(key, resp, self.now() if now is None else now)
        except LocalSipError as e:
            logger.debug("response %d not sent: %s", resp.status, e)

    def respond(
        self,
        key: str,
        req: Request,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
    ) -> None:
        # RFC 3261 8.2.6.2: every response but 100 carries a To tag.
        if to_tag is None and status != 100 and req.to_tag is None:
            to_tag = new_tag()
        self.send_response(key, self.make_response(req, status, reason, to_tag=to_tag))

    # -- the transaction user ----------------------------------------------------------------
    def handle(self, ev: TransactionEvent) -> None:
        if isinstance(ev, RequestReceived):
            if ev.server_key is None:
                if ev.request.method == "ACK":
                    self.calls.on_ack(ev.request)
                return
            self.on_request(ev.request, ev.peer, ev.server_key)
        elif isinstance(ev, ResponseReceived):
            if ev.client_key in self.own_requests:
                self.own_requests[ev.client_key].on_response(ev.response, ev.client_key)
                return
            self.calls.on_response(ev.response, ev.client_key)
        elif isinstance(ev, AckReceived):
            self.calls.on_ack(ev.request)
        elif isinstance(ev, (TransactionTimeout, TransportError)):
            if ev.key in self.own_requests:
                self.own_requests.pop(ev.key).on_failure(ev.key)
                return
            self.calls.on_failure(ev.key)
        elif (
            isinstance(ev, StrayResponse)
            and ev.response.status // 100 == 2
            and ev.response.cseq.method == "INVITE"
        ):
            # A 2xx after the client transaction is gone: our ACK was lost (RFC 6026 7.2).
            self.calls.on_response(ev.response, "")

    def on_request(self, req: Request, peer: Peer, key: str) -> None:
        try:
            self._dispatch(req, peer, key)
        except ParseError as e:
            # A header parsed on first use (From, To, Contact, Request-URI) was malformed.
            resp = req.response(e.status_code, to_tag=new_tag())
            detail = str(e)[:100].replace('"', "'")
            resp.headers.add("Warning", f'399 pbx "{detail}"')
            self.send_response(key, resp)
        except Exception:
            # A fault of ours must not leave the phone retransmitting into silence.
            logger.exception("error handling %s %s", req.method, req.call_id)
            self.send_response(key, req.response(500, to_tag=new_tag()))

    def _dispatch(self, req: Request, peer: Peer, key: str) -> None:
        method = req.method
        if method == "ACK":
            self.calls.on_ack(req)
            return
        # RFC 3261 8.2.2.1: we serve sip: and sips: URIs only (RFC 4475 "unkscm", "novelsc").
        if not req.uri.is_sip:
            self.respond(key, req, 416)
            return
        # RFC 3261 8.2.2.3: no extensions are required of us, so any Require is unsupported.
        required = [r for r in req.headers.get_all("Require") if r]
        if required and method not in ("CANCEL",):
            resp = self.make_response(req, 420, to_tag=None if req.to_tag else new_tag())
            resp.headers.add("Unsupported", ", ".join(required))
            self.send_response(key, resp, self.now())
            return
        if method == "CANCEL":
            self.calls.on_cancel(req, key)
            return
        if req.to_tag is not None:
            if not self.calls.on_in_dialog(req, peer, key):
                self.respond(key, req, 481)
            return
        if method == "REGISTER":
            resp = self.registration.handle(req, peer, time.time())
            resp.headers.add("Server", self.user_agent)
            self.send_response(key, resp)
            return
        if method == "OPTIONS":
            self._options(req, key)
            return
        if method == "INVITE":
            self._invite(req, peer, key)
            return
        status = 405 if method in _KNOWN_METHODS else 501
        resp = self.make_response(req, status, to_tag=new_tag())
        resp.headers.add("Allow", ALLOW)
        self.send_response(key, resp, self.now())

    def _options(self, req: Request, key: str) -> None:
        # RFC 3261 11.2: capabilities. Max-Forwards 0 is fine: we are the endpoint (RFC 4475
        # "zeromf").
        resp = self.make_response(req, 200, to_tag=new_tag())
        resp.headers.add("Allow", ALLOW)
        resp.headers.add("Accept", "application/sdp")
        resp.headers.add("Supported", "outbound")
        self.send_response(key, resp, self.now())

    def _invite(self, req: Request, peer: Peer, key: str) -> None:
        # RFC 3261 21.4.7 / RFC 4475 "sdp01": we can only answer with SDP.
        accept = req.headers.get_all("Accept")
        if accept and not any(
            a.split(";", 1)[0].strip().lower() in ("application/sdp", "application/*", "*/*")
            for a in accept
        ):
            resp = self.make_response(req, 406, to_tag=new_tag())
            resp.headers.add("Accept", "application/sdp")
            self.send_response(key, resp, self.now())
            return
        if req.body and req.content_type != "application/sdp":
            # RFC 3261 21.4.13 / RFC 4475 "invut": 415 with the types we accept.
            resp = self.make_response(req, 415, to_tag=new_tag())
            resp.headers.add("Accept", "application/sdp")
            self.send_response(key, resp, self.now())
            return
        trunk = trunk_for_source(self.config, peer.addr[0])
        if trunk is not None:
            # An IP-authenticated trunk: its address is its credential; it reaches DIDs only.
            if max_forwards(req) == 0:
                self.respond(key, req, 483)
                return
            self.calls.on_trunk_invite(req, peer, key, trunk)
            return
        found = self.auth.check(req, time.time())
        if isinstance(found, Challenge):
            resp = self.make_response(req, 401, to_tag=new_tag())
            for value in found.headers:
                resp.headers.add("WWW-Authenticate", value)
            self.send_response(key, resp, self.now())
            return
        if max_forwards(req) == 0:
            # RFC 7332 3: the call would be forwarded to another leg, which no hop is left for.
            self.respond(key, req, 483)
            return
        self.calls.on_invite(req, peer, key, found)
