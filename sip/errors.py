"""Errors of the SIP layer.

Every error carries the SIP status code it maps to (the idea of h11's ``error_status_hint``), so
the layer that talks to the network answers 400/420/481/505 without matching on message text.
"""

from __future__ import annotations


class SipError(Exception):
    """Base of all SIP-layer errors."""

    status_code: int = 400
    reason: str = "Bad Request"

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code


class ParseError(SipError):
    """A message from the network could not be parsed or violates RFC 3261 syntax.

    ``partial`` is the message as far as it could be read (start line and raw header fields),
    so that the server can still build an error response to it (RFC 3261 8.2.6.2 needs the Via,
    From, To, Call-ID and CSeq of the request). It is ``None`` when even that failed.
    """

    def __init__(
        self,
        message: str,
        status_code: int = 400,
        partial: object | None = None,
    ) -> None:
        super().__init__(message, status_code)
        self.partial = partial


class LocalSipError(SipError):
    """The local application asked the SIP layer for something illegal in its current state."""

    status_code = 500
    reason = "Server Internal Error"
