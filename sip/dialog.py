"""Dialogs (RFC 3261 12): the state two user agents share after an INVITE, and the in-dialog
requests built from it. Pure data and functions: no I/O, no clock."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from .errors import ParseError
from .message import CSeq, Headers, Request, Response
from .uri import Address, SipUri


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(10)}@{host}"


@dataclass(slots=True)
class Dialog:
    """One side's view of a dialog (RFC 3261 12.1)."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: Address  # our From in requests we send (without tag)
    remote_uri: Address  # our To in requests we send (without tag)
    remote_target: SipUri
    route_set: list[Address] = field(default_factory=list)
    local_cseq: int = 0
    remote_cseq: int | None = None

    @classmethod
    def as_uas(cls, request: Request, local_tag: str) -> Dialog:
        """RFC 3261 12.1.1: the dialog a UAS creates when it answers ``request``."""
        if not request.contacts:
            raise ParseError("INVITE without Contact")
        routes = [Address.parse(v) for v in request.headers.get_all("Record-Route")]
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_.tag or "",
            local_uri=Address(request.to.uri, request.to.display),
            remote_uri=Address(request.from_.uri, request.from_.display),
            remote_target=request.contacts[0].uri,
            route_set=routes,
            local_cseq=0,
            remote_cseq=request.cseq.seq,
        )

    @classmethod
    def as_uac(cls, request: Request, response: Response) -> Dialog:
        """RFC 3261 12.1.2: the dialog a UAC creates from a 2xx/1xx-with-tag ``response``."""
        contacts = response.contacts
        if not contacts:
            raise ParseError("dialog-creating response without Contact")
        # The route set is the Record-Route of the response, reversed (RFC 3261 12.1.2).
        routes = [Address.parse(v) for v in reversed(response.headers.get_all("Record-Route"))]
        return cls(
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=response.to.tag or "",
            local_uri=Address(request.from_.uri, request.from_.display),
            remote_uri=Address(request.to.uri, request.to.display),
            remote_target=contacts[0].uri,
            route_set=routes,
            local_cseq=request.cseq.seq,
            remote_cseq=None,
        )

    def update_target(self, msg: Request | Response) -> None:
        """Target refresh (RFC 3261 12.2.1.2 / 12.2.2): a re-INVITE or its 2xx may move the peer."""
        contacts = msg.contacts
        if contacts and not contacts[0].wildcard:
            self.remote_target = contacts[0].uri

    def accept_remote_cseq(self, request: Request) -> bool:
        """RFC 3261 12.2.2: a lower CSeq than the last one is out of order (answer 500)."""
        seq = request.cseq.seq
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_cseq is not None and seq <= self.remote_cseq:
            return False
        self.remote_cseq = seq
        return True

    def create_request(
        self, method: str, contact: Address, *, cseq: int | None = None, body: bytes = b""
    ) -> Request:
        """Build an in-dialog request (RFC 3261 12.2.1.1); the caller adds the Via.

        ``cseq`` is for ACK and CANCEL, which reuse the INVITE's number.
        """
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        uri = self.remote_target
        routes = list(self.route_set)
        if routes and "lr" not in routes[0].uri.params:
            # Strict routing (RFC 3261 12.2.1.1): the first route becomes the Request-URI and
            # the remote target goes last in the Route header.
            uri = routes.pop(0).uri
            routes.append(Address(self.remote_target))
        h = Headers()
        h.add("Max-Forwards", "70")
        h.add("From", str(self.local_uri.with_tag(self.local_tag)))
        h.add("To", str(self.remote_uri.with_tag(self.remote_tag)))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", str(CSeq(cseq, method)))
        for r in routes:
            h.add("Route", str(r))
        if method not in ("ACK", "CANCEL", "BYE"):
            h.add("Contact", str(contact))
        req = Request(method, uri, h, body)
        return req

    def next_hop(self) -> SipUri:
        """Where to send in-dialog requests: the first route, else the remote target."""
        if self.route_set:
            return self.route_set[0].uri
        return self.remote_target
