"""SIP URIs (RFC 3261 19.1) and name-addr / addr-spec values (RFC 3261 20.10, 25.1)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from .headers import format_params, is_token, parse_params, quote, unquote

# Character classes as compiled regexes: one C-level scan per field instead of a Python loop.
_host_ok: Final = re.compile(r"[A-Za-z0-9\-.]+").fullmatch
# RFC 3261 25.1: unreserved / escaped / user-unreserved, plus ":" for the password part.
_user_ok: Final = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,;?/:]+").fullmatch
_other_uri_ok: Final = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,;?/:@\[\]#]+").fullmatch
_ipv6_ok: Final = re.compile(r"[0-9A-Fa-f:.]+").fullmatch
_scheme_ok: Final = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*").fullmatch


@dataclass(slots=True)
class SipUri:
    """A ``sip:``/``sips:`` URI, or any other absolute URI kept opaque (``scheme`` + ``opaque``).

    Other schemes (``tel:``, ``http:``, ...) are syntactically fine in headers; whether they are
    acceptable is the application's decision (RFC 4475 3.3.1 "unkscm" gets 416 there).
    """

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""
    opaque: str = ""

    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    @property
    def transport(self) -> str | None:
        t = self.params.get("transport")
        return t.lower() if t else None

    def host_port(self, default: int = 5060) -> tuple[str, int]:
        """Host (brackets removed from IPv6) and port, for sending to this URI directly."""
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        return host, self.port if self.port is not None else default

    def aor(self) -> str:
        """Address of record: ``sip:user@host`` lower-cased host, no port/params (RFC 3261 10.3)."""
        if not self.is_sip:
            return f"{self.scheme}:{self.opaque}"
        user = f"{self.user}@" if self.user is not None else ""
        return f"sip:{user}{self.host.lower()}"

    def __str__(self) -> str:
        if not self.is_sip:
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        if self.params:
            out.append(format_params(self.params))
        if self.headers:
            out.append("?" + self.headers)
        return "".join(out)

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse an absolute URI. Raises ValueError with the reason for anything malformed."""
        scheme, colon, rest = text.partition(":")
        if not colon or not scheme or not rest:
            raise ValueError(f"not an absolute URI: {text!r}")
        if _scheme_ok(scheme) is None:
            raise ValueError(f"bad URI scheme in {text!r}")
        scheme = scheme.lower()
        if scheme not in ("sip", "sips"):
            if _other_uri_ok(rest) is None:
                raise ValueError(f"bad character in URI {text!r}")
            return cls(scheme=scheme, opaque=rest)
        user = password = None
        # The user part may hold '?', ';' and ',' (RFC 3261 25.1 user-unreserved) but neither
        # params nor headers may hold '@', so the last '@' ends the userinfo.
        at = rest.rfind("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            if _user_ok(userinfo) is None:
                raise ValueError(f"bad user part in {text!r}")
            user, pcolon, pw = userinfo.partition(":")
            if pcolon:
                password = pw
        headers = ""
        q = rest.find("?")
        if q >= 0:
            rest, headers = rest[:q], rest[q + 1 :]
            if _user_ok(headers) is None:
                raise ValueError(f"bad URI headers in {text!r}")
        hostport, semi, ptext = rest.partition(";")
        params = parse_params(ptext, "URI") if semi else {}
        host, port = _parse_hostport(hostport, text)
        return cls(scheme, user, password, host, port, params, headers)


def _parse_hostport(hostport: str, text: str) -> tuple[str, int | None]:
    port: int | None = None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ValueError(f"bad IPv6 reference in {text!r}")
        host = hostport[: end + 1]
        tail = hostport[end + 1 :]
        if _ipv6_ok(host[1:-1]) is None:
            raise ValueError(f"bad IPv6 address in {text!r}")
        if tail:
            if tail[0] != ":":
                raise ValueError(f"bad host in {text!r}")
            port = _parse_port(tail[1:], text)
    else:
        host, colon, ptext = hostport.partition(":")
        if colon:
            port = _parse_port(ptext, text)
        if _host_ok(host) is None:
            raise ValueError(f"bad host in {text!r}")
    return host, port


def _parse_port(text: str, where: str) -> int:
    if not text.isdigit() or len(text) > 5 or int(text) > 65535:
        raise ValueError(f"bad port in {where!r}")
    return int(text)


@dataclass(slots=True)
class Address:
    """A From/To/Contact/Route value: optional display name, URI, header parameters."""

    uri: SipUri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    wildcard: bool = False  # Contact: * (RFC 3261 10.2.2)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> Address:
        return Address(self.uri, self.display, {**self.params, "tag": tag})

    def __str__(self) -> str:
        if self.wildcard:
            return "*"
        name = f"{quote(self.display)} " if self.display is not None else ""
        return f"{name}<{self.uri}>{format_params(self.params)}"

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse ``name-addr`` or ``addr-spec`` with header params. Raises ValueError."""
        text = text.strip(" \t")
        if text == "*":
            return cls(SipUri("sip"), wildcard=True)
        display: str | None = None
        lt = _find_angle(text)
        if lt >= 0:
            disp = text[:lt].strip(" \t")
            if disp:
                if disp[0] == '"':
                    if len(disp) < 2 or disp[-1] != '"' or _unescaped_quote_inside(disp):
                        raise ValueError(f"bad quoted display name in {text!r}")
                    display = unquote(disp)
                else:
                    # RFC 3261 25.1: display-name = *(token LWS) / quoted-string
                    words = disp.split()
                    if not all(is_token(w) for w in words):
                        raise ValueError(f"display name must be quoted in {text!r}")
                    display = " ".join(words)
            gt = text.find(">", lt)
            if gt < 0:
                raise ValueError(f"missing '>' in {text!r}")
            uri_text = text[lt + 1 : gt]
            rest = text[gt + 1 :].strip(" \t")
        else:
            # addr-spec without <>: it cannot contain ';', ',' or '?' (RFC 3261 20.10) so
            # everything after the first ';' is a header parameter.
            if '"' in text:
                raise ValueError(f"unterminated quoted string in {text!r}")
            uri_text, semi, ptail = text.partition(";")
            rest = semi + ptail
            uri_text = uri_text.strip(" \t")
            if "?" in uri_text:
                raise ValueError(f"URI with headers must be enclosed in <> in {text!r}")
        if any(c in uri_text for c in " \t"):
            raise ValueError(f"whitespace inside URI {uri_text!r}")
        uri = SipUri.parse(uri_text)
        params: dict[str, str | None] = {}
        if rest:
            if rest[0] != ";":
                raise ValueError(f"unexpected text after URI in {text!r}")
            params = parse_params(rest[1:], "header")
        return cls(uri, display, params)


def _find_angle(text: str) -> int:
    """Index of the '<' that opens the URI, skipping a quoted display name."""
    quoted = False
    i = 0
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            return i
        i += 1
    if quoted:
        raise ValueError(f"unterminated quoted string in {text!r}")
    return -1


def _unescaped_quote_inside(disp: str) -> bool:
    i = 1
    while i < len(disp) - 1:
        if disp[i] == "\\":
            i += 2
            continue
        if disp[i] == '"':
            return True
        i += 1
    return i != len(disp) - 1
