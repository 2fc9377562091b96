"""The state of a B2BUA call (legs, forks, relayed requests) and pure helpers of the controller."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count
from typing import TYPE_CHECKING, Literal, Protocol

from media.relay import Leg
from media.sdp import SdpError, SessionDescription, direction
from sip.dialog import Dialog
from sip.message import Request
from sip.transaction import Peer

from .records import CallLeg

if TYPE_CHECKING:
    import asyncio

    from media.udp import RelayHandle

    from .config import User
    from .config_routing import Route, Trunk
    from .localcall import LocalCall
    from .transfer import Transfer

Side = Literal["a", "b"]
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REGISTER, REFER, NOTIFY"
#: RFC 3891: phones only offer attended transfer (REFER with Replaces) to peers that say so.
SUPPORTED = "replaces"
FORWARDED_METHODS = frozenset({"INFO", "UPDATE", "MESSAGE", "OPTIONS", "NOTIFY"})


@dataclass(frozen=True, slots=True)
class Outsider:
    """A caller who is not one of the PBX's users: someone calling in through a trunk."""

    number: str
    """Their number, in E.164 when it could be read as one."""
    name: str
    """The display name their INVITE carried (often empty)."""
    trunk: str
    """The trunk the call came in on."""
    dtmf_mode: str = "auto"
    call_waiting: bool = True

    @property
    def id(self) -> str:
        # Never a user id (those have no ':'), so busy checks and presence never match it.
        return f"trunk:{self.trunk}:{self.number}"

    @property
    def extension(self) -> str:
        return self.number


def display_name(party: User | Outsider) -> str:
    """What a phone should show for ``party``: the name, else the login or the number."""
    if isinstance(party, Outsider):
        return party.name or party.number
    return party.name or party.id


def user_id(party: User | Outsider) -> str | None:
    """The user id of ``party`` for call records, None for an outside caller."""
    return None if isinstance(party, Outsider) else party.id


def utcnow() -> datetime:
    # SQLite drops time zones: records store naive UTC.
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(slots=True)
class LegState:
    """One user's phones or one number a call is offered to (see :class:`pbx.records.CallLeg`),
    while its outcome is being decided."""

    id: str
    kind: str
    """ring | queue | transfer | callback | outside"""
    started_at: datetime
    user: str | None = None
    number: str | None = None
    queue: str | None = None
    answered_at: datetime | None = None
    done: bool = False
    """Its outcome went to the records (an answered leg: its answer)."""

    def event(self, call_id: str, result: str, sip_code: int | None = None,
              ended_at: datetime | None = None) -> CallLeg:
        return CallLeg(call_id, self.id, self.kind, self.user, self.number, self.started_at,
                       self.answered_at, ended_at, result, sip_code, self.queue)


def new_leg(call_id: str, numbers: count[int], kind: str, *, user: str | None = None,
            number: str | None = None, queue: str | None = None) -> LegState:
    """A leg of the record ``call_id``, numbered from the record's own counter (several calls
    of the PBX may make legs of one record: a queue's offers, a callback's attempts)."""
    return LegState(f"{call_id}:{next(numbers)}", kind, utcnow(), user, number, queue)


def leg_numbers(call: Call) -> count[int]:
    """The counter numbering the legs of ``call``'s record (a local call's, when the caller
    was answered by the PBX first: its record is older than this call)."""
    return call.a_local.leg_numbers if call.a_local is not None else call.leg_numbers


def leg_result(codes: list[int]) -> tuple[str, int]:
    """What a leg whose phones all refused or failed with ``codes`` ended with, and the code."""
    best = best_failure(codes)
    if best in (486, 600):
        return "busy", best
    if best == 603:  # Decline (RFC 3261 21.6.2)
        return "rejected", best
    if best in (408, 480, 487):
        return "no_answer", best
    return "failed", best


@dataclass(slots=True)
class Fork:
    """One B-leg INVITE to one registered contact of the callee."""

    key: str
    invite: Request
    peer: Peer
    provisional: bool = False
    done: bool = False
    cancel_pending: bool = False
    cancelled: bool = False
    """A CANCEL went out (a second one on the same branch is not allowed)."""
    status: int | None = None
    step: int = 0
    """The ring step (see :class:`RingStep`) this phone rings in."""
    user: User | None = None
    """Whose phone it is."""
    trunk: Trunk | None = None
    """The trunk an outside call goes through (None: a user's phone)."""
    auth_tried: bool = False
    """The INVITE already answered the trunk's digest challenge (no second try)."""
    leg: LegState | None = None
    """The leg this INVITE is one phone of (a user's phones share one leg)."""


