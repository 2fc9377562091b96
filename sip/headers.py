"""Header-field names and the small lexical helpers that SIP header values need.

RFC 3261 7.3: names are case-insensitive and several have compact forms; header fields whose
grammar is a comma-separated list may be split over several lines or joined on one line and mean
the same. The parser keeps one entry per list element for the headers the PBX reads as lists.
"""

from __future__ import annotations

import re
from typing import Final

# RFC 3261 7.3.3 and the IANA registry of compact forms.
COMPACT: Final[dict[str, str]] = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
    "u": "Allow-Events",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
    "n": "Identity-Info",
}

_KNOWN: Final[tuple[str, ...]] = (
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
    "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "In-Reply-To",
    "Max-Forwards", "Min-Expires", "MIME-Version", "Organization", "P-Asserted-Identity",
    "Path", "Priority", "Privacy", "Proxy-Authenticate", "Proxy-Authorization",
    "Proxy-Require", "Reason", "Record-Route", "Refer-To", "Referred-By", "Reply-To",
    "Require", "Retry-After", "Route", "RSeq", "RAck", "Server", "Session-Expires", "Subject",
    "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
    "WWW-Authenticate", "Min-SE", "Replaces", "Diversion", "Remote-Party-ID", "Flow-Timer",
    "Subscription-State",
)

#: lower-case name (long or compact) -> canonical spelling
CANONICAL: Final[dict[str, str]] = {n.lower(): n for n in _KNOWN} | {
    k: v for k, v in COMPACT.items()
}

#: Headers whose value is a comma-separated list that the PBX reads element by element
#: (RFC 3261 7.3.1). Authorization-type headers are NOT here: commas separate their params.
LIST_HEADERS: Final[frozenset[str]] = frozenset(
    {
        "via", "contact", "route", "record-route", "path", "allow", "supported", "require",
        "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
        "allow-events", "p-asserted-identity",
    }
)

#: Headers that may appear at most once in a request (RFC 3261 7.3.1 / table 2); a request
#: with two of them is malformed (RFC 4475 3.1.2.19 "multi01").
SINGLE_HEADERS: Final[frozenset[str]] = frozenset(
    {"to", "from", "call-id", "cseq", "max-forwards", "content-length", "content-type"}
)

TOKEN_CHARS: Final[frozenset[str]] = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)


#: RFC 3261 25.1 token, as a regex: a C-level scan instead of a Python loop per character.
TOKEN_RE: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_token_match = TOKEN_RE.fullmatch

# Header names as they appear on the wire repeat endlessly; remember their lookup key.
_KEY_CACHE: dict[str, str] = {}
_KEY_CACHE_MAX: Final = 4096


# A parameter value that needs no quotes: token characters plus ":" "[" "]" (host / IPv6).
_param_value_match: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+").fullmatch


def canonical(name: str) -> str:
    """The canonical spelling of a header name; unknown names are kept as written."""
    return CANONICAL.get(name.lower(), name)


def header_key(name: str) -> str | None:
    """The lower-case lookup key of a header name as written, or None if it is not a token."""
    key = _KEY_CACHE.get(name)
    if key is not None:
        return key
    if _token_match(name) is None:
        return None
    low = name.lower()
    key = CANONICAL[low].lower() if low in CANONICAL else low
    if len(_KEY_CACHE) < _KEY_CACHE_MAX:
        _KEY_CACHE[name] = key
    return key


def is_token(text: str) -> bool:
    """RFC 3261 25.1 ``token``."""
    return _token_match(text) is not None


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas inside quotes and ``<...>``.

    Empty elements are kept (as ``""``) so that the caller can reject them: RFC 4475 3.1.2.1
    ("badinv01") has ``Via: SIP/2.0/UDP 192.0.2.15;;,;,,``.
    """
    if "," not in value:
        return [value.strip()]
    out: list[str] = []
    start = 0
    quoted = False
    angle = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            angle = True
        elif c == ">":
            angle = False
        elif c == "," and not angle:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    out.append(value[start:].strip())
    return out


def parse_params(text: str, where: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` (text starts after the first ``;``) into an ordered dict.

    Names are lower-cased (RFC 3261 19.1.4 / 20: parameter names are case-insensitive);
    values keep their case and quotes are removed. Raises ValueError naming ``where`` for an
    empty parameter or a bad name (RFC 4475 3.1.2.1).
    """
    params: dict[str, str | None] = {}
    for raw in split_unquoted(text, ";"):
        name, eq, val = raw.partition("=")
        name = name.strip(" \t")
        if _token_match(name) is None:
            raise ValueError(f"{where}: bad parameter {raw.strip()!r}")
        if eq:
            v = val.strip(" \t")
            if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
                v = unquote(v)
            elif _param_value_match(v) is None:
                raise ValueError(f"{where}: bad value for parameter {name!r}")
            params[name.lower()] = v
        else:
            params[name.lower()] = None
    return params


def split_unquoted(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    if '"' not in text:
        return text.split(sep)
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        c = text[i]
        if quoted and c == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        if c == sep and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    if quoted:
        raise ValueError("unterminated quoted string")
    out.append("".join(cur))
    return out


def unquote(text: str) -> str:
    """Remove the quotes of an RFC 3261 ``quoted-string`` and resolve ``quoted-pair`` escapes."""
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    out: list[str] = []
    i = 0
    while i < len(inner):
        c = inner[i]
        if c == "\\" and i + 1 < len(inner):
            out.append(inner[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")


def quote(text: str) -> str:
    """Quote a display name or parameter value (RFC 3261 25.1 ``quoted-string``).

    CR and LF cannot appear in a quoted-string even escaped (``quoted-pair`` excludes them),
    and would end the header: they, and the other control characters, become spaces.
    """
    if not text.isprintable():
        text = _CONTROLS.sub(" ", text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_params(params: dict[str, str | None]) -> str:
    """Serialise params parsed by :func:`parse_params` (values re-quoted when not tokens)."""
    parts: list[str] = []
    for k, v in params.items():
        if v is None:
            parts.append(";" + k)
        elif _param_value_match(v) is not None:
            parts.append(f";{k}={v}")
        else:
            parts.append(f";{k}={quote(v)}")
    return "".join(parts)
