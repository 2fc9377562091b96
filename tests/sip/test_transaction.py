"""The SIP transaction layer on a virtual clock: requests, INVITEs, reliable transports and
CANCEL through a UAC/UAS pair (tests/sip/txn_pair.py)."""

from __future__ import annotations

import pytest

from sip.errors import LocalSipError
from sip.message import Request, parse
from sip.transaction import (
    AckReceived,
    Peer,
    RequestReceived,
    ResponseReceived,
    TransactionLayer,
    TransactionTimeout,
    TxnState,
)
from tests.sip.txn_pair import (
    UAC_ADDR,
    Pair,
    ack_for_2xx,
    diffs,
    events,
    make_request,
    statuses,
)

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
