"""State tables of the four SIP transaction state machines (RFC 3261 17, figures 5-8, with the
Accepted states of RFC 6026 7).

Theory of operation
-------------------
A transaction is one of four kinds (INVITE/non-INVITE, client/server). Each has a current
:class:`TxnState`. Everything that can happen to it is an :class:`TxnInput`: a message from the
network (classified by status class, or "a retransmitted request"), an action of the transaction
user (TU: "send a 2xx", "send a CANCEL for this INVITE", "terminate"), a transport failure, or a
timer firing. Timers are named by the RFC's letters; their durations live in the layer, which
knows the transport. ``TRANSITIONS[(kind, state, input)]`` gives the next state. The layer
(``sip/transaction.py``) classifies the input, asks this table, and performs the actions that go
with the input (send, arm a timer, emit an event).

A pair missing from the table is an input the state machine does not accept:

* from the TU it is a programming error: :func:`transition` raises :class:`LocalSipError`
  naming the kind, the state and the input, and the state does not change;
* from the network it is absorbed (a late provisional in Completed, a stray ACK), which is what
  RFC 3261 17 asks of messages that do not fit: they are never an error of the local side.

The end of the file holds what each transaction keeps (its state, its timer slots, what it
resends) and the server matching key of RFC 3261 17.2.3.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

from .errors import LocalSipError
from .events import Peer
from .message import Request
from .via import MAGIC_COOKIE, Via

# Rule 1 (after h11's _state.py): everything that decides which state a transaction moves to
# lives here in this file. As much as possible goes into the tables below; the layer may
# classify messages into inputs and carry out the actions that belong to an input, but the only
# state it assigns on its own is TERMINATED, when it removes a transaction (every input that
# leads to removal leads to TERMINATED in the tables).
#
# Rule 2: the tables know nothing of bytes, sockets, clocks or transports. Whether a timer is
# zero (D, I, J, K on a reliable transport) is decided by the layer, which then terminates the
# transaction at once instead of arming it.
#
# IntEnum rather than Enum: the tables are consulted for every message and the members of an
# IntEnum hash like ints (Enum.__hash__ is a Python-level call).


class TxnKind(IntEnum):
    """The four transaction state machines (RFC 3261 17.1.1, 17.1.2, 17.2.1, 17.2.2)."""

    INVITE_CLIENT = 1
    NON_INVITE_CLIENT = 2
    INVITE_SERVER = 3
    NON_INVITE_SERVER = 4


class TxnState(IntEnum):
    """States of RFC 3261 figures 5-8 plus RFC 6026 Accepted."""

    CALLING = 1
    TRYING = 2
    PROCEEDING = 3
    COMPLETED = 4
    CONFIRMED = 5
    ACCEPTED = 6
    TERMINATED = 7


class TxnInput(IntEnum):
    """Everything that can happen to a transaction."""

    # network -> client transaction, by response class
    RECV_1XX = 1
    RECV_2XX = 2
    RECV_FINAL = 3  # 300-699
    # network -> server transaction
    RECV_REQUEST = 4  # a retransmission of the request that created the transaction
    RECV_ACK = 5  # ACK matched by branch (non-2xx) or by dialog identifiers (2xx)
    # TU -> server transaction
    SEND_1XX = 6
    SEND_2XX = 7
    SEND_FINAL = 8  # 300-699
    # TU -> INVITE client transaction: a CANCEL for it goes out (RFC 3261 9.1)
    SEND_CANCEL = 9
    # TU or adapter, any transaction
    TERMINATE = 10
    TRANSPORT_ERROR = 11
    # timers, RFC 3261 table 4 and RFC 6026 7
    TIMER_A = 12
    TIMER_B = 13
    TIMER_D = 14
    TIMER_E = 15
    TIMER_F = 16
    TIMER_K = 17
    TIMER_G = 18
    TIMER_H = 19
    TIMER_I = 20
    TIMER_J = 21
    TIMER_L = 22
    TIMER_M = 23
    TIMER_TRYING = 24  # RFC 3261 17.2.1: 100 Trying if the TU is silent for 200 ms
    TIMER_2XX = 25  # RFC 3261 13.3.1.4: 2xx retransmission until the ACK arrives
    TIMER_CANCEL = 26  # RFC 3261 9.1: no final response 64*T1 after the CANCEL


_IC = TxnKind.INVITE_CLIENT
_NC = TxnKind.NON_INVITE_CLIENT
_IS = TxnKind.INVITE_SERVER
_NS = TxnKind.NON_INVITE_SERVER
_S = TxnState
_I = TxnInput

TRANSITIONS: Final[dict[tuple[TxnKind, TxnState, TxnInput], TxnState]] = {
    # -- INVITE client, RFC 3261 figure 5 / RFC 6026 figure 3 --------------------------------
    (_IC, _S.CALLING, _I.TIMER_A): _S.CALLING,  # retransmit, double A
    (_IC, _S.CALLING, _I.TIMER_B): _S.TERMINATED,  # timeout -> TU
    (_IC, _S.CALLING, _I.RECV_1XX): _S.PROCEEDING,
    (_IC, _S.CALLING, _I.RECV_2XX): _S.ACCEPTED,
    (_IC, _S.CALLING, _I.RECV_FINAL): _S.COMPLETED,  # send ACK
    (_IC, _S.PROCEEDING, _I.RECV_1XX): _S.PROCEEDING,
    (_IC, _S.PROCEEDING, _I.RECV_2XX): _S.ACCEPTED,
    (_IC, _S.PROCEEDING, _I.RECV_FINAL): _S.COMPLETED,  # send ACK
    (_IC, _S.PROCEEDING, _I.SEND_CANCEL): _S.PROCEEDING,  # arm the 64*T1 CANCEL guard
    (_IC, _S.PROCEEDING, _I.TIMER_CANCEL): _S.TERMINATED,  # timeout -> TU
    (_IC, _S.COMPLETED, _I.RECV_FINAL): _S.COMPLETED,  # resend ACK
    (_IC, _S.COMPLETED, _I.SEND_CANCEL): _S.COMPLETED,  # too late, harmless (RFC 3261 9.1)
    (_IC, _S.COMPLETED, _I.TIMER_D): _S.TERMINATED,
    (_IC, _S.ACCEPTED, _I.RECV_2XX): _S.ACCEPTED,  # pass every 2xx up (RFC 6026 7.2)
    (_IC, _S.ACCEPTED, _I.SEND_CANCEL): _S.ACCEPTED,
    (_IC, _S.ACCEPTED, _I.TIMER_M): _S.TERMINATED,
    # -- non-INVITE client, RFC 3261 figure 6 ------------------------------------------------
    (_NC, _S.TRYING, _I.TIMER_E): _S.TRYING,  # retransmit, E = min(2E, T2)
    (_NC, _S.TRYING, _I.TIMER_F): _S.TERMINATED,  # timeout -> TU
    (_NC, _S.TRYING, _I.RECV_1XX): _S.PROCEEDING,
    (_NC, _S.TRYING, _I.RECV_2XX): _S.COMPLETED,
    (_NC, _S.TRYING, _I.RECV_FINAL): _S.COMPLETED,
    (_NC, _S.PROCEEDING, _I.TIMER_E): _S.PROCEEDING,  # retransmit, E = T2
    (_NC, _S.PROCEEDING, _I.TIMER_F): _S.TERMINATED,
    (_NC, _S.PROCEEDING, _I.RECV_1XX): _S.PROCEEDING,
    (_NC, _S.PROCEEDING, _I.RECV_2XX): _S.COMPLETED,
    (_NC, _S.PROCEEDING, _I.RECV_FINAL): _S.COMPLETED,
    (_NC, _S.COMPLETED, _I.TIMER_K): _S.TERMINATED,
    # -- INVITE server, RFC 3261 figure 7 / RFC 6026 figure 5 --------------------------------
    (_IS, _S.PROCEEDING, _I.RECV_REQUEST): _S.PROCEEDING,  # resend last provisional
    (_IS, _S.PROCEEDING, _I.TIMER_TRYING): _S.PROCEEDING,  # send 100 Trying
    (_IS, _S.PROCEEDING, _I.SEND_1XX): _S.PROCEEDING,
    (_IS, _S.PROCEEDING, _I.SEND_2XX): _S.ACCEPTED,
    (_IS, _S.PROCEEDING, _I.SEND_FINAL): _S.COMPLETED,
    (_IS, _S.COMPLETED, _I.RECV_REQUEST): _S.COMPLETED,  # resend final
    (_IS, _S.COMPLETED, _I.TIMER_G): _S.COMPLETED,  # resend final, G = min(2G, T2)
    (_IS, _S.COMPLETED, _I.RECV_ACK): _S.CONFIRMED,
    (_IS, _S.COMPLETED, _I.TIMER_H): _S.TERMINATED,  # no ACK -> TU
    (_IS, _S.CONFIRMED, _I.RECV_REQUEST): _S.CONFIRMED,  # absorbed
    (_IS, _S.CONFIRMED, _I.RECV_ACK): _S.CONFIRMED,  # absorbed
    (_IS, _S.CONFIRMED, _I.TIMER_I): _S.TERMINATED,
    (_IS, _S.ACCEPTED, _I.RECV_REQUEST): _S.ACCEPTED,  # absorbed (RFC 6026 7.1)
    (_IS, _S.ACCEPTED, _I.RECV_ACK): _S.ACCEPTED,  # first one -> TU, stop 2xx retransmission
    (_IS, _S.ACCEPTED, _I.SEND_2XX): _S.ACCEPTED,  # sent as is (RFC 6026 7.1)
    (_IS, _S.ACCEPTED, _I.TIMER_2XX): _S.ACCEPTED,  # resend 2xx (RFC 3261 13.3.1.4)
    (_IS, _S.ACCEPTED, _I.TIMER_L): _S.TERMINATED,  # timeout -> TU if never ACKed
    # -- non-INVITE server, RFC 3261 figure 8 ------------------------------------------------
    (_NS, _S.TRYING, _I.RECV_REQUEST): _S.TRYING,  # absorbed
    (_NS, _S.TRYING, _I.SEND_1XX): _S.PROCEEDING,
    (_NS, _S.TRYING, _I.SEND_2XX): _S.COMPLETED,
    (_NS, _S.TRYING, _I.SEND_FINAL): _S.COMPLETED,
    (_NS, _S.PROCEEDING, _I.RECV_REQUEST): _S.PROCEEDING,  # resend last provisional
    (_NS, _S.PROCEEDING, _I.SEND_1XX): _S.PROCEEDING,
    (_NS, _S.PROCEEDING, _I.SEND_2XX): _S.COMPLETED,
    (_NS, _S.PROCEEDING, _I.SEND_FINAL): _S.COMPLETED,
    (_NS, _S.COMPLETED, _I.RECV_REQUEST): _S.COMPLETED,  # resend final
    (_NS, _S.COMPLETED, _I.TIMER_J): _S.TERMINATED,
}

# RFC 3261 17.1.4 / 17.2.4 and the TU's abort: every live state can end this way.
for _kind, _state in {(k, s) for (k, s, _) in TRANSITIONS}:
    TRANSITIONS[(_kind, _state, _I.TERMINATE)] = _S.TERMINATED
    TRANSITIONS[(_kind, _state, _I.TRANSPORT_ERROR)] = _S.TERMINATED

#: Which timer input a firing timer slot means in each state. A transaction has two timer
#: slots: RETX (retransmission-like: A, E, G, 2xx, 100 Trying) and END (lifetime-like: B, F, D,
#: H, I, J, K, L, M, CANCEL guard). Both may run at once (A with B, E with F, G with H).
RETX: Final = 0
END: Final = 1
TIMER_INPUT: Final[dict[tuple[TxnKind, TxnState, int], TxnInput]] = {
    (_IC, _S.CALLING, RETX): _I.TIMER_A,
    (_IC, _S.CALLING, END): _I.TIMER_B,
    (_IC, _S.PROCEEDING, END): _I.TIMER_CANCEL,
    (_IC, _S.COMPLETED, END): _I.TIMER_D,
    (_IC, _S.ACCEPTED, END): _I.TIMER_M,
    (_NC, _S.TRYING, RETX): _I.TIMER_E,
    (_NC, _S.PROCEEDING, RETX): _I.TIMER_E,
    (_NC, _S.TRYING, END): _I.TIMER_F,
    (_NC, _S.PROCEEDING, END): _I.TIMER_F,
    (_NC, _S.COMPLETED, END): _I.TIMER_K,
    (_IS, _S.PROCEEDING, RETX): _I.TIMER_TRYING,
    (_IS, _S.COMPLETED, RETX): _I.TIMER_G,
    (_IS, _S.COMPLETED, END): _I.TIMER_H,
    (_IS, _S.CONFIRMED, END): _I.TIMER_I,
    (_IS, _S.ACCEPTED, RETX): _I.TIMER_2XX,
    (_IS, _S.ACCEPTED, END): _I.TIMER_L,
    (_NS, _S.COMPLETED, END): _I.TIMER_J,
}

_NAMES: Final[dict[TxnKind, str]] = {
    _IC: "INVITE client",
    _NC: "non-INVITE client",
    _IS: "INVITE server",
    _NS: "non-INVITE server",
}


def lookup(kind: TxnKind, state: TxnState, inp: TxnInput) -> TxnState | None:
    """The next state, or None when the input is not accepted (network input: absorb it)."""
    return TRANSITIONS.get((kind, state, inp))


def transition(kind: TxnKind, state: TxnState, inp: TxnInput) -> TxnState:
    """The next state for an input from the TU; raises :class:`LocalSipError` if illegal."""
    new = TRANSITIONS.get((kind, state, inp))
    if new is None:
        raise LocalSipError(
            f"{_NAMES[kind]} transaction in state {state.name.title()} cannot take "
            f"{inp.name}"
        )
    return new


COOKIE_LEN: Final = len(MAGIC_COOKIE)


# -- what a transaction keeps (its state lives here, Rule 1) ----------------------------------


class Timed:
    """Something with timer slots; the seq of the live heap entry per slot, 0 when none."""

    __slots__ = ("end_seq", "retx_seq")

    def __init__(self) -> None:
        self.retx_seq = 0
        self.end_seq = 0


class ClientTxn(Timed):
    __slots__ = ("ack", "interval", "key", "kind", "out", "peer", "reliable", "request",
                 "seen", "state")

    def __init__(self, key: str, kind: TxnKind, state: TxnState, request: Request, peer: Peer,
                 out: bytes) -> None:
        super().__init__()
        self.key = key
        self.kind = kind
        self.state = state
        self.request = request
        self.peer = peer
        self.reliable = peer.reliable
        self.out = out  # the request as sent, for retransmission
        self.ack: bytes | None = None  # the layer's ACK for a non-2xx (RFC 3261 17.1.1.3)
        self.interval = 0.0
        self.seen: set[tuple[int, str | None, str | None, bytes]] | None = None  # 1xx seen


class ServerTxn(Timed):
    __slots__ = ("ack_key", "acked", "call_id", "cseq", "from_tag", "interval", "key", "kind",
                 "last", "mk", "peer", "reliable", "request", "state", "to_tag")

    def __init__(self, key: str, mk: str, kind: TxnKind, state: TxnState, request: Request,
                 peer: Peer, ids: tuple[str, int, str | None]) -> None:
        super().__init__()
        self.key = key  # public key given to the TU
        self.mk = mk  # match key, the dict key
        self.kind = kind
        self.state = state
        self.request = request
        self.peer = peer
        self.reliable = peer.reliable
        self.call_id, self.cseq, self.from_tag = ids
        self.last: bytes | None = None  # last response sent, for retransmission
        self.interval = 0.0
        self.ack_key: tuple[str, int, str | None] | None = None
        self.acked = False
        self.to_tag: str | None = None  # of the final response (RFC 2543 ACK matching)


class DoneRecord:
    """A completed non-INVITE server transaction on UDP, waiting for Timer J (RFC 3261
    17.2.2): just enough to answer a retransmitted request with the cached final response.

    A registrar keeps hundreds of thousands of these, so the request's Call-ID, CSeq number
    and From tag are kept only as a fingerprint (their hash) for the branch-reuse check, and
    Timer J lives in a FIFO rather than the heap (its duration is constant).
    """

    __slots__ = ("deadline", "fp", "key", "mk", "out", "peer")

    def __init__(self, txn: ServerTxn, out: bytes, deadline: float) -> None:
        self.key = txn.key
        self.mk = txn.mk
        self.fp = hash((txn.call_id, txn.cseq, txn.from_tag))
        self.out = out
        self.peer = txn.peer
        self.deadline = deadline


def split_key(key: str) -> str:
    """The match key of a public server key (a replacing transaction's key has ``#n``)."""
    base, sep, tail = key.rpartition("#")
    return base if sep and tail.isdigit() else key


def match_key(req: Request, via: Via, method: str, ids: tuple[str, int, str | None]) -> str:
    """RFC 3261 17.2.3 server matching key; ``method`` is INVITE for ACK and CANCEL look-ups."""
    branch = via.params.get("branch")
    # A branch that is only the cookie (RFC 4475 "badbranch") identifies nothing.
    if branch is not None and len(branch) > COOKIE_LEN and branch.startswith(MAGIC_COOKIE):
        return f"{branch} {via.host.lower()}:{via.port} {method}"
    # RFC 2543 fallback: Request-URI, From tag, Call-ID, CSeq number and top Via. The To tag
    # is compared separately for ACK, whose To carries the tag of our response.
    return (f"2543 {req.raw_uri} {ids[0]} {ids[1]} {ids[2]} {via.transport} "
            f"{via.host.lower()}:{via.port} {branch} {method}")
