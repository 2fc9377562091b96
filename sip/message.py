"""SIP messages: the model, the parser and the serialiser (RFC 3261 7, 8.2.6, 20).

Parsing is two-staged so that a broken request still gets an answer: the first stage reads the
start line and the raw header fields (unfolding continuation lines, expanding compact names,
splitting list headers); the second validates what every request and response must carry
(RFC 3261 8.1.1) and parses those headers once. A failure in the second stage raises
:class:`ParseError` with the partial message attached, from which an error response is built.

Header values are stored as strings in wire order; structured views (``via``, ``cseq``, ``from_``,
``to``, ``contacts``) are parsed on first use and cached. Code that changes a structured view must
write it back with :meth:`Message.set_via` or :class:`Headers` methods.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from .errors import ParseError
from .headers import (
    CANONICAL,
    LIST_HEADERS,
    SINGLE_HEADERS,
    canonical,
    header_key,
    is_token,
    split_list,
)
from .uri import Address, SipUri
from .via import Via

MAX_CSEQ: Final = 2**32 - 1  # RFC 3261 8.1.1.5: "MUST be expressible as a 32-bit unsigned integer"
REASONS: Final[dict[int, str]] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 301: "Moved Permanently",
    302: "Moved Temporarily", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


@dataclass(frozen=True, slots=True)
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def _key(name: str) -> str:
    """Lookup key of a header name given by code (cached after the first use)."""
    return header_key(name) or canonical(name).lower()


class Headers:
    """Ordered, case-insensitive header fields; one entry per value of a list header."""

    __slots__ = ("_items", "_spelling")

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        #: (lower-case canonical name, value); the spelling for output comes from canonical()
        self._items: list[tuple[str, str]] = items if items is not None else []
        #: spelling of header names unknown to CANONICAL, as first seen (kept for output)
        self._spelling: dict[str, str] = {}

    def name_of(self, key: str) -> str:
        """Output spelling of the lower-case ``key``."""
        return CANONICAL.get(key) or self._spelling.get(key, key)

    def get(self, name: str, default: str | None = None) -> str | None:
        key = _key(name)
        for k, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        key = _key(name)
        return [v for k, v in self._items if k == key]

    def count(self, name: str) -> int:
        key = _key(name)
        return sum(1 for k, _ in self._items if k == key)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def add(self, name: str, value: str) -> None:
        key = _key(name)
        if key not in CANONICAL:
            self._spelling.setdefault(key, name)
        self._items.append((key, value))

    def add_first(self, name: str, value: str) -> None:
        key = _key(name)
        if key not in CANONICAL:
            self._spelling.setdefault(key, name)
        self._items.insert(0, (key, value))

    def set(self, name: str, value: str) -> None:
        """Replace all values of ``name`` with one value (at the first one's position)."""
        key = _key(name)
        for i, (k, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (key, value)
                self._items[i + 1 :] = [(a, b) for a, b in self._items[i + 1 :] if a != key]
                return
        self._items.append((key, value))

    def remove(self, name: str) -> None:
        key = _key(name)
        self._items = [(k, v) for k, v in self._items if k != key]

    def replace_first(self, name: str, value: str) -> None:
        key = _key(name)
        for i, (k, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (key, value)
                return
        raise KeyError(name)

    def remove_first(self, name: str) -> None:
        key = _key(name)
        for i, (k, _) in enumerate(self._items):
            if k == key:
                del self._items[i]
                return

    def items(self) -> Iterator[tuple[str, str]]:
        for k, v in self._items:
            yield self.name_of(k), v

    def copy(self) -> Headers:
        h = Headers(list(self._items))
        h._spelling = dict(self._spelling)
        return h

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self.items())!r})"


