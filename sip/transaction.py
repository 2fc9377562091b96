"""The SIP transaction layer (RFC 3261 17, with the RFC 6026 Accepted states), sans-I/O.

Theory of operation
-------------------
The layer owns every client and server transaction of one SIP endpoint. It never reads the
clock and never touches a socket: the adapter feeds it parsed messages with
:meth:`TransactionLayer.receive` and the current time, drains the bytes it wants sent with
:meth:`~TransactionLayer.datagrams_to_send`, and calls :meth:`~TransactionLayer.handle_timer`
at :meth:`~TransactionLayer.get_timer`. The transaction user (TU: dialogs, registrar, B2BUA)
sends through :meth:`~TransactionLayer.send_request` / :meth:`~TransactionLayer.send_response`
and reads :meth:`~TransactionLayer.next_event`.

Which state a transaction moves to is decided by the tables in ``sip/_txn_states.py``; this
module classifies what happened into a table input and carries out the actions of RFC 3261 17
(retransmit, ACK a non-2xx, arm timers, tell the TU).

Matching: responses by top-Via branch and CSeq method (RFC 3261 17.1.3); requests by branch,
sent-by and method with ACK matching INVITE (17.2.3), or by the RFC 2543 fields when the branch
lacks the magic cookie. A request that matches a live transaction by branch but carries another
Call-ID, CSeq number or From tag is a new request: some user agents repeat the same branch in
every process run, and treating their next request as a retransmission would wedge them.

Cost: every message is a few dict look-ups; all timers share one heap with lazy deletion (a
transaction remembers the sequence number of its live entry per timer slot; other entries are
skipped and compacted away). A completed non-INVITE server transaction shrinks to a small
record (cached final response bytes, a fingerprint of the request, its Timer J deadline in a
FIFO), because a registrar at 10,000 REGISTERs per second keeps 320,000 of them for Timer J's
32 seconds. ``now`` must not go backwards (a monotonic clock), which keeps that FIFO in order.
"""

from __future__ import annotations

import heapq
import logging
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Final

from ._txn_states import (
    COOKIE_LEN,
    END,
    RETX,
    TIMER_INPUT,
    ClientTxn,
    DoneRecord,
    ServerTxn,
    Timed,
    TxnInput,
    TxnKind,
    TxnState,
    lookup,
    match_key,
    split_key,
    transition,
)
from .errors import LocalSipError, ParseError
from .events import (
    AckReceived,
    Peer,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionEvent,
    TransactionTimeout,
    TransportError,
)
from .message import Headers, Request, Response
from .via import MAGIC_COOKIE

__all__ = [
    "AckReceived",
    "Peer",
    "RequestReceived",
    "ResponseReceived",
    "StrayResponse",
    "TimerSettings",
    "TransactionEvent",
    "TransactionLayer",
    "TransactionTimeout",
    "TransportError",
    "TxnState",
    "new_branch",
]

logger = logging.getLogger(__name__)

_TRYING_DELAY: Final = 0.2  # RFC 3261 17.2.1: 100 Trying if the TU is silent for 200 ms

