"""Calls through SIP trunks: inbound from IP-authenticated trunks to the DIDs, and outside calls
through the outbound trunks (dial rules, caller ID, privacy, digest, failover).

Mixed into :class:`pbx.calls.CallController`, which owns the state used here.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from media.sdp import SessionDescription
from sip.dialog import new_call_id, new_tag
from sip.digest import answer_challenge, choose_challenge
from sip.message import CSeq, Headers, Request, Response
from sip.transaction import Peer
from sip.uri import Address, SipUri

from .callstate import ALLOW, Call, Fork, LegState, Outsider, RingStep, display_name, utcnow
from .routing import ToOutside, dial_string, match_did, normalise, outbound_caller_id, route_target

if TYPE_CHECKING:
    from .config import User
    from .config_routing import Trunk
    from .routing import Target
    from .sipapp import SipApp

logger = logging.getLogger(__name__)


class TrunkCalls:
    """Inbound calls from trunks and outside calls through them."""

    app: SipApp
    _forks: dict[str, tuple[Call, Fork]]

    if TYPE_CHECKING:
        def on_invite(self, req: Request, peer: Peer, key: str, caller: User | Outsider, *,
                      target: Target | None = None, dialled: str | None = None) -> None: ...

        def _record_attempt(self, call_id: str, req: Request, caller: User | Outsider,
                            callee: User | None, started: datetime, code: int,
                            disposition: str, cause: str) -> None: ...

        def _begin(self, call: Call, req: Request, key: str, *, to_number: str,
                   callee_user: str | None, direction: str | None = None) -> None: ...

    def on_trunk_invite(self, req: Request, peer: Peer, key: str, trunk: Trunk) -> None:
        """A call from an IP-authenticated trunk: it may reach our DIDs and nothing else (no
        toll fraud); the DID comes from the Request-URI, the To or a Diversion header."""
        app = self.app
        config = app.config
        diversions = [_uri_user(v) for v in req.headers.get_all("Diversion")]
        number = match_did(config, req.uri.user, req.to.uri.user,
                           [d for d in diversions if d])
        caller = _outsider(req, trunk, config.dialplan.region)
        if number is None:
            self._record_attempt(str(uuid.uuid4()), req, caller, None, utcnow(), 404,
                                 "failed", "number not found")
            app.respond(key, req, 404, to_tag=new_tag())
            return
        self.on_invite(req, peer, key, caller, target=route_target(config, number.route),
                       dialled=number.number)

    def _call_outside(self, req: Request, peer: Peer, key: str, caller: User,
                      target: ToOutside, offer: SessionDescription | None) -> None:
        """An outside number through the outbound trunks, in order: the next one is tried when
        one fails (timeout, 5xx); an answer about the number itself (busy, not found) ends it."""
        app = self.app
        seconds = max(app.ring_timeout, 60.0)
        call = Call(
            id=str(uuid.uuid4()), caller=caller,
            callee=Outsider(target.e164, "", target.trunks[0].name), a_invite=req,
            a_key=key, a_peer=peer, a_tag=new_tag(), a_offer=offer, started=utcnow(),
            plan=[RingStep((), seconds, trunk, target.e164) for trunk in target.trunks],
        )
        # RFC 3323 4.2 / RFC 3325 9.3: "Privacy: id" hides the caller from the far end.
        call.privacy = any("id" in [p.strip().lower() for p in v.split(";")]
                           for v in req.headers.get_all("Privacy"))
        self._begin(call, req, key, to_number=target.e164, callee_user=None,
                    direction="outbound")

    def _send_trunk_fork(self, call: Call, step: RingStep, peer: Peer,
                         leg: LegState | None = None) -> None:
        """The INVITE of an outside call to ``step.trunk``, with the caller ID the trunk may
        present (From and P-Asserted-Identity, RFC 3325) and privacy when asked for."""
        app = self.app
        trunk = step.trunk
        assert trunk is not None
        caller = call.caller
        domain = trunk.from_domain or trunk.host
        number = dial_string(trunk, step.number, region=app.config.dialplan.region)
        params: dict[str, str | None] = {"transport": "tcp"} if trunk.transport == "tcp" else {}
        target = SipUri("sip", user=number, host=trunk.host, port=trunk.port, params=params)
        presented = outbound_caller_id(trunk, None if isinstance(caller, Outsider) else caller)
        h = Headers()
        h.add("Max-Forwards", str(call.max_forwards))
        tag: dict[str, str | None] = {"tag": new_tag()}
        if call.privacy or presented is None:
            h.add("From", str(Address(SipUri("sip", user="anonymous", host="anonymous.invalid"),
                                      "Anonymous", tag)))
        else:
            h.add("From", str(Address(SipUri("sip", user=presented, host=domain),
                                      display_name(caller), tag)))
        h.add("To", str(Address(SipUri("sip", user=number, host=trunk.host))))
        h.add("Call-ID", new_call_id(app.domain))
        h.add("CSeq", "1 INVITE")
        h.add("Contact", str(app.contact(peer)))
        if presented is not None:
            h.add("P-Asserted-Identity", str(Address(SipUri("sip", user=presented, host=domain))))
        if call.privacy:
            h.add("Privacy", "id")
        h.add("Allow", ALLOW)
        h.add("User-Agent", app.user_agent)
        if call.b_offer:
            h.add("Content-Type", "application/sdp")
        req = Request("INVITE", target, h, call.b_offer)
        app.add_via(req, peer)
        key = app.layer.send_request(req, peer, app.now())
        fork = Fork(key=key, invite=req, peer=peer, step=call.step, trunk=trunk, leg=leg)
        call.forks[key] = fork
        self._forks[key] = (call, fork)

    def _authenticate(self, call: Call, fork: Fork, resp: Response) -> bool:
        """Send the INVITE again with the trunk's credentials (RFC 3261 22.2); False when
        there are none or the challenge cannot be answered."""
        app = self.app
        trunk = fork.trunk
        assert trunk is not None
        header = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
        challenge = choose_challenge(resp.headers.get_all(header))
        if challenge is None or trunk.username is None or trunk.password is None:
            return False
        old = fork.invite
        fork.done, fork.status = True, resp.status
        self._forks.pop(fork.key, None)
        call.forks.pop(fork.key, None)
        h = Headers()
        for name, value in old.headers.items():
            if name.lower() not in ("via", "cseq", "authorization", "proxy-authorization"):
                h.add(name, value)
        h.set("CSeq", str(CSeq(old.cseq.seq + 1, "INVITE")))
        answer = answer_challenge(challenge, "INVITE", str(old.uri), trunk.username,
                                  trunk.password, new_tag(), 1, old.body)
        h.add("Authorization" if resp.status == 401 else "Proxy-Authorization", answer)
        req = Request("INVITE", old.uri, h, old.body)
        app.add_via(req, fork.peer)
        key = app.layer.send_request(req, fork.peer, app.now())
        again = Fork(key=key, invite=req, peer=fork.peer, step=fork.step, trunk=trunk,
                     auth_tried=True, leg=fork.leg)
        call.forks[key] = again
        self._forks[key] = (call, again)
        return True

    async def _trunk_peer(self, trunk: Trunk) -> Peer | None:
        """Where to send to ``trunk``: its host resolved without blocking the loop."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                trunk.host, trunk.port, type=socket.SOCK_DGRAM)
        except OSError as e:
            logger.warning("trunk %s: cannot resolve %s: %s", trunk.name, trunk.host, e)
            return None
        return Peer(trunk.transport, (str(infos[0][4][0]), trunk.port))


def try_next_trunk(status: int) -> bool:
    """Whether an outside call that failed with ``status`` on one trunk should try the next:
    yes when the trunk or the network failed (timeout, 5xx, a refused login), no when the far
    end answered about the number (busy, not found, declined)."""
    return status in (401, 403, 407, 408) or 500 <= status < 600


def _outsider(req: Request, trunk: Trunk, region: str) -> Outsider:
    """Who is calling in: P-Asserted-Identity (RFC 3325) when the trunk sends one, else
    From; the number in E.164 when the region's rules can read it."""
    source = req.headers.get("P-Asserted-Identity") or req.headers.get("From") or ""
    try:
        address = Address.parse(source)
    except ValueError:
        return Outsider("anonymous", "", trunk.name, dtmf_mode=trunk.dtmf_mode)
    raw = address.uri.user or "anonymous"
    return Outsider(normalise(raw, region) or raw, address.display or "", trunk.name,
                    dtmf_mode=trunk.dtmf_mode)


def _uri_user(value: str) -> str | None:
    try:
        return Address.parse(value).uri.user
    except ValueError:
        return None