class Message:
    """Common part of requests and responses."""

    __slots__ = ("_contacts", "_cseq", "_from", "_to", "_vias", "body", "headers")

    def __init__(self, headers: Headers | None = None, body: bytes = b"") -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self._vias: list[Via] | None = None
        self._cseq: CSeq | None = None
        self._from: Address | None = None
        self._to: Address | None = None
        self._contacts: list[Address] | None = None

    # -- structured views ------------------------------------------------------------------
    @property
    def call_id(self) -> str:
        v = self.headers.get("Call-ID")
        if v is None:
            raise ParseError("missing Call-ID")
        return v

    @property
    def cseq(self) -> CSeq:
        if self._cseq is None:
            self._cseq = _parse_cseq(self.headers.get("CSeq"))
        return self._cseq

    @property
    def vias(self) -> list[Via]:
        if self._vias is None:
            try:
                self._vias = [Via.parse(v) for v in self.headers.get_all("Via")]
            except ValueError as e:
                raise ParseError(str(e)) from None
        return self._vias

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise ParseError("missing Via")
        return vias[0]

    def set_top_via(self, via: Via) -> None:
        """Replace the top Via (e.g. adding received/rport, RFC 3581 4)."""
        self.headers.replace_first("Via", str(via))
        if self._vias is not None:
            self._vias[0] = via

    def add_via(self, via: Via) -> None:
        self.headers.add_first("Via", str(via))
        if self._vias is not None:
            self._vias.insert(0, via)

    def pop_via(self) -> None:
        self.headers.remove_first("Via")
        if self._vias is not None and self._vias:
            self._vias.pop(0)

    @property
    def from_(self) -> Address:
        if self._from is None:
            self._from = _parse_address(self.headers.get("From"), "From")
        return self._from

    @property
    def to(self) -> Address:
        if self._to is None:
            self._to = _parse_address(self.headers.get("To"), "To")
        return self._to

    @property
    def from_tag(self) -> str | None:
        """The From tag, read without parsing the whole address when not parsed yet."""
        if self._from is not None:
            return self._from.tag
        return _tag_of(self.headers.get("From"))

    @property
    def to_tag(self) -> str | None:
        """The To tag, read without parsing the whole address when not parsed yet."""
        if self._to is not None:
            return self._to.tag
        return _tag_of(self.headers.get("To"))

    def set_to(self, addr: Address) -> None:
        self.headers.set("To", str(addr))
        self._to = addr

    def set_from(self, addr: Address) -> None:
        self.headers.set("From", str(addr))
        self._from = addr

    @property
    def contacts(self) -> list[Address]:
        if self._contacts is None:
            try:
                self._contacts = [Address.parse(v) for v in self.headers.get_all("Contact")]
            except ValueError as e:
                raise ParseError(f"Contact: {e}") from None
        return self._contacts

    @property
    def content_type(self) -> str | None:
        v = self.headers.get("Content-Type")
        return v.split(";", 1)[0].strip().lower() if v else None

    def _head(self) -> str:
        raise NotImplementedError  # pragma: no cover - overridden by Request and Response

    def __bytes__(self) -> bytes:
        # Content-Length is always written from the body so it can never disagree with it.
        lines = [self._head()]
        name_of = self.headers.name_of
        for k, v in self.headers._items:
            if k != "content-length":
                lines.append(f"{name_of(k)}: {v}")
        lines.append(f"Content-Length: {len(self.body)}\r\n\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body


class Request(Message):
    __slots__ = ("_uri", "method", "raw_uri")

    def __init__(
        self,
        method: str,
        uri: SipUri | str,
        headers: Headers | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        if isinstance(uri, SipUri):
            self._uri: SipUri | None = uri
            self.raw_uri = str(uri)
        else:
            self._uri = None
            self.raw_uri = uri

    @property
    def uri(self) -> SipUri:
        if self._uri is None:
            try:
                self._uri = SipUri.parse(self.raw_uri)
            except ValueError as e:
                raise ParseError(f"Request-URI: {e}") from None
        return self._uri

    @uri.setter
    def uri(self, value: SipUri) -> None:
        self._uri = value
        self.raw_uri = str(value)

    def _head(self) -> str:
        return f"{self.method} {self.raw_uri} SIP/2.0"

    def response(
        self,
        status: int,
        reason: str | None = None,
        to_tag: str | None = None,
        *,
        copy_record_route: bool = False,
    ) -> Response:
        """Build a response to this request (RFC 3261 8.2.6.2).

        Via, From, Call-ID and CSeq are copied; To is copied and gets ``to_tag`` if it has no
        tag yet. Record-Route is copied only for dialog-creating responses (RFC 3261 12.1.1).
        """
        items: list[tuple[str, str]] = []
        for k, v in self.headers._items:
            if k in ("via", "from", "call-id", "cseq") or (
                copy_record_route and k == "record-route"
            ):
                items.append((k, v))
            elif k == "to":
                if to_tag is not None and not (
                    self._to.tag is not None if self._to is not None else _has_tag(v)
                ):
                    v = f"{v};tag={to_tag}"
                items.append((k, v))
        resp = Response(status, reason or REASONS.get(status, "Unknown"), Headers(items))
        resp._vias = self._vias
        resp._cseq = self._cseq
        resp._from = self._from
        return resp


class Response(Message):
    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason if reason is not None else REASONS.get(status, "Unknown")

    def _head(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"


# -- parsing ---------------------------------------------------------------------------------


def cancel_for(invite: Request, reason: str | None = None) -> Request:
    """The CANCEL of a client INVITE (RFC 3261 9.1): same Request-URI, Call-ID, To, From and
    CSeq number with method CANCEL, and only the INVITE's top Via (so it matches the INVITE's
    transaction downstream); ``reason`` goes in a Reason header (RFC 3326)."""
    h = Headers()
    h.add("Via", invite.headers.get("Via") or "")
    h.add("Max-Forwards", "70")
    for name in ("From", "To", "Call-ID"):
        h.add(name, invite.headers.get(name) or "")
    h.add("CSeq", str(CSeq(invite.cseq.seq, "CANCEL")))
    if reason is not None:
        h.add("Reason", reason)
    return Request("CANCEL", invite.raw_uri, h)


def parse(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one complete SIP message.

    ``stream`` says the bytes were framed by Content-Length on a stream transport (the framer
    already cut the body); on datagrams the body is cut to Content-Length and a declared length
    larger than the datagram is an error (RFC 3261 18.3, RFC 4475 3.1.2.7).
    Raises :class:`ParseError`; its ``partial`` is set when the start line could be read.
    """
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head_b, body = data[:end], data[end + 4 :]
    else:
        end = data.find(b"\n\n")
        if end >= 0:
            head_b, body = data[:end], data[end + 2 :]
        else:
            head_b, body = data.rstrip(b"\r\n"), b""
    head = head_b.decode("utf-8", "surrogateescape")
    lines = head.split("\r\n") if "\r\n" in head else head.split("\n")
    # RFC 3261 7.5: implementations should ignore CRLFs before the start line.
    while lines and not lines[0]:
        lines.pop(0)
    if not lines:
        raise ParseError("empty message")
    msg, version_error = _start_line(lines[0])
    items = msg.headers._items
    spelling = msg.headers._spelling
    append = items.append
    for line in lines[1:]:
        if not line:
            continue
        c = line[0]
        if c == " " or c == "\t":
            # RFC 3261 7.3.1: a line starting with whitespace continues the previous value.
            if not items:
                raise ParseError("continuation line before any header", partial=msg)
            k, v = items[-1]
            items[-1] = (k, f"{v} {line.strip()}" if v else line.strip())
            continue
        name, colon, value = line.partition(":")
        key = header_key(name) if colon else None
        if key is None:
            name = name.rstrip(" \t")
            key = header_key(name) if colon else None
            if key is None:
                raise ParseError(f"malformed header line {line[:40]!r}", partial=msg)
        if key not in CANONICAL:
            spelling.setdefault(key, name)
        append((key, value.strip(" \t")))
    # Split list headers (RFC 3261 7.3.1) after unfolding, so folded lists split correctly.
    if any(k in LIST_HEADERS and "," in v for k, v in items):
        split: list[tuple[str, str]] = []
        for k, v in items:
            if k in LIST_HEADERS and "," in v:
                split.extend((k, part) for part in split_list(v))
            else:
                split.append((k, v))
        msg.headers._items[:] = split
    if version_error is not None:
        # RFC 3261 8.2.6 / RFC 4475 3.1.2.16 "badvers": answer 505, which needs the headers.
        version_error.partial = msg
        raise version_error
    _frame_body(msg, body, stream)
    if isinstance(msg, Request):
        _validate_request(msg)
    else:
        _validate_response(msg)
    return msg


def _start_line(line: str) -> tuple[Request | Response, ParseError | None]:
    if line.startswith("SIP/"):
        version, _, rest = line.partition(" ")
        code_s, _, reason = rest.partition(" ")
        if version.upper() != "SIP/2.0":
            raise ParseError(f"unsupported version {version!r}", 505)
        if len(code_s) != 3 or not code_s.isdigit() or not 100 <= int(code_s) <= 699:
            raise ParseError(f"bad status code {code_s[:20]!r}")
        return Response(int(code_s), reason), None
    parts = line.split(" ")
    # RFC 3261 7.1: Method SP Request-URI SP SIP-Version, single spaces (RFC 4475 3.1.2.{4,5,6}).
    if len(parts) != 3 or not all(parts):
        raise ParseError(f"malformed request line {line[:60]!r}")
    method, uri, version = parts
    if not is_token(method):
        raise ParseError(f"bad method {method[:20]!r}")
    if version.upper() != "SIP/2.0":
        return Request(method, uri), ParseError(f"unsupported version {version!r}", 505)
    return Request(method, uri), None


def _frame_body(msg: Message, body: bytes, stream: bool) -> None:
    cl_values = msg.headers.get_all("Content-Length")
    if not cl_values:
        msg.body = body
        return
    if len(cl_values) > 1:
        raise ParseError("multiple Content-Length values", partial=msg)
    cl = cl_values[0]
    if not cl.isdigit() or len(cl) > 9:
        raise ParseError(f"bad Content-Length {cl[:20]!r}", partial=msg)
    n = int(cl)
    if n > len(body):
        raise ParseError("Content-Length larger than the message", partial=msg)
    # RFC 3261 18.3: octets past Content-Length in a datagram are discarded (RFC 4475 dblreq).
    msg.body = body[:n]


_REQUIRED: Final = ("call-id", "cseq", "from", "to", "via")


def _validate_common(msg: Message) -> None:
    seen: set[str] = set()
    add = seen.add
    for k, _ in msg.headers._items:
        if k in SINGLE_HEADERS and k in seen:
            raise ParseError(f"more than one {canonical(k)} header", partial=msg)
        add(k)
    for required in _REQUIRED:
        if required not in seen:
            raise ParseError(f"missing {canonical(required)} header", partial=msg)
    if not msg.call_id:
        raise ParseError("empty Call-ID", partial=msg)
    # CSeq and the top Via are needed to match transactions, so they are checked here. From,
    # To and the Request-URI are parsed when first used: a request whose From cannot be read
    # is still answered (400) by whoever reads it, and most messages never need all three.
    _ = msg.cseq, msg.top_via


def _validate_request(req: Request) -> None:
    try:
        _validate_common(req)
        if req.cseq.method != req.method:
            raise ParseError("CSeq method does not match the request method")
        mf = req.headers.get("Max-Forwards")
        if mf is not None and (not mf.isdigit() or int(mf) > 255):
            raise ParseError(f"bad Max-Forwards {mf[:20]!r}")
    except ParseError as e:
        e.partial = req
        raise


def _validate_response(resp: Response) -> None:
    try:
        _validate_common(resp)
    except ParseError as e:
        e.partial = resp
        raise


_TAG_PARAM: Final = re.compile(r";[ \t]*tag[ \t]*=", re.IGNORECASE)


_TAG_VALUE: Final = re.compile(r";[ \t]*tag[ \t]*=[ \t]*([^; \t,]+)", re.IGNORECASE)


def _tag_of(value: str | None) -> str | None:
    if value is None:
        return None
    gt = value.rfind(">")
    m = _TAG_VALUE.search(value, gt + 1 if gt >= 0 else 0)
    return m.group(1) if m is not None else None


def _has_tag(value: str) -> bool:
    """Whether a To/From value carries a tag, without parsing it: the header params start after
    the '>' of a name-addr, or at the first ';' of a bare addr-spec (RFC 3261 20.10)."""
    gt = value.rfind(">")
    return _TAG_PARAM.search(value, gt + 1 if gt >= 0 else 0) is not None


def _parse_cseq(value: str | None) -> CSeq:
    if value is None:
        raise ParseError("missing CSeq")
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or not is_token(parts[1]):
        raise ParseError(f"bad CSeq {value[:40]!r}")
    seq = int(parts[0]) if len(parts[0]) <= 10 else MAX_CSEQ + 1
    if seq > MAX_CSEQ:
        raise ParseError("CSeq number larger than 2**32-1")
    return CSeq(seq, parts[1])


def _parse_address(value: str | None, name: str) -> Address:
    if value is None:
        raise ParseError(f"missing {name}")
    try:
        return Address.parse(value)
    except ValueError as e:
        raise ParseError(f"{name}: {e}") from None
