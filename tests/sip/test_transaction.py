"""The SIP transaction layer on a virtual clock: two layers (UAC and UAS) joined by a fake link
that parses every datagram and can lose chosen ones. No sockets, no real time."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest

from sip.errors import LocalSipError
from sip.message import Request, Response, parse
from sip.transaction import (
    AckReceived,
    Peer,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TimerSettings,
    TransactionEvent,
    TransactionLayer,
    TransactionTimeout,
    TransportError,
    TxnState,
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


# -- non-INVITE ----------------------------------------------------------------------------------


def test_non_invite_success_and_lifetimes_k_and_j() -> None:
    p = Pair()
    key, rr = p.start(make_request("REGISTER"))
    assert rr.peer == p.from_uac and rr.request.method == "REGISTER"
    p.respond(rr, 200)
    ev = events(p.uac)
    assert len(ev) == 1 and isinstance(ev[0], ResponseReceived) and ev[0].client_key == key
    assert ev[0].response.status == 200
    assert p.uac.state(key) is TxnState.COMPLETED and len(p.uac) == 1
    assert p.uas.state(rr.server_key or "") is TxnState.COMPLETED and len(p.uas) == 1
    p.advance(4.999)
    assert len(p.uac) == 1
    p.advance(5.0)  # Timer K = T4
    assert len(p.uac) == 0 and p.uac.state(key) is None
    p.advance(31.999)
    assert len(p.uas) == 1
    p.advance(32.0)  # Timer J = 64*T1
    assert len(p.uas) == 0
    assert p.sent(">", "REGISTER") == [0.0]  # nothing was retransmitted
    assert events(p.uac) == [] and events(p.uas) == []
    assert p.uac.get_timer() is None and p.uas.get_timer() is None


def test_timer_e_doubles_to_t2_and_timer_f_times_out() -> None:
    p = Pair()
    p.drop(">", "REGISTER", times=100)
    req = make_request("REGISTER")
    key = p.uac.send_request(req, p.to_uas, 0.0)
    p.flush()
    p.advance(31.999)
    times = p.sent(">", "REGISTER")
    assert times == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert diffs(times) == [0.5, 1, 2, 4, 4, 4, 4, 4, 4, 4]
    assert events(p.uac) == []
    p.advance(32.0)  # Timer F = 64*T1
    ev = events(p.uac)
    assert ev == [TransactionTimeout(key, req)]
    assert len(p.uac) == 0 and p.uac.get_timer() is None


def test_non_invite_proceeding_retransmits_at_t2() -> None:
    p = Pair()
    _key, rr = p.start(make_request("OPTIONS"))
    p.respond(rr, 100)  # RFC 3261 17.1.2.2: Proceeding -> E fires at T2 from now on
    assert statuses(events(p.uac)) == [100]
    p.advance(31.0)
    assert p.sent(">", "OPTIONS") == [0.0, 0.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5]
    # the UAS answers every retransmission with its last provisional; the UAC absorbs them
    assert len(p.sent("<", "SIP/2.0 100")) == 9
    assert events(p.uac) == [] and events(p.uas) == []
    p.advance(32.0)
    assert [type(e) for e in events(p.uac)] == [TransactionTimeout]


def test_lost_final_response_is_resent_from_the_completed_record() -> None:
    p = Pair()
    p.drop("<", "SIP/2.0 200")
    _key, rr = p.start(make_request("REGISTER"))
    p.respond(rr, 200)
    assert events(p.uac) == []
    p.advance(0.5)  # Timer E: the REGISTER again; the UAS resends its cached 200
    assert p.sent("<", "SIP/2.0 200") == [0.0, 0.5]
    assert statuses(events(p.uac)) == [200]
    assert events(p.uas) == []  # the retransmission never reached the TU
    p.advance(40.0)
    assert p.sent(">", "REGISTER") == [0.0, 0.5]
    assert len(p.uac) == 0 and len(p.uas) == 0


def test_retransmitted_request_before_the_answer_is_absorbed() -> None:
    p = Pair()
    _key, rr = p.start(make_request("MESSAGE"))
    p.advance(1.5)  # E fired twice; the UAS TU has not answered yet (Trying)
    assert len(p.sent(">", "MESSAGE")) == 3
    assert p.sent("<", "") == [] and events(p.uas) == []
    p.respond(rr, 202)
    assert statuses(events(p.uac)) == [202]


# -- INVITE ------------------------------------------------------------------------------------


def test_invite_100_180_200_and_ack() -> None:
    p = Pair()
    invite = make_request("INVITE", extra="Timestamp: 54\r\n")
    key, rr = p.start(invite)
    p.advance(0.199)
    assert p.sent("<", "SIP/2.0 100") == []
    p.advance(0.2)  # RFC 3261 17.2.1: the layer sends 100 Trying for a silent TU
    assert p.sent("<", "SIP/2.0 100") == [0.2]
    trying = next(d for _, _, d in p.wire if d.startswith(b"SIP/2.0 100"))
    assert b"Timestamp: 54\r\n" in trying  # RFC 3261 8.2.6.1
    p.respond(rr, 180)
    ok = p.respond(rr, 200)
    ev = events(p.uac)
    assert statuses(ev) == [100, 180, 200]
    assert all(isinstance(e, ResponseReceived) and e.client_key == key for e in ev)
    assert p.uac.state(key) is TxnState.ACCEPTED
    assert p.uas.state(rr.server_key or "") is TxnState.ACCEPTED
    ack = ack_for_2xx(invite, ok)
    p.uac.send_ack(ack, p.to_uas)
    p.flush()
    ev2 = events(p.uas)
    assert len(ev2) == 1 and isinstance(ev2[0], AckReceived)
    assert ev2[0].server_key == rr.server_key and ev2[0].request.method == "ACK"
    p.advance(31.9)
    assert p.sent("<", "SIP/2.0 200") == [0.2]  # ACKed before T1: never retransmitted
    assert p.sent(">", "INVITE") == [0.0]  # the 100 stopped Timer A
    assert len(p.uac) == 1 and len(p.uas) == 1
    p.advance(32.2)  # Timer M at the UAC, Timer L at the UAS (64*T1 after the 2xx)
    assert len(p.uac) == 0 and len(p.uas) == 0
    assert events(p.uac) == [] and events(p.uas) == []


def test_lost_acks_keep_the_2xx_coming_until_one_arrives() -> None:
    p = Pair()
    invite = make_request("INVITE")
    _key, rr = p.start(invite)
    p.drop(">", "ACK", times=2)
    ok = p.respond(rr, 200)
    acks_sent = 0

    def uac_tu() -> None:
        nonlocal acks_sent
        for e in events(p.uac):
            assert isinstance(e, ResponseReceived) and e.response.status == 200
            p.uac.send_ack(ack_for_2xx(invite, e.response), p.to_uas)  # RFC 6026 7.2
            acks_sent += 1
        p.flush()

    uac_tu()
    p.advance(40.0, react=uac_tu)
    assert p.sent("<", "SIP/2.0 200") == [0.0, 0.5, 1.5]
    assert acks_sent == 3 and len(p.sent(">", "ACK")) == 3
    ev = events(p.uas)
    assert len(ev) == 1 and isinstance(ev[0], AckReceived)
    assert ok.to.tag == "uas1"
    assert len(p.uac) == 0 and len(p.uas) == 0


def test_2xx_never_acked_times_out_after_64_t1() -> None:
    p = Pair()
    invite = make_request("INVITE")
    _key, rr = p.start(invite)
    p.respond(rr, 200)
    p.advance(31.999)
    times = p.sent("<", "SIP/2.0 200")
    assert diffs(times) == [0.5, 1, 2, 4, 4, 4, 4, 4, 4, 4]  # RFC 3261 13.3.1.4: T1 .. T2
    # every retransmission reaches the UAC TU in Accepted, so that it can ACK again
    assert statuses(events(p.uac)) == [200] * len(times)
    assert events(p.uas) == []
    p.advance(32.0)
    assert events(p.uas) == [TransactionTimeout(rr.server_key or "", rr.request)]
    assert len(p.uas) == 0 and len(p.uac) == 0


def test_timer_a_doubles_and_timer_b_times_out() -> None:
    p = Pair()
    p.drop(">", "INVITE", times=100)
    invite = make_request("INVITE")
    key = p.uac.send_request(invite, p.to_uas, 0.0)
    p.flush()
    p.advance(31.999)
    times = p.sent(">", "INVITE")
    assert times == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    # A doubles without a cap: 0.5, 1, 2, 4, 8, 16; the next value, 32, is pre-empted by B.
    assert diffs(times) == [0.5, 1, 2, 4, 8, 16]
    assert p.uac.get_timer() == 32.0
    p.advance(32.0)
    assert events(p.uac) == [TransactionTimeout(key, invite)]
    assert len(p.uac) == 0


def test_non_2xx_final_is_acked_by_the_layer_and_timer_d_absorbs_retransmissions() -> None:
    p = Pair()
    invite = make_request("INVITE", extra="Route: <sip:proxy.example.com;lr>\r\n")
    key, rr = p.start(invite)
    p.drop(">", "ACK")  # the first ACK is lost: the UAS retransmits its 486 (Timer G)
    p.respond(rr, 486, tag="busy")
    assert statuses(events(p.uac)) == [486]
    assert p.uac.state(key) is TxnState.COMPLETED
    acks = [d for _, dr, d in p.wire if dr == ">" and d.startswith(b"ACK")]
    ack = parse(acks[0])
    assert isinstance(ack, Request) and ack.method == "ACK"
    # RFC 3261 17.1.1.3: same Request-URI, top Via (branch), From, Call-ID, CSeq number and
    # Route; To from the response
    assert ack.raw_uri == invite.raw_uri and ack.top_via.branch == invite.top_via.branch
    assert len(ack.vias) == 1 and ack.to.tag == "busy" and ack.from_.tag == "ft1"
    assert str(ack.cseq) == "1 ACK" and ack.call_id == invite.call_id
    assert ack.headers.get_all("Route") == ["<sip:proxy.example.com;lr>"]
    p.advance(0.5)
    assert p.sent("<", "SIP/2.0 486") == [0.0, 0.5]
    assert len(p.sent(">", "ACK")) == 2  # the layer re-ACKed the retransmission
    assert events(p.uac) == []  # and did not pass it up
    assert p.uas.state(rr.server_key or "") is TxnState.CONFIRMED
    assert events(p.uas) == []  # the ACK for a non-2xx stays in the layer
    p.advance(5.499)
    assert len(p.uas) == 1
    p.advance(5.5)  # Timer I = T4 after the ACK
    assert len(p.uas) == 0
    p.advance(31.999)
    assert len(p.uac) == 1
    p.advance(32.0)  # Timer D = 32 s
    assert len(p.uac) == 0


def test_timer_h_no_ack_for_a_non_2xx_final() -> None:
    p = Pair()
    _key, rr = p.start(make_request("INVITE"))
    p.drop(">", "ACK", times=100)
    p.respond(rr, 603)
    p.advance(31.999)
    assert diffs(p.sent("<", "SIP/2.0 603")) == [0.5, 1, 2, 4, 4, 4, 4, 4, 4, 4]  # Timer G
    assert statuses(events(p.uac)) == [603]  # once: the rest are absorbed
    assert events(p.uas) == []
    p.advance(32.0)
    assert events(p.uas) == [TransactionTimeout(rr.server_key or "", rr.request)]
    assert len(p.uas) == 0 and len(p.uac) == 0


def test_retransmitted_invite_gets_the_last_provisional() -> None:
    p = Pair()
    p.drop("<", "SIP/2.0 180")
    _key, rr = p.start(make_request("INVITE"))
    p.respond(rr, 180)
    assert events(p.uac) == []
    p.advance(0.5)  # Timer A: the INVITE again; the UAS resends its 180, not a 100
    assert p.sent("<", "SIP/2.0 180") == [0.0, 0.5] and p.sent("<", "SIP/2.0 100") == []
    assert statuses(events(p.uac)) == [180]
    assert events(p.uas) == []
    p.respond(rr, 180)  # the same provisional again is absorbed by the UAC
    assert events(p.uac) == []
    p.advance(30.0)
    assert p.sent(">", "INVITE") == [0.0, 0.5]  # Proceeding: A and B stopped


def test_tu_provisional_within_200_ms_suppresses_automatic_trying() -> None:
    p = Pair()
    _key, rr = p.start(make_request("INVITE"))
    p.advance(0.1)
    p.respond(rr, 183)
    p.advance(3.0)
    assert p.sent("<", "SIP/2.0 100") == []


# -- timers on reliable transports -----------------------------------------------------------


def test_reliable_transport_no_retransmissions_and_zero_d_i_j_k() -> None:
    p = Pair("tcp")
    _, rr = p.start(make_request("REGISTER", transport="TCP"))
    p.respond(rr, 200)
    assert statuses(events(p.uac)) == [200]
    assert len(p.uac) == 0 and len(p.uas) == 0  # K and J are zero
    # INVITE with a non-2xx: D and I are zero, G does not run
    _key, rr = p.start(make_request("INVITE", transport="TCP", call_id="c2"))
    p.respond(rr, 486)
    assert statuses(events(p.uac)) == [486]
    assert len(p.uac) == 0 and len(p.uas) == 0
    # lost requests are not retransmitted; B and F still time out at 64*T1
    p.drop(">", "OPTIONS")
    p.drop(">", "INVITE")
    p.wire.clear()
    k1 = p.uac.send_request(make_request("OPTIONS", transport="TCP"), p.to_uas, p.now)
    k2 = p.uac.send_request(make_request("INVITE", transport="TCP"), p.to_uas, p.now)
    p.flush()
    p.advance(31.999)
    assert p.sent(">", "OPTIONS") == [0.0] and p.sent(">", "INVITE") == [0.0]
    assert events(p.uas) == []
    p.advance(32.0)
    assert {e.key for e in events(p.uac) if isinstance(e, TransactionTimeout)} == {k1, k2}
    assert len(p.uac) == 0


def test_reliable_transport_2xx_retransmitted_until_ack_and_h_without_g() -> None:
    p = Pair("tls")
    invite = make_request("INVITE", transport="TLS")
    _, rr = p.start(invite)
    ok = p.respond(rr, 200)
    p.advance(1.0)
    # RFC 3261 13.3.1.4: the 2xx is retransmitted even on a reliable transport
    assert p.sent("<", "SIP/2.0 200") == [0.0, 0.5]
    p.uac.send_ack(ack_for_2xx(invite, ok), p.to_uas)
    p.flush()
    assert [type(e) for e in events(p.uas)] == [AckReceived]
    p.advance(20.0)
    assert p.sent("<", "SIP/2.0 200") == [0.0, 0.5]
    # a non-2xx whose ACK never comes: no Timer G, Timer H still ends it
    _key, rr = p.start(make_request("INVITE", transport="TLS", call_id="c3"))
    p.drop(">", "ACK")
    p.respond(rr, 480)
    p.advance(p.now + 31.0)
    assert len(p.sent("<", "SIP/2.0 480")) == 1
    p.advance(p.now + 1.0)
    assert [type(e) for e in events(p.uas)] == [TransactionTimeout]


# -- CANCEL ------------------------------------------------------------------------------------


def test_cancel_matches_the_invite_and_gets_487() -> None:
    p = Pair()
    invite = make_request("INVITE")
    ikey, irr = p.start(invite)
    cancel = make_request("CANCEL", branch=invite.top_via.branch)
    with pytest.raises(LocalSipError, match="Calling"):
        p.uac.send_request(cancel, p.to_uas, p.now)  # RFC 3261 9.1: not before a 1xx
    assert p.uac.state(ikey) is TxnState.CALLING
    p.respond(irr, 180)
    assert statuses(events(p.uac)) == [180]
    ckey = p.uac.send_request(cancel, p.to_uas, p.now)
    assert ckey != ikey
    p.flush()
    ev = events(p.uas)
    assert len(ev) == 1 and isinstance(ev[0], RequestReceived)
    crr = ev[0]
    assert crr.request.method == "CANCEL" and crr.server_key not in (None, irr.server_key)
    assert p.uas.cancel_info(crr.request) == irr.server_key
    p.respond(crr, 200)
    p.respond(irr, 487)
    ev2 = events(p.uac)
    assert [(e.client_key, e.response.status) for e in ev2 if isinstance(e, ResponseReceived)] == [
        (ckey, 200), (ikey, 487)
    ]
    assert p.uas.cancel_info(crr.request) is None  # answered: no longer cancellable
    assert p.uas.state(irr.server_key or "") is TxnState.CONFIRMED  # the layer ACKed the 487


def test_cancel_without_a_final_response_gives_the_invite_up_after_64_t1() -> None:
    p = Pair()
    invite = make_request("INVITE")
    ikey, irr = p.start(invite)
    p.respond(irr, 180)
    p.drop(">", "CANCEL", times=100)
    p.uac.send_request(make_request("CANCEL", branch=invite.top_via.branch), p.to_uas, 1.0)
    p.flush()
    p.advance(32.9)
    assert p.uac.state(ikey) is TxnState.PROCEEDING
    p.advance(33.0)  # RFC 3261 9.1
    assert TransactionTimeout(ikey, invite) in events(p.uac)
    assert p.uac.state(ikey) is None


def test_cancel_info_needs_a_matching_invite() -> None:
    layer = TransactionLayer()
    peer = Peer("udp", UAC_ADDR)
    invite = make_request("INVITE")
    layer.receive(invite, peer, 0.0)
    other = make_request("CANCEL")  # another branch
    assert layer.cancel_info(other) is None
    forged = make_request("CANCEL", branch=invite.top_via.branch, call_id="another")
    assert layer.cancel_info(forged) is None


# -- matching ----------------------------------------------------------------------------------


def _inv2543(call_id: str = "1@192.0.2.15", method: str = "INVITE", to_tag: str = "",
             via: str = "SIP/2.0/UDP 192.0.2.15") -> Request:
    # In the spirit of RFC 4475 "inv2543": no branch, no From tag, no Content-Length.
    to = "<sip:UserB@example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (f"{method} sip:UserB@example.com SIP/2.0\r\nVia: {via}\r\n"
            f"From: <sip:UserA@example.com>\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: 1 {method}\r\n\r\n")
    msg = parse(text.encode())
    assert isinstance(msg, Request)
    return msg


def test_rfc2543_matching_without_magic_cookie() -> None:
    layer = TransactionLayer()
    peer = Peer("udp", ("192.0.2.15", 5060))
    layer.receive(_inv2543(), peer, 0.0)
    ev = events(layer)
    assert len(ev) == 1 and isinstance(ev[0], RequestReceived)
    key = ev[0].server_key
    assert key is not None
    resp180 = ev[0].request.response(180, to_tag="b1")
    layer.send_response(key, resp180, 0.05)
    layer.datagrams_to_send()
    layer.receive(_inv2543(), peer, 0.5)  # a retransmission: the 180 again, no event
    assert events(layer) == []
    assert [d[:11] for d, _ in layer.datagrams_to_send()] == [b"SIP/2.0 180"]
    assert layer.cancel_info(_inv2543(method="CANCEL")) == key
    layer.receive(_inv2543(call_id="2@192.0.2.15"), peer, 0.6)  # another Call-ID: new
    assert [type(e) for e in events(layer)] == [RequestReceived]
    layer.send_response(key, ev[0].request.response(486, to_tag="b1"), 1.0)
    # an ACK with another To tag is not the ACK of this transaction (RFC 3261 17.2.3)
    layer.receive(_inv2543(method="ACK", to_tag="zz"), peer, 1.1)
    e2 = events(layer)
    assert len(e2) == 1 and isinstance(e2[0], RequestReceived) and e2[0].server_key is None
    assert layer.state(key) is TxnState.COMPLETED
    layer.receive(_inv2543(method="ACK", to_tag="b1"), peer, 1.2)
    assert events(layer) == [] and layer.state(key) is TxnState.CONFIRMED


def test_branch_that_is_only_the_magic_cookie_falls_back_to_rfc2543() -> None:
    # RFC 4475 "badbranch": branch=z9hG4bK identifies nothing by itself.
    layer = TransactionLayer()
    peer = Peer("udp", UAC_ADDR)
    layer.receive(make_request("OPTIONS", branch="z9hG4bK", call_id="a"), peer, 0.0)
    layer.receive(make_request("OPTIONS", branch="z9hG4bK", call_id="b"), peer, 0.0)
    layer.receive(make_request("OPTIONS", branch="z9hG4bK", call_id="a"), peer, 0.1)
    ev = events(layer)
    assert [e.request.call_id for e in ev if isinstance(e, RequestReceived)] == ["a", "b"]
    assert len(layer) == 2


def test_reused_branch_with_another_call_id_is_a_new_request() -> None:
    # pyVoIP-like: every process run repeats the same branch.
    layer = TransactionLayer()
    peer = Peer("udp", UAC_ADDR)
    first = make_request("REGISTER", branch="z9hG4bKsame", call_id="run-1")
    layer.receive(first, peer, 0.0)
    [ev1] = events(layer)
    assert isinstance(ev1, RequestReceived) and ev1.server_key is not None
    layer.send_response(ev1.server_key, first.response(200, to_tag="r"), 0.0)
    layer.datagrams_to_send()
    layer.receive(make_request("REGISTER", branch="z9hG4bKsame", call_id="run-1"), peer, 1.0)
    assert events(layer) == []  # a true retransmission: the cached 200 again
    assert len(layer.datagrams_to_send()) == 1
    second = make_request("REGISTER", branch="z9hG4bKsame", call_id="run-2")
    layer.receive(second, peer, 2.0)
    [ev2] = events(layer)
    assert isinstance(ev2, RequestReceived) and ev2.request is second
    assert ev2.server_key is not None and ev2.server_key != ev1.server_key
    layer.send_response(ev2.server_key, second.response(401, to_tag="r2"), 2.0)
    [(data, to)] = layer.datagrams_to_send()
    assert data.startswith(b"SIP/2.0 401") and to == peer
    assert len(layer) == 1


@pytest.mark.parametrize("change", [{"call_id": "other"}, {"cseq": 2}, {"from_tag": "other"}])
def test_reused_invite_branch_with_other_ids_replaces_the_transaction(
    change: dict[str, object]
) -> None:
    layer = TransactionLayer()
    peer = Peer("udp", UAC_ADDR)
    layer.receive(make_request("INVITE", branch="z9hG4bKfixed"), peer, 0.0)
    [old] = events(layer)
    second = make_request("INVITE", branch="z9hG4bKfixed", **change)  # type: ignore[arg-type]
    layer.receive(second, peer, 5.0)
    [new] = events(layer)
    assert isinstance(old, RequestReceived) and isinstance(new, RequestReceived)
    assert new.request is second and old.server_key and new.server_key
    assert old.server_key != new.server_key
    with pytest.raises(LocalSipError, match="Terminated"):
        layer.send_response(old.server_key, old.request.response(180), 5.0)
    layer.send_response(new.server_key, second.response(180, to_tag="x"), 5.0)
    assert layer.state(new.server_key) is TxnState.PROCEEDING and len(layer) == 1


def test_ack_matching_nothing_and_stray_response_go_to_the_tu() -> None:
    layer = TransactionLayer()
    peer = Peer("udp", UAC_ADDR)
    ack = make_request("ACK", to_tag="t")
    layer.receive(ack, peer, 0.0)
    assert events(layer) == [RequestReceived(ack, peer, None)]
    resp = make_request("OPTIONS").response(200)
    layer.receive(resp, peer, 0.0)
    assert events(layer) == [StrayResponse(resp, peer)]
    assert len(layer) == 0


def test_forked_2xx_responses_all_reach_the_uac_tu() -> None:
    layer = TransactionLayer()
    peer = Peer("udp", UAS_ADDR)
    invite = make_request("INVITE")
    key = layer.send_request(invite, peer, 0.0)
    for tag in ("leg-a", "leg-b", "leg-a"):
        layer.receive(invite.response(200, to_tag=tag), peer, 0.1)
    assert [e.response.to.tag for e in events(layer) if isinstance(e, ResponseReceived)] == [
        "leg-a", "leg-b", "leg-a"
    ]
    assert layer.state(key) is TxnState.ACCEPTED


# -- TU errors -----------------------------------------------------------------------------------


def test_illegal_tu_actions_raise_and_leave_the_state_unchanged() -> None:
    p = Pair()
    _key, rr = p.start(make_request("REGISTER"))
    skey = rr.server_key or ""
    p.respond(rr, 200)
    with pytest.raises(LocalSipError, match=r"Completed.*SEND_2XX"):
        p.uas.send_response(skey, rr.request.response(200), p.now)
    assert p.uas.state(skey) is TxnState.COMPLETED and p.uas.datagrams_to_send() == []
    _ikey, irr = p.start(make_request("INVITE", call_id="c2"))
    iskey = irr.server_key or ""
    p.drop(">", "ACK")
    p.respond(irr, 486)
    with pytest.raises(LocalSipError, match=r"INVITE server.*Completed.*SEND_1XX"):
        p.uas.send_response(iskey, irr.request.response(180), p.now)
    assert p.uas.state(iskey) is TxnState.COMPLETED
    assert p.uas.datagrams_to_send() == []
    _okey, orr = p.start(make_request("OPTIONS", call_id="c3"))
    with pytest.raises(LocalSipError, match="INVITE"):  # a response to another method
        p.uas.send_response(orr.server_key or "", irr.request.response(200), p.now)
    assert p.uas.state(orr.server_key or "") is TxnState.TRYING
    with pytest.raises(LocalSipError, match="send_ack"):
        p.uac.send_request(make_request("ACK"), p.to_uas, p.now)
    with pytest.raises(LocalSipError, match="branch"):
        p.uac.send_request(make_request("OPTIONS", branch="old-style"), p.to_uas, p.now)
    dup = make_request("OPTIONS", branch="z9hG4bKdup")
    p.uac.send_request(dup, p.to_uas, p.now)
    with pytest.raises(LocalSipError, match="fresh branch"):
        p.uac.send_request(dup, p.to_uas, p.now)
    with pytest.raises(LocalSipError, match="Terminated"):
        p.uas.send_response("no-such-key", rr.request.response(200), p.now)
    with pytest.raises(LocalSipError, match="not OPTIONS"):
        p.uac.send_ack(dup, p.to_uas)


def test_terminate_aborts_without_events() -> None:
    p = Pair()
    key = p.uac.send_request(make_request("INVITE"), p.to_uas, 0.0)
    p.flush()
    [rr] = events(p.uas)
    assert isinstance(rr, RequestReceived) and rr.server_key
    p.uac.terminate(key)
    p.uas.terminate(rr.server_key)
    p.uac.terminate(key)  # again: ignored
    assert len(p.uac) == 0 and len(p.uas) == 0
    p.advance(60.0)
    assert events(p.uac) == [] and events(p.uas) == []
    assert p.sent(">", "INVITE") == [0.0] and p.sent("<", "") == []


def test_timer_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="T1"):
        TimerSettings(t1=0)
    with pytest.raises(ValueError, match="T1"):
        TimerSettings(t1=5, t2=4)


# -- transport errors --------------------------------------------------------------------------


def test_report_transport_error_fails_the_transactions_bound_to_the_connection() -> None:
    layer = TransactionLayer()
    c7 = Peer("tcp", ("192.0.2.30", 40000), conn=7)
    c8 = Peer("tcp", ("192.0.2.31", 40001), conn=8)
    inv = make_request("INVITE", transport="TCP")
    k_inv = layer.send_request(inv, c7, 0.0)
    k_opt = layer.send_request(make_request("OPTIONS", transport="TCP"), c7, 0.0)
    k_other = layer.send_request(make_request("OPTIONS", transport="TCP"), c8, 0.0)
    incoming = make_request("INVITE", transport="TCP", call_id="in")
    layer.receive(incoming, c7, 0.0)
    [rr] = events(layer)
    assert isinstance(rr, RequestReceived)
    assert len(layer) == 4
    layer.report_transport_error(Peer("tcp", ("192.0.2.30", 40000), conn=7), 1.0)
    ev = events(layer)
    assert {e.key for e in ev if isinstance(e, TransportError)} == {
        k_inv, k_opt, rr.server_key
    }
    assert len(ev) == 3 and len(layer) == 1 and layer.state(k_other) is TxnState.TRYING
    with pytest.raises(LocalSipError):
        layer.send_response(rr.server_key or "", incoming.response(180), 1.0)


def test_report_transport_error_on_udp_matches_the_address() -> None:
    layer = TransactionLayer()
    dead = Peer("udp", ("192.0.2.40", 5060))
    k1 = layer.send_request(make_request("OPTIONS"), dead, 0.0)
    k2 = layer.send_request(make_request("OPTIONS"), Peer("udp", ("192.0.2.41", 5060)), 0.0)
    layer.report_transport_error(dead, 0.1)
    assert [type(e) for e in events(layer)] == [TransportError]
    assert layer.state(k1) is None and layer.state(k2) is TxnState.TRYING


# -- memory ------------------------------------------------------------------------------------


def test_ten_thousand_completed_transactions_are_gone_after_timer_j_and_k() -> None:
    uas = TransactionLayer()
    uac = TransactionLayer()
    peer = Peer("udp", UAC_ADDR)
    for i in range(10_000):
        req = make_request("REGISTER", call_id=f"reg-{i}", cseq=i + 1)
        uas.receive(req, peer, i * 0.001)
        ev = uas.next_event()
        assert isinstance(ev, RequestReceived) and ev.server_key is not None
        uas.send_response(ev.server_key, req.response(200, to_tag="x"), i * 0.001)
        uac.send_request(req, peer, i * 0.001)
        uac.receive(req.response(200, to_tag="x"), peer, i * 0.001)
    assert len(uas) == 10_000 and len(uac) == 10_000
    assert len(uas.datagrams_to_send()) == 10_000
    uas.handle_timer(42.0)
    uac.handle_timer(42.0)
    assert len(uas) == 0 and len(uac) == 0
    assert uas.get_timer() is None and uac.get_timer() is None
    # the cancelled Timer E/F entries were compacted away instead of piling up
    assert len(uac._heap) == 0 and len(uas._heap) == 0


# -- random loss -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("method", ["INVITE", "OPTIONS"])
@pytest.mark.parametrize("status", [200, 486])
def test_random_loss_each_transaction_ends_with_one_outcome(
    seed: int, method: str, status: int
) -> None:
    rng = random.Random(seed)
    p = Pair()
    p.loss = lambda _d, _data: rng.random() < 0.3
    req = make_request(method)
    key = p.uac.send_request(req, p.to_uas, 0.0)
    finals: list[int] = []
    timeouts: list[str] = []
    uas_requests = 0

    def tus() -> None:
        nonlocal uas_requests
        for e in events(p.uas):
            if isinstance(e, RequestReceived) and e.server_key is not None:
                uas_requests += 1
                p.uas.send_response(e.server_key, e.request.response(180 if method == "INVITE"
                                                                     else 100), p.now)
                p.uas.send_response(e.server_key, e.request.response(status, to_tag="u"), p.now)
        for e in events(p.uac):
            if isinstance(e, ResponseReceived) and e.response.status >= 200:
                finals.append(e.response.status)
                if method == "INVITE" and e.response.status < 300:
                    p.uac.send_ack(ack_for_2xx(req, e.response), p.to_uas)
            elif isinstance(e, TransactionTimeout):
                timeouts.append(e.key)
        p.flush()

    p.flush()
    tus()
    p.advance(200.0, react=tus)
    assert uas_requests <= 1  # retransmissions never reach the UAS TU twice
    if method == "INVITE" and status == 200:
        assert set(finals) <= {200} and (finals or timeouts == [key])
    else:
        assert len(finals) + len(timeouts) == 1  # exactly one outcome
        assert finals in ([], [status])
    assert len(p.uac) == 0 and len(p.uas) == 0
    assert p.uac.get_timer() is None and p.uas.get_timer() is None
