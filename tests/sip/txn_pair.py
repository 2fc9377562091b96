"""The UAC/UAS pair on a virtual clock used by the transaction tests (no sockets, no real time)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from sip.message import Request, Response, parse
from sip.transaction import (
    Peer,
    RequestReceived,
    ResponseReceived,
    TimerSettings,
    TransactionEvent,
    TransactionLayer,
    new_branch,
)

UAC_ADDR = ("192.0.2.10", 5062)
UAS_ADDR = ("192.0.2.20", 5060)


def make_request(
    method: str,
    *,
    branch: str | None = None,
    call_id: str = "call-1@192.0.2.10",
    cseq: int = 1,
    from_tag: str | None = "ft1",
    to_tag: str | None = None,
    uri: str = "sip:bob@192.0.2.20",
    transport: str = "UDP",
    extra: str = "",
) -> Request:
    """A request as it would come off the wire (built as text, parsed by sip.message)."""
    branch = new_branch() if branch is None else branch
    via = f"SIP/2.0/{transport} 192.0.2.10:5062" + (f";branch={branch}" if branch else "")
    ftag = f";tag={from_tag}" if from_tag else ""
    ttag = f";tag={to_tag}" if to_tag else ""
    text = (
        f"{method} {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
        f"From: <sip:alice@example.com>{ftag}\r\nTo: <sip:bob@example.com>{ttag}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    msg = parse(text.encode())
    assert isinstance(msg, Request)
    return msg


def ack_for_2xx(invite: Request, ok: Response) -> Request:
    """The UAC core's ACK for a 2xx: a new branch, the To tag of the 2xx (RFC 3261 13.2.2.4)."""
    return make_request(
        "ACK", call_id=invite.call_id, cseq=invite.cseq.seq, from_tag=invite.from_.tag,
        to_tag=ok.to.tag, uri="sip:bob@192.0.2.20:5060",
    )


class Pair:
    """A UAC layer and a UAS layer with a lossy fake link between them (h11 ConnectionPair)."""

    def __init__(self, transport: str = "udp", timers: TimerSettings | None = None) -> None:
        timers = timers or TimerSettings()
        self.uac = TransactionLayer(timers)
        self.uas = TransactionLayer(timers)
        conn = None if transport == "udp" else 1
        self.to_uas = Peer(transport, UAS_ADDR, conn)  # where the UAC sends
        self.from_uac = Peer(transport, UAC_ADDR, conn)  # where the UAS sees it come from
        self.now = 0.0
        #: every datagram put on the link: (time, ">" uac->uas or "<" uas->uac, bytes)
        self.wire: list[tuple[float, str, bytes]] = []
        self._drops: list[list[object]] = []
        self.loss: Callable[[str, bytes], bool] | None = None  # e.g. a seeded random loss

    def drop(self, direction: str, prefix: str, times: int = 1) -> None:
        """Lose the next ``times`` datagrams in ``direction`` starting with ``prefix``."""
        self._drops.append([direction, prefix.encode(), times])

    def _lost(self, direction: str, data: bytes) -> bool:
        if self.loss is not None and self.loss(direction, data):
            return True
        for rule in self._drops:
            d, prefix, left = rule
            assert isinstance(prefix, bytes) and isinstance(left, int)
            if d == direction and left > 0 and data.startswith(prefix):
                rule[2] = left - 1
                return True
        return False

    def flush(self) -> None:
        """Deliver everything both layers want sent, until the link is quiet."""
        for _ in range(50):
            moved = False
            for src, dst, direction, peer in (
                (self.uac, self.uas, ">", self.from_uac),
                (self.uas, self.uac, "<", self.to_uas),
            ):
                for data, _dest in src.datagrams_to_send():
                    moved = True
                    self.wire.append((self.now, direction, data))
                    if not self._lost(direction, data):
                        dst.receive(parse(data), peer, self.now)
            if not moved:
                return
        raise AssertionError("the link never went quiet")

    def advance(self, until: float, react: Callable[[], None] | None = None) -> None:
        """Run both layers' timers up to ``until``; ``react`` plays the TUs after each step."""
        for _ in range(10_000):
            due = [t for t in (self.uac.get_timer(), self.uas.get_timer()) if t is not None]
            if not due or min(due) > until:
                break
            self.now = min(due)
            self.uac.handle_timer(self.now)
            self.uas.handle_timer(self.now)
            self.flush()
            if react is not None:
                react()
        self.now = until

    def sent(self, direction: str, prefix: str) -> list[float]:
        """Times at which datagrams starting with ``prefix`` were put on the link."""
        head = prefix.encode()
        return [t for t, d, data in self.wire if d == direction and data.startswith(head)]

    def start(self, req: Request) -> tuple[str, RequestReceived]:
        """UAC sends ``req``; returns the client key and the UAS's RequestReceived."""
        key = self.uac.send_request(req, self.to_uas, self.now)
        self.flush()
        ev = events(self.uas)
        assert len(ev) == 1 and isinstance(ev[0], RequestReceived)
        return key, ev[0]

    def respond(self, rr: RequestReceived, status: int, tag: str = "uas1") -> Response:
        assert rr.server_key is not None
        resp = rr.request.response(status, to_tag=tag)
        self.uas.send_response(rr.server_key, resp, self.now)
        self.flush()
        return resp


def events(layer: TransactionLayer) -> list[TransactionEvent]:
    out: list[TransactionEvent] = []
    while (ev := layer.next_event()) is not None:
        out.append(ev)
    return out


def statuses(evs: list[TransactionEvent]) -> list[int]:
    return [e.response.status for e in evs if isinstance(e, ResponseReceived)]


def diffs(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]
