"""REGISTER handling: authenticate, apply to the registrar, answer, persist (RFC 3261 10.3)."""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from typing import Literal

from sip.dialog import new_tag
from sip.errors import ParseError
from sip.headers import format_params
from sip.message import Request, Response
from sip.registrar import Binding, ContactSpec, Registrar
from sip.transaction import Peer

from .auth import Authenticator, Challenge
from .bindings import BindingWriter
from .config import User


def peer_to_source(peer: Peer) -> str:
    """The binding's ``source``: how to reach the phone again (RFC 5626 flow / RFC 3581)."""
    host, port = peer.addr
    if ":" in host:
        host = f"[{host}]"
    conn = f"#{peer.conn}" if peer.conn is not None else ""
    return f"{peer.transport}:{host}:{port}{conn}"


def source_to_peer(source: str) -> Peer:
    transport, _, rest = source.partition(":")
    rest, _, conn = rest.partition("#")
    host, _, port = rest.rpartition(":")
    if host.startswith("["):
        host = host[1:-1]
    return Peer(transport, (host, int(port)), int(conn) if conn else None)


class RegistrationService:
    def __init__(
        self,
        registrar: Registrar,
        auth: Authenticator,
        find_user: Callable[[str], User | None],
        persist: BindingWriter,
    ) -> None:
        self.registrar = registrar
        self.auth = auth
        self._find_user = find_user
        self._persist = persist

    def handle(self, req: Request, peer: Peer, now: float) -> Response:
        """Answer a REGISTER; ``now`` is wall-clock time (bindings outlive the process).

        The response carries a fresh To tag (RFC 3261 8.2.6.2) and no Server header.
        """
        tag = new_tag()
        to_uri = req.to.uri
        # RFC 3261 10.3 step 3 / RFC 4475 3.3.3 ("unksm2"): the To must be a SIP AOR.
        if not to_uri.is_sip or to_uri.user is None:
            return req.response(400, "To must be a SIP URI with a user part", to_tag=tag)
        found = self.auth.check(req, now)
        if isinstance(found, Challenge):
            resp = req.response(401, to_tag=tag)
            for value in found.headers:
                resp.headers.add("WWW-Authenticate", value)
            return resp
        user = found
        # The authenticated user may register only their own AOR (by id or extension).
        if self._find_user(to_uri.user) is not user:
            return req.response(403, "Not allowed to register this address", to_tag=tag)
        try:
            contacts = _contacts(req)
            expires_header = _int_header(req, "Expires")
        except (ParseError, ValueError) as e:
            return req.response(400, str(e)[:80], to_tag=tag)
        result = self.registrar.register(
            user.id,
            contacts,
            expires_header,
            req.call_id,
            req.cseq.seq,
            peer_to_source(peer),
            now,
            user_agent=(req.headers.get("User-Agent") or "")[:255],
            max_contacts=user.max_contacts,
        )
        resp = req.response(result.status, result.reason, to_tag=tag)
        if result.status == 423 and result.min_expires is not None:
            resp.headers.add("Min-Expires", str(result.min_expires))
        if result.status != 200:
            return resp
        if result.changed or result.removed:
            self._persist.record(result.changed, result.removed)
        outbound = False
        for b in result.bindings:
            resp.headers.add("Contact", _contact_value(b, now))
            outbound = outbound or b.reg_id is not None
        if outbound:
            # RFC 5626 6: the registrar confirms it keeps the flow.
            resp.headers.add("Require", "outbound")
        resp.headers.add("Date", _http_date(now))
        return resp

    def expire(self, now: float) -> list[Binding]:
        gone = self.registrar.expire(now)
        if gone:
            self._persist.record([], gone)
        return gone


_date_cache: tuple[int, str] = (0, "")


def _http_date(now: float) -> str:
    """RFC 3261 20.17 Date (RFC 1123 form), formatted once per second."""
    global _date_cache
    sec = int(now)
    if _date_cache[0] != sec:
        _date_cache = (sec, email.utils.formatdate(sec, usegmt=True))
    return _date_cache[1]


def _contacts(req: Request) -> list[ContactSpec] | Literal["*"]:
    addrs = req.contacts
    if any(a.wildcard for a in addrs):
        if len(addrs) != 1:
            raise ValueError("Contact: * must be the only contact")
        return "*"
    out: list[ContactSpec] = []
    for a in addrs:
        p = a.params
        expires = p.get("expires")
        q = p.get("q")
        reg_id = p.get("reg-id")
        instance = p.get("+sip.instance")
        if expires is not None and not expires.isdigit():
            raise ValueError("bad Contact expires")
        if reg_id is not None and not reg_id.isdigit():
            raise ValueError("bad Contact reg-id")
        rest = format_params({k: v for k, v in p.items() if k not in ("expires", "q")})
        out.append(
            ContactSpec(
                uri=str(a.uri),
                expires=min(int(expires), 2**31) if expires is not None else None,
                q=float(q) if q is not None else None,
                instance=instance,
                reg_id=int(reg_id) if reg_id is not None else None,
                params=rest,
            )
        )
    return out


def _int_header(req: Request, name: str) -> int | None:
    v = req.headers.get(name)
    if v is None:
        return None
    v = v.strip()
    if not v.isdigit():
        raise ValueError(f"bad {name} header")
    return min(int(v), 2**31)


def _contact_value(b: Binding, now: float) -> str:
    params = b.params
    q = f";q={b.q}" if b.q is not None else ""
    return f"<{b.uri}>;expires={b.expires_in(now)}{q}{params}"