@dataclass(frozen=True, slots=True)
class RingStep:
    """Phones that ring together, for at most ``seconds``; a call rings its steps in turn
    (one step for a call to a user; one per member for a sequential ring group)."""

    users: tuple[User, ...]
    seconds: float
    trunk: Trunk | None = None
    """An outside call's step: this trunk, for ``number`` (E.164); ``users`` is empty."""
    number: str = ""


@dataclass(slots=True)
class Forwarded:
    """An in-dialog request re-issued on the other leg, waiting for its answer."""

    call: Call
    origin: Side
    origin_key: str
    origin_request: Request
    request: Request


class CallObserver(Protocol):
    """Told what becomes of a call's phones (a queue counting its offers to agents)."""

    def fork_failed(self, call: Call, fork: Fork) -> None:
        """A phone answered with a final error or timed out (not one the PBX cancelled)."""

    def answered(self, call: Call) -> None:
        """``call.callee`` answered (for a bridged local caller: before the caller moves)."""

    def ended(self, call: Call) -> None:
        """The call ended (answered or not)."""


@dataclass(slots=True)
class Call:
    id: str
    caller: User | Outsider
    callee: User | Outsider
    a_invite: Request
    a_key: str
    a_peer: Peer
    a_tag: str
    a_offer: SessionDescription | None
    """The caller's SDP offer; None for a delayed offer (RFC 3261 13.2.1: the offer then comes
    in the callee's 200 and the caller's answer in its ACK)."""
    started: datetime
    state: Literal["setup", "ringing", "answered", "ended"] = "setup"
    forks: dict[str, Fork] = field(default_factory=dict)
    relay: RelayHandle | None = None
    a_dialog: Dialog | None = None
    b_dialog: Dialog | None = None
    b_peer: Peer | None = None
    ring_timer: asyncio.TimerHandle | None = None
    plan: list[RingStep] = field(default_factory=list)
    step: int = -1
    """The index in ``plan`` ringing now."""
    timed_out: bool = False
    """Some step ran out of time (nobody answered, as opposed to everybody refusing)."""
    group: str | None = None
    """The ring group called (None for a call to a user)."""
    fallback: Route | None = None
    """Where an unanswered ring group call goes (None: the unavailable prompt)."""
    hops: int = 0
    trunk_peers: dict[str, Peer] = field(default_factory=dict)
    """Where each trunk of an outside call is reached, resolved when the call starts."""
    a_local: LocalCall | None = None
    """The caller's leg when the PBX had answered it itself (an IVR) before this call rang."""
    a_called: bool = False
    """The A side is a phone the PBX called (a queue callback's agent), so the record's caller
    is on the B side: who hung up is told the other way round."""
    bridge_result: asyncio.Future[int | None] | None = None
    """For such a call: None once bridged, else the status why not (see pbx.bridging)."""
    to_number: str = ""
    setup_task: asyncio.Task[None] | None = None
    privacy: bool = False
    """The caller asked for its identity to be withheld (RFC 3323 ``Privacy: id``)."""
    """Fallback routes followed so far (bounded, so two groups cannot bounce a call)."""
    b_offer: bytes = b""
    """The SDP offer every B-leg INVITE carries (empty for a delayed offer)."""
    sdp_version: dict[Side, int] = field(default_factory=lambda: {"a": 0, "b": 0})
    sdp_ids: dict[Side, int] = field(default_factory=lambda: {"a": 0, "b": 1})
    """The o= session id of the SDP the PBX sends on each side (RFC 3264 8: it stays the same
    for the whole dialog, even when the dialog moves to another call in a transfer)."""
    pending_b_ack: tuple[Dialog, Request, Peer] | None = None
    """Delayed offer: the ACK for the callee's 200, sent once the caller's ACK brings the answer."""
    caller_codec: str | None = None
    """The caller's G.711 payload type when the relay transcodes between the legs."""
    reinvite_pending: bool = False
    max_forwards: int = 70
    """Max-Forwards for requests we send on the B legs: the caller's value minus one, so that
    two PBXs routing calls to each other cannot loop forever (RFC 7332 3)."""
    answered_at: datetime | None = None
    answered_mono: float = 0.0
    last_sdp: dict[Side, SessionDescription] = field(default_factory=dict)
    """The last SDP with an audio stream each side sent (see _relay_answer)."""
    held: bool = False
    holder: Side | None = None
    """The side that put the call on hold (its leg is muted until resume)."""
    """The last offer in the call put one side on hold (RTP may stop: no media timeout)."""

    transfer: Transfer | None = None
    """The transfer in progress on this call (a :class:`pbx.transfer.Transfer`), if any."""
    billed: tuple[Trunk, str] | None = None
    """The trunk that answered an outside call and the number (E.164): the call's cost."""
    observer: CallObserver | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()
    """Headers added to every INVITE to the callee's phones."""
    caller_name: str | None = None
    """The name the callee's phones show for the caller when the PBX knows better than the
    caller's own display name (the CRM record their number matched)."""
    leg_numbers: count[int] = field(default_factory=lambda: count(1))
    """Numbers this record's legs (a call with ``a_local`` uses the local call's)."""
    leg_queue: str | None = None
    """The queue whose offer this call is: its legs are of kind ``queue``."""
    party_legs: dict[Side, LegState] = field(default_factory=dict)
    """The answered leg on each side (the callee's; a transfer target's), ended when a
    transfer hands that side to another phone."""

    def dialog(self, side: Side) -> Dialog | None:
        return self.a_dialog if side == "a" else self.b_dialog

    def peer(self, side: Side) -> Peer | None:
        return self.a_peer if side == "a" else self.b_peer

    def user(self, side: Side) -> User | Outsider:
        return self.caller if side == "a" else self.callee

    def set_party(self, side: Side, user: User | Outsider, dialog: Dialog | None,
                  peer: Peer | None) -> None:
        """Put another phone on ``side`` (a transfer replaced the party there)."""
        if side == "a":
            self.caller, self.a_dialog, self.a_peer = user, dialog, peer or self.a_peer
        else:
            self.callee, self.b_dialog, self.b_peer = user, dialog, peer