_IC, _NC = TxnKind.INVITE_CLIENT, TxnKind.NON_INVITE_CLIENT
_IS, _NS = TxnKind.INVITE_SERVER, TxnKind.NON_INVITE_SERVER
_S = TxnState
_I = TxnInput


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """RFC 3261 17.1.1.1 and table 4, in seconds."""

    t1: float = 0.5
    """Round-trip estimate: first retransmission interval; 64*T1 is every transaction timeout."""
    t2: float = 4.0
    """Longest retransmission interval for non-INVITE requests and INVITE responses."""
    t4: float = 5.0
    """Longest time a message stays in the network (Timers I and K)."""

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 > 0):
            raise ValueError(f"timer settings need 0 < T1 <= T2 and T4 > 0, got {self}")


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie and 16 random URL-safe characters."""
    return MAGIC_COOKIE + secrets.token_urlsafe(12)


def _make_ack(req: Request, resp: Response) -> bytes:
    """RFC 3261 17.1.1.3: the ACK for a non-2xx final response, built by the transaction."""
    h = Headers()
    h.add("Via", req.headers.get("Via") or "")  # only the top Via: ours
    for name in ("Max-Forwards", "From"):
        v = req.headers.get(name)
        if v is not None:
            h.add(name, v)
    h.add("To", resp.headers.get("To") or "")
    h.add("Call-ID", req.call_id)
    h.add("CSeq", f"{req.cseq.seq} ACK")
    for route in req.headers.get_all("Route"):
        h.add("Route", route)
    return bytes(Request("ACK", req.raw_uri, h))


# -- the layer ---------------------------------------------------------------------------------


class TransactionLayer:
    """All client and server transactions of one SIP endpoint (see the module docstring)."""

    def __init__(self, timers: TimerSettings = TimerSettings()) -> None:
        self._t1 = timers.t1
        self._t2 = timers.t2
        self._t4 = timers.t4
        self._t64 = 64 * timers.t1
        self._clients: dict[str, ClientTxn] = {}
        self._servers: dict[str, ServerTxn] = {}
        self._done: dict[str, DoneRecord] = {}
        #: the same records in Timer J order: J is constant and ``now`` does not go back, so
        #: a FIFO replaces the heap for them (dead entries are skipped when they come up)
        self._j_queue: deque[DoneRecord] = deque()
        #: INVITE server transactions in Accepted by (Call-ID, CSeq number, From tag): the ACK
        #: for a 2xx has its own branch (RFC 3261 17.1.1.3), so match it by dialog identifiers.
        self._acks: dict[tuple[str, int, str | None], ServerTxn] = {}
        self._events: deque[TransactionEvent] = deque()
        self._out: list[tuple[bytes, Peer]] = []
        self._heap: list[tuple[float, int, Timed]] = []
        self._seq = 0
        self._stale = 0
        self._serial = 0

    # -- network -> layer ----------------------------------------------------------------------
    def receive(self, msg: Request | Response, peer: Peer, now: float) -> None:
        """Feed a parsed message from the network. Never raises for what the peer sent."""
        if isinstance(msg, Response):
            self._on_response(msg, peer, now)
        else:
            self._on_request(msg, peer, now)

    def _on_response(self, resp: Response, peer: Peer, now: float) -> None:
        status = resp.status
        try:
            txn = self._clients.get(f"{resp.top_via.branch} {resp.cseq.method}")
        except ParseError:
            txn = None
        if txn is None:
            self._events.append(StrayResponse(resp, peer))  # RFC 3261 18.1.2
            return
        inp = _I.RECV_1XX if status < 200 else _I.RECV_2XX if status < 300 else _I.RECV_FINAL
        new = lookup(txn.kind, txn.state, inp)
        if new is None:
            return  # absorbed: a late 1xx, a retransmitted final (RFC 3261 17.1.1.2, 17.1.2.2)
        if inp == _I.RECV_1XX:
            # A retransmitted provisional (e.g. a reliable 1xx, RFC 3262 4) is absorbed.
            try:
                tag = resp.to_tag
            except ParseError:
                tag = None
            mark = (status, tag, resp.headers.get("RSeq"), resp.body)
            if txn.seen is None:
                txn.seen = {mark}
            elif mark in txn.seen:
                return
            else:
                txn.seen.add(mark)
            if txn.kind == _IC and txn.state == _S.CALLING:
                self._cancel(txn, RETX)  # RFC 3261 17.1.1.2: Proceeding stops A and B
                self._cancel(txn, END)
        elif txn.state == _S.COMPLETED:  # ICT: retransmitted non-2xx final -> resend ACK
            if txn.ack is not None:
                self._out.append((txn.ack, txn.peer))
            return
        elif txn.kind == _IC and inp == _I.RECV_2XX:
            if txn.state != _S.ACCEPTED:  # RFC 6026 7.2: wait for more 2xx for Timer M
                self._cancel(txn, RETX)
                self._arm(txn, END, now + self._t64)
        else:  # a final that completes the transaction
            self._cancel(txn, RETX)
            self._cancel(txn, END)
            if txn.kind == _IC:
                txn.ack = _make_ack(txn.request, resp)
                self._out.append((txn.ack, txn.peer))
            txn.state = new
            self._events.append(ResponseReceived(resp, txn.key))
            if txn.reliable:
                self._end_client(txn)  # RFC 3261 17.1.1.2 / 17.1.2.2: D and K are zero
            else:
                wait = max(32.0, self._t64) if txn.kind == _IC else self._t4  # D / K
                self._arm(txn, END, now + wait)
            return
        txn.state = new
        self._events.append(ResponseReceived(resp, txn.key))

    def _on_request(self, req: Request, peer: Peer, now: float) -> None:
        method = req.method
        try:
            via = req.top_via
            ids = (req.call_id, req.cseq.seq, req.from_tag)
            mk = match_key(req, via, "INVITE" if method == "ACK" else method, ids)
            to_tag = req.to_tag if method == "ACK" else None
        except ParseError:
            return  # parse() rejects these; a request without them belongs to nothing
        if method == "ACK":
            self._on_ack(req, peer, mk, ids, to_tag, now)
            return
        key = mk
        txn = self._servers.get(mk)
        if txn is not None:
            if (txn.call_id, txn.cseq, txn.from_tag) == ids:
                self._retransmission(txn, peer)
                return
            # Same branch, different request: a new transaction replaces the old one.
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("branch reused by a different request, replacing %s", txn.key)
            self._end_server(txn)
            key = self._fresh_key(mk)
        else:
            rec = self._done.get(mk)
            if rec is not None:
                if rec.fp == hash(ids):
                    self._out.append((rec.out, peer))  # RFC 3261 17.2.2: resend the final
                    return
                self._drop_done(rec)
                key = self._fresh_key(mk)
        if method == "INVITE":
            txn = ServerTxn(key, mk, _IS, _S.PROCEEDING, req, peer, ids)
            self._arm(txn, RETX, now + _TRYING_DELAY)
        else:
            txn = ServerTxn(key, mk, _NS, _S.TRYING, req, peer, ids)
        self._servers[mk] = txn
        self._events.append(RequestReceived(req, peer, key))

    def _retransmission(self, txn: ServerTxn, peer: Peer) -> None:
        if lookup(txn.kind, txn.state, _I.RECV_REQUEST) is None:
            return
        # RFC 3581 4: answer where the request (now) comes from; on streams that may be a
        # new connection after the old one broke.
        txn.peer = peer
        if txn.state in (_S.PROCEEDING, _S.COMPLETED) and txn.last is not None:
            # RFC 3261 17.2.1 / 17.2.2: resend the last provisional or the final response
            self._out.append((txn.last, peer))

    def _on_ack(self, req: Request, peer: Peer, mk: str, ids: tuple[str, int, str | None],
                to_tag: str | None, now: float) -> None:
        txn = self._servers.get(mk)
        if (txn is not None and txn.kind == _IS
                and (txn.call_id, txn.cseq, txn.from_tag) == ids
                and (not mk.startswith("2543 ") or txn.to_tag in (None, to_tag))):
            new = lookup(_IS, txn.state, _I.RECV_ACK)
            if new is not None:
                if txn.state == _S.COMPLETED:
                    self._cancel(txn, RETX)  # RFC 3261 17.2.1: stop G and H
                    self._cancel(txn, END)
                    txn.state = new
                    if txn.reliable:
                        self._end_server(txn)  # Timer I is zero
                    else:
                        self._arm(txn, END, now + self._t4)
                elif txn.state == _S.ACCEPTED:
                    self._ack_for_2xx(txn, req, peer)
                return
        txn = self._acks.get(ids)
        if txn is not None:
            self._ack_for_2xx(txn, req, peer)
            return
        self._events.append(RequestReceived(req, peer, None))

    def _ack_for_2xx(self, txn: ServerTxn, req: Request, peer: Peer) -> None:
        if txn.acked:
            return  # a retransmitted ACK, crossed with our 2xx retransmissions
        txn.acked = True
        self._cancel(txn, RETX)  # RFC 3261 13.3.1.4: retransmission ceases with the ACK
        self._events.append(AckReceived(req, peer, txn.key))

    def report_transport_error(self, peer: Peer, now: float) -> None:
        """Adapters: sending to ``peer`` failed or its connection is gone (RFC 3261 17.1.4,
        17.2.4). Every transaction bound to it ends; those whose outcome was still open
        (no final response yet, or a final response not yet ACKed) emit :class:`TransportError`.
        With ``peer.conn`` set, transactions on that connection are meant; otherwise those on
        that transport and address. Completed non-INVITE server records are left to Timer J.
        """
        def bound(p: Peer) -> bool:
            if peer.conn is not None:
                return p.conn == peer.conn and p.transport == peer.transport
            return p.addr == peer.addr and p.transport == peer.transport

        for c in [c for c in self._clients.values() if bound(c.peer)]:
            open_ = c.state in (_S.CALLING, _S.TRYING, _S.PROCEEDING)
            self._end_client(c)
            if open_:
                self._events.append(TransportError(c.key, c.request))
        for s in [s for s in self._servers.values() if bound(s.peer)]:
            open_ = s.state != _S.CONFIRMED and not s.acked
            self._end_server(s)
            if open_:
                self._events.append(TransportError(s.key, s.request))

    # -- TU -> layer ---------------------------------------------------------------------------
    def send_request(self, req: Request, peer: Peer, now: float) -> str:
        """Start a client transaction for ``req`` (INVITE, CANCEL or any non-INVITE but ACK)
        and send it to ``peer``; returns the transaction key.

        The TU has put its Via with a fresh branch (:func:`new_branch`) on top. A CANCEL
        carries the branch of the INVITE it cancels (RFC 3261 9.1) and may only be sent once
        that INVITE got a provisional response; a CANCEL for an INVITE in Calling raises.
        Raises :class:`LocalSipError` for an ACK, a missing or non-RFC 3261 branch, or a
        branch already in use.
        """
        method = req.method
        if method == "ACK":
            raise LocalSipError(
                "ACK is not a transaction: send the ACK for a 2xx with send_ack(); the layer "
                "sends the ACK for a non-2xx final response itself (RFC 3261 17.1.1.3)"
            )
        try:
            branch = req.top_via.branch
            _ = req.call_id, req.from_, req.to  # needed for the ACK (RFC 3261 17.1.1.3)
            cseq_method = req.cseq.method
        except ParseError as e:
            raise LocalSipError(f"cannot send {method}: {e}") from None
        if cseq_method != method:
            raise LocalSipError(f"CSeq method {cseq_method} of a {method} request")
        if branch is None or len(branch) <= COOKIE_LEN or not branch.startswith(MAGIC_COOKIE):
            raise LocalSipError(
                f"{method}: the top Via needs an RFC 3261 branch (new_branch()), got {branch!r}"
            )
        key = f"{branch} {method}"
        if key in self._clients:
            raise LocalSipError(f"client transaction {key!r} exists: each request needs a "
                                "fresh branch (RFC 3261 8.1.1.7)")
        if method == "CANCEL":
            inv = self._clients.get(f"{branch} INVITE")
            if inv is not None:
                new = transition(_IC, inv.state, _I.SEND_CANCEL)  # RFC 3261 9.1
                if inv.state == _S.PROCEEDING and not inv.end_seq:
                    # RFC 3261 9.1: no final 64*T1 after the CANCEL -> give the INVITE up.
                    self._arm(inv, END, now + self._t64)
                inv.state = new
        data = bytes(req)
        if method == "INVITE":
            txn = ClientTxn(key, _IC, _S.CALLING, req, peer, data)
        else:
            txn = ClientTxn(key, _NC, _S.TRYING, req, peer, data)
        self._clients[key] = txn
        self._out.append((data, peer))
        if not txn.reliable:  # RFC 3261 17.1.1.2 / 17.1.2.2: A and E only on UDP
            txn.interval = self._t1
            self._arm(txn, RETX, now + self._t1)
        self._arm(txn, END, now + self._t64)  # B / F
        return key

    def send_ack(self, ack: Request, peer: Peer) -> None:
        """Send the TU's ACK for a 2xx (no transaction, RFC 3261 13.2.2.4). Send it again for
        every 2xx retransmission reported by :class:`ResponseReceived`."""
        if ack.method != "ACK":
            raise LocalSipError(f"send_ack() sends ACK, not {ack.method}")
        self._out.append((bytes(ack), peer))

    def send_response(self, server_key: str, resp: Response, now: float) -> None:
        """Send ``resp`` through the server transaction ``server_key``, to the peer the request
        came from (RFC 3581 4 symmetric response; on streams the same connection).

        A 2xx to INVITE moves the transaction to Accepted (RFC 6026) and the layer
        retransmits it at T1 doubling to T2 until the ACK arrives (RFC 3261 13.3.1.4).
        Raises :class:`LocalSipError` if the transaction is gone, the response is not
        allowed in its state (e.g. a second final), or it answers another method.
        """
        status = resp.status
        if not 100 <= status <= 699:
            raise LocalSipError(f"invalid status code {status}")
        inp = _I.SEND_1XX if status < 200 else _I.SEND_2XX if status < 300 else _I.SEND_FINAL
        txn = self._find_server(server_key)
        if txn is None:
            rec = self._done.get(split_key(server_key))
            if rec is not None and rec.key == server_key:
                transition(_NS, _S.COMPLETED, inp)  # raises: a second final response
            raise LocalSipError(f"no server transaction {server_key!r} (Terminated): cannot "
                                f"send {status}")
        try:
            method = resp.cseq.method
        except ParseError as e:
            raise LocalSipError(f"response without a valid CSeq: {e}") from None
        if method != txn.request.method:
            raise LocalSipError(f"a response to {method} sent on the {txn.request.method} "
                                f"transaction {server_key!r}")
        new = transition(txn.kind, txn.state, inp)  # raises, state unchanged
        data = bytes(resp)
        self._out.append((data, txn.peer))
        old = txn.state
        txn.state = new
        if inp == _I.SEND_1XX:
            txn.last = data
            if txn.kind == _IS:
                self._cancel(txn, RETX)  # the TU spoke: no automatic 100 Trying
        elif txn.kind == _NS:
            self._servers.pop(txn.mk, None)
            if txn.reliable:
                txn.state = _S.TERMINATED  # RFC 3261 17.2.2: Timer J is zero
            else:
                rec = DoneRecord(txn, data, now + self._t64)  # Timer J
                self._done[txn.mk] = rec
                self._j_queue.append(rec)
        elif inp == _I.SEND_2XX:
            txn.last = data
            if old == _S.PROCEEDING:
                # RFC 3261 13.3.1.4: the 2xx is retransmitted on every transport (a UDP hop
                # may follow), until the ACK or 64*T1 (RFC 6026 Timer L).
                txn.interval = self._t1
                self._arm(txn, RETX, now + self._t1)
                self._arm(txn, END, now + self._t64)
                txn.ack_key = (txn.call_id, txn.cseq, txn.from_tag)
                self._acks[txn.ack_key] = txn
        else:  # INVITE, 300-699: Completed
            txn.last = data
            try:
                txn.to_tag = resp.to_tag
            except ParseError:
                txn.to_tag = None
            self._cancel(txn, RETX)
            if not txn.reliable:  # RFC 3261 17.2.1: G only on UDP
                txn.interval = self._t1
                self._arm(txn, RETX, now + self._t1)
            self._arm(txn, END, now + self._t64)  # H

    def send_stateless(self, resp: Response, peer: Peer) -> None:
        """Send a response outside any transaction (e.g. 400 to an unparsable request)."""
        self._out.append((bytes(resp), peer))

    def cancel_info(self, cancel: Request) -> str | None:
        """The key of the INVITE server transaction a received CANCEL matches (RFC 3261 9.2:
        the INVITE's branch and sent-by, or its RFC 2543 fields), if it is still in Proceeding
        and so can be cancelled; else None (the TU answers the CANCEL 481 or 200 as it sees
        fit)."""
        try:
            ids = (cancel.call_id, cancel.cseq.seq, cancel.from_tag)
            mk = match_key(cancel, cancel.top_via, "INVITE", ids)
        except ParseError:
            return None
        txn = self._servers.get(mk)
        if (txn is None or txn.kind != _IS or txn.state != _S.PROCEEDING
                or (txn.call_id, txn.cseq, txn.from_tag) != ids):
            return None
        return txn.key

    def terminate(self, key: str) -> None:
        """Abort a transaction at once, without events (e.g. shutdown). Unknown keys are
        ignored, so that the TU may call it for a transaction that just ended."""
        c = self._clients.get(key)
        if c is not None:
            self._end_client(c)
            return
        s = self._find_server(key)
        if s is not None:
            self._end_server(s)
            return
        rec = self._done.get(split_key(key))
        if rec is not None and rec.key == key:
            self._drop_done(rec)

    def state(self, key: str) -> TxnState | None:
        """The state of a live transaction, None once it has terminated."""
        c = self._clients.get(key)
        if c is not None:
            return c.state
        s = self._find_server(key)
        if s is not None:
            return s.state
        rec = self._done.get(split_key(key))
        return _S.COMPLETED if rec is not None and rec.key == key else None

    # -- layer -> TU / network -----------------------------------------------------------------
    def next_event(self) -> TransactionEvent | None:
        """The next event for the TU, or None."""
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self) -> list[tuple[bytes, Peer]]:
        """Drain the serialised messages to send, in order."""
        out = self._out
        self._out = []
        return out

    def get_timer(self) -> float | None:
        """The earliest deadline (same clock as ``now``), or None when nothing is pending."""
        heap = self._heap
        first: float | None = None
        while heap:
            when, seq, t = heap[0]
            if t.retx_seq == seq or t.end_seq == seq:
                first = when
                break
            heapq.heappop(heap)
            self._stale -= 1
        queue = self._j_queue
        done = self._done
        while queue:
            rec = queue[0]
            if done.get(rec.mk) is rec:
                if first is None or rec.deadline < first:
                    first = rec.deadline
                break
            queue.popleft()  # replaced or terminated earlier
        return first

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, t = heapq.heappop(heap)
            if t.retx_seq == seq:
                t.retx_seq = 0
                slot = RETX
            elif t.end_seq == seq:
                t.end_seq = 0
                slot = END
            else:
                self._stale -= 1
                continue
            if isinstance(t, ClientTxn):
                self._client_timer(t, slot, now)
            elif isinstance(t, ServerTxn):
                self._server_timer(t, slot, now)
        queue = self._j_queue
        done = self._done
        while queue and queue[0].deadline <= now:
            rec = queue.popleft()  # Timer J (RFC 3261 17.2.2)
            if done.get(rec.mk) is rec:
                del done[rec.mk]

    def __len__(self) -> int:
        """Live transactions, completed non-INVITE server records included."""
        return len(self._clients) + len(self._servers) + len(self._done)

    # -- timers ------------------------------------------------------------------------------
    def _client_timer(self, txn: ClientTxn, slot: int, now: float) -> None:
        inp = TIMER_INPUT[(txn.kind, txn.state, slot)]
        new = lookup(txn.kind, txn.state, inp)
        if new is None:  # pragma: no cover - TIMER_INPUT and TRANSITIONS agree
            return
        if inp == _I.TIMER_A or inp == _I.TIMER_E:
            self._out.append((txn.out, txn.peer))
            if inp == _I.TIMER_A:
                txn.interval *= 2  # RFC 3261 17.1.1.2: A doubles without a cap
            elif txn.state == _S.PROCEEDING:
                txn.interval = self._t2  # RFC 3261 17.1.2.2
            else:
                txn.interval = min(2 * txn.interval, self._t2)
            self._arm(txn, RETX, now + txn.interval)
            return
        self._end_client(txn)
        if inp != _I.TIMER_D and inp != _I.TIMER_K and inp != _I.TIMER_M:  # B, F, CANCEL
            self._events.append(TransactionTimeout(txn.key, txn.request))

    def _server_timer(self, txn: ServerTxn, slot: int, now: float) -> None:
        inp = TIMER_INPUT[(txn.kind, txn.state, slot)]
        new = lookup(txn.kind, txn.state, inp)
        if new is None:  # pragma: no cover - TIMER_INPUT and TRANSITIONS agree
            return
        if inp == _I.TIMER_TRYING:
            if txn.last is None:
                trying = txn.request.response(100)
                ts = txn.request.headers.get("Timestamp")
                if ts is not None:
                    trying.headers.add("Timestamp", ts)  # RFC 3261 8.2.6.1
                txn.last = bytes(trying)
                self._out.append((txn.last, txn.peer))
        elif inp == _I.TIMER_G or inp == _I.TIMER_2XX:
            if txn.last is not None:
                self._out.append((txn.last, txn.peer))
            txn.interval = min(2 * txn.interval, self._t2)
            self._arm(txn, RETX, now + txn.interval)
        else:  # H, I, L
            timed_out = inp == _I.TIMER_H or (inp == _I.TIMER_L and not txn.acked)
            self._end_server(txn)
            if timed_out:
                self._events.append(TransactionTimeout(txn.key, txn.request))

    def _arm(self, t: Timed, slot: int, when: float) -> None:
        self._seq += 1
        seq = self._seq
        if slot == RETX:
            if t.retx_seq:
                self._stale += 1
            t.retx_seq = seq
        else:
            if t.end_seq:
                self._stale += 1
            t.end_seq = seq
        heapq.heappush(self._heap, (when, seq, t))
        if self._stale > 4096 and 2 * self._stale > len(self._heap):
            # Lazy deletion leaves dead entries behind (Timer F outlives most non-INVITE
            # client transactions); rebuild the heap once they are the majority.
            self._heap = [e for e in self._heap if e[2].retx_seq == e[1] or e[2].end_seq == e[1]]
            heapq.heapify(self._heap)
            self._stale = 0

    def _cancel(self, t: Timed, slot: int) -> None:
        if slot == RETX:
            if t.retx_seq:
                self._stale += 1
                t.retx_seq = 0
        elif t.end_seq:
            self._stale += 1
            t.end_seq = 0

    # -- bookkeeping ---------------------------------------------------------------------------
    def _end_client(self, txn: ClientTxn) -> None:
        txn.state = _S.TERMINATED
        self._cancel(txn, RETX)
        self._cancel(txn, END)
        if self._clients.get(txn.key) is txn:
            del self._clients[txn.key]

    def _end_server(self, txn: ServerTxn) -> None:
        txn.state = _S.TERMINATED
        self._cancel(txn, RETX)
        self._cancel(txn, END)
        if self._servers.get(txn.mk) is txn:
            del self._servers[txn.mk]
        if txn.ack_key is not None and self._acks.get(txn.ack_key) is txn:
            del self._acks[txn.ack_key]

    def _drop_done(self, rec: DoneRecord) -> None:
        if self._done.get(rec.mk) is rec:
            del self._done[rec.mk]

    def _find_server(self, key: str) -> ServerTxn | None:
        txn = self._servers.get(split_key(key))
        return txn if txn is not None and txn.key == key else None

    def _fresh_key(self, mk: str) -> str:
        self._serial += 1
        return f"{mk}#{self._serial}"
