"""The SIP transaction layer on a virtual clock: matching, TU and transport errors, memory and
random loss."""

from __future__ import annotations

import random

import pytest

from sip.errors import LocalSipError
from sip.message import Request, parse
from sip.transaction import (
    Peer,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TimerSettings,
    TransactionLayer,
    TransactionTimeout,
    TransportError,
    TxnState,
)
from tests.sip.txn_pair import (
    UAC_ADDR,
    UAS_ADDR,
    Pair,
    ack_for_2xx,
    events,
    make_request,
)

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