def other_side(side: Side) -> Side:
    return "b" if side == "a" else "a"


def leg_of(side: Side) -> Leg:
    return Leg.A if side == "a" else Leg.B


def media_summary(relay: RelayHandle) -> str:
    """One line of what the relay saw, for the end-of-call log (per call, not per packet)."""
    st = relay.stats()
    parts = []
    for name, leg in (("caller", st.a), ("callee", st.b)):
        drops = leg.dropped_foreign + leg.dropped_no_remote + leg.dropped_no_peer
        parts.append(f"{name} sent {leg.rtp_packets} RTP from {leg.latched}"
                     f" (to {leg.remote}, {drops} dropped: {leg.dropped_foreign} foreign,"
                     f" {leg.dropped_no_remote} early, {leg.dropped_no_peer} no peer)")
    return "; " + "; ".join(parts)


def max_forwards(req: Request) -> int:
    """The request's Max-Forwards (70 when absent, as RFC 2543 clients may send none)."""
    v = req.headers.get("Max-Forwards")
    return int(v) if v is not None and v.isdigit() else 70


def is_hold(body: bytes) -> bool:
    try:
        return direction(SessionDescription.parse(body)) != "sendrecv"
    except SdpError:
        return False


def codec_of(call: Call, side: Side) -> str | None:
    """The G.711 payload type ("0" or "8") ``side``'s phone talks now: the callee's answer
    decides it, and the caller's side differs only when the relay transcodes."""
    b = [f for f in (call.last_sdp["b"].audio.formats
                     if "b" in call.last_sdp and call.last_sdp["b"].audio else ())
         if f in ("0", "8")]
    b_codec = b[0] if b else None
    return (call.caller_codec or b_codec) if side == "a" else b_codec


def best_failure(codes: list[int]) -> int:
    """RFC 3261 16.7 step 6, simplified: 6xx wins, then busy, then the lowest class."""
    six = [c for c in codes if c >= 600]
    if six:
        return six[0]
    if 486 in codes:
        return 486
    return min(codes, key=lambda c: (c // 100 != 4, c == 408, c))
