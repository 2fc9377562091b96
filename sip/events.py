"""Events of the SIP transaction layer, and :class:`Peer`, the address they come from.

The transaction layer (``sip/transaction.py``) hands these to its transaction user (TU) through
``next_event()``. They are frozen: the TU reads them, it never answers through them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .message import Request, Response


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from or goes to."""

    transport: str
    """``"udp"``, ``"tcp"``, ``"tls"``, ``"ws"`` or ``"wss"`` (lower case)."""
    addr: tuple[str, int]
    """IP address and port of the remote end."""
    conn: int | None = None
    """Stream connection id, so that responses reuse the connection (None for UDP)."""

    @property
    def reliable(self) -> bool:
        """True on stream transports: the layer then does not retransmit (RFC 3261 17)."""
        return self.transport != "udp"


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request (never a retransmission), including CANCEL.

    An ACK that matched no transaction (the ACK for a 2xx that this layer is not
    retransmitting, RFC 3261 17.2.3) also arrives here, with ``server_key`` None.
    """

    request: Request
    peer: Peer
    server_key: str | None
    """Key of the new server transaction, for ``send_response``; None for a lone ACK."""


@dataclass(frozen=True, slots=True)
class AckReceived:
    """The ACK for a 2xx that the layer was retransmitting (RFC 3261 13.3.1.4).

    The layer has stopped retransmitting that 2xx. Sent once per INVITE server transaction.
    """

    request: Request
    peer: Peer
    server_key: str


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response of a client transaction.

    Retransmitted provisional and non-2xx final responses are absorbed. Every 2xx to an INVITE
    is passed up, retransmissions included (RFC 6026 7.2): the TU answers each with its ACK.
    """

    response: Response
    client_key: str


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """A transaction gave up.

    Client transactions: Timer B or F fired, or no final response 64*T1 after a CANCEL; the
    TU treats it as a 408 (RFC 3261 8.1.3.1). INVITE server transactions: Timer H fired (the
    ACK for a non-2xx final never came), or a 2xx was never ACKed within 64*T1 (the TU should
    then end the dialog with a BYE, RFC 3261 13.3.1.4).
    """

    key: str
    request: Request


@dataclass(frozen=True, slots=True)
class TransportError:
    """The transport failed for a transaction whose outcome was still open (RFC 3261 17.1.4,
    17.2.4); the transaction is terminated."""

    key: str
    request: Request


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response that matched no client transaction; it was dropped (RFC 3261 18.1.2)."""

    response: Response
    peer: Peer


TransactionEvent = (
    RequestReceived
    | AckReceived
    | ResponseReceived
    | TransactionTimeout
    | TransportError
    | StrayResponse
)
