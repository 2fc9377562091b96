"""HTTP Digest authentication for SIP, server and client side, with no I/O.

RFC 3261 section 22.4 borrows HTTP Digest (RFC 2617, updated by RFC 7616); RFC 8760 adds SHA-256
and SHA-512/256 to SIP. This module parses ``Authorization`` / ``WWW-Authenticate`` header
values, issues challenges, checks answers and builds answers. It works on plain strings, so it
depends on no other part of the SIP stack, and it never reads the clock: ``now`` is passed in.

Theory of operation (server):

* Nonces are stateless and unforgeable: ``b64(timestamp || random || HMAC(secret, ... realm))``.
  Any node holding the secret can check one; the timestamp gives its age.
* A correct answer on an expired nonce is :attr:`AuthResult.STALE`, so the phone retries at once
  with a fresh nonce without asking its user (RFC 7616 section 3.3, ``stale``).
* Replays are caught by remembering, per nonce, the highest ``nc`` seen (bounded memory).
* An unknown user costs the same as a wrong password and gives the same answer (no enumeration).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache, partial
from urllib.parse import unquote_to_bytes

__all__ = [
    "AuthResult",
    "DigestChallenge",
    "DigestCredentials",
    "DigestError",
    "DigestServer",
    "answer_challenge",
    "choose_challenge",
    "ha1",
    "parse_challenge",
    "parse_digest",
    "supported_algorithms",
]


class DigestError(ValueError):
    """Input a digest operation cannot work with (unsupported algorithm or qop, bad value)."""


class AuthResult(Enum):
    """Outcome of :meth:`DigestServer.verify`."""

    #: The answer is correct, the nonce is ours, fresh and not replayed.
    OK = "ok"
    #: The answer would be correct but the nonce can no longer be used (expired, replayed nc,
    #: single-use nonce reused): challenge again with ``stale=true`` (RFC 7616 section 3.3).
    STALE = "stale"
    #: Wrong password, unknown user, forged nonce or a malformed answer.
    FAILED = "failed"


# ---------------------------------------------------------------------------------------------
# Hash functions (RFC 7616 section 3.2, RFC 8760 section 2.1)


_NEW: dict[str, Callable[..., hashlib._Hash]] = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
if "sha512_256" in hashlib.algorithms_available:
    _NEW["SHA-512-256"] = partial(hashlib.new, "sha512_256")


def _hasher(new: Callable[..., hashlib._Hash]) -> Callable[[str], str]:
    # MD5 is mandated by the protocol here, not chosen for security (RFC 7616 section 3.2).
    # surrogatepass: a name holding a lone surrogate hashes (to a mismatch) instead of raising.
    return lambda data: new(
        data.encode("utf-8", "surrogatepass"), usedforsecurity=False
    ).hexdigest()


_HASHES = {label: _hasher(new) for label, new in _NEW.items()}

# Strength order for choose_challenge(): the strongest known algorithm wins (RFC 8760 2.4).
_STRENGTH = {"MD5": 0, "SHA-256": 1, "SHA-512-256": 2}


def supported_algorithms() -> tuple[str, ...]:
    """Algorithm names this module can compute, without the ``-sess`` variants."""
    return tuple(_HASHES)


def _algorithm(name: str) -> tuple[str, Callable[[str], str], bool] | None:
    """Split ``SHA-256-sess`` into (``SHA-256``, hash function, session flag); None if unknown."""
    upper = name.upper()
    sess = upper.endswith("-SESS")
    base = upper[:-5] if sess else upper
    fn = _HASHES.get(base)
    return None if fn is None else (base, fn, sess)


@lru_cache(maxsize=4096)
def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """``H(username ":" realm ":" password)``, hex (RFC 7616 section 3.4.2).

    The ``-sess`` suffix of ``algorithm`` is ignored: the session hash also needs the nonce and
    cnonce and is computed per request. Cached, because phones re-authenticate all the time.
    """
    found = _algorithm(algorithm)
    if found is None:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    return found[1](f"{username}:{realm}:{password}")


def _response(
    fn: Callable[[str], str],
    h1: str,
    nonce: str,
    nc: str | None,
    cnonce: str | None,
    qop: str | None,
    method: str,
    uri: str,
    body_hash: str,
) -> str:
    # RFC 7616 section 3.4.3 (A2 for auth-int includes H(entity-body)), section 3.4.1.
    h2 = fn(f"{method}:{uri}:{body_hash}") if qop == "auth-int" else fn(f"{method}:{uri}")
    if qop is None:
        # RFC 2069 compatibility: no qop, nc or cnonce.
        return fn(f"{h1}:{nonce}:{h2}")
    return fn(f"{h1}:{nonce}:{nc}:{cnonce}:{qop}:{h2}")


# ---------------------------------------------------------------------------------------------
# Parsing (RFC 7235 section 2.1 auth-param syntax, RFC 3261 section 25.1 LWS)

_MAX_HEADER = 16384
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SCHEME_RE = re.compile(rf"[ \t\r\n]*({_TOKEN})(?:[ \t\r\n]+|\Z)")
# One auth-param; empty list elements (",,") are skipped. The value is a quoted-string with
# quoted-pair escapes, or an unquoted run (clients send algorithm, qop, nc, even nonce bare).
_PARAM_RE = re.compile(
    rf"[ \t\r\n,]*({_TOKEN})[ \t\r\n]*=[ \t\r\n]*"
    r'(?:"((?:[^"\\]++|\\.)*+)"|([^ \t\r\n,"]++))[ \t\r\n]*(?:,|\Z)',
    re.S,
)
_ESCAPE_RE = re.compile(r"\\(.)", re.S)


def _parse_params(value: str) -> dict[str, str] | None:
    """Return the lower-cased params of a ``Digest`` header value, or None if it is not one."""
    if len(value) > _MAX_HEADER:
        return None
    m = _SCHEME_RE.match(value)
    if m is None or m.group(1).lower() != "digest":
        return None
    params: dict[str, str] = {}
    pos, end = m.end(), len(value)
    while pos < end:
        m = _PARAM_RE.match(value, pos)
        if m is None:
            if value[pos:].strip(" \t\r\n,"):
                return None
            break
        name = m.group(1).lower()
        if name in params:
            # Two values for one name: whichever one a check reads, the other could be forged.
            return None
        quoted = m.group(2)
        if quoted is None:
            params[name] = m.group(3)
        else:
            params[name] = _ESCAPE_RE.sub(r"\1", quoted) if "\\" in quoted else quoted
        pos = m.end()
    return params or None


def _ext_value(value: str) -> str | None:
    """Decode an RFC 8187 ext-value (``UTF-8''J%C3%A4s%C3%B8n``), as ``username*`` uses."""
    parts = value.split("'", 2)
    if len(parts) != 3 or parts[0].lower() not in ("utf-8", "iso-8859-1"):
        return None
    try:
        return unquote_to_bytes(parts[2]).decode(parts[0])
    except (UnicodeDecodeError, LookupError):
        return None


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() == "true"


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """The parameters of an ``Authorization`` / ``Proxy-Authorization`` Digest value.

    Values are unquoted and unescaped; ``nc`` is kept as sent because it enters the hash.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    #: RFC 7616 section 3.4.4: the username is ``H(username:realm)``.
    userhash: bool = False


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """The parameters of a ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest value."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    #: The offered qop values, lower-cased; empty for an RFC 2069 challenge.
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    userhash: bool = False


def parse_digest(value: str) -> DigestCredentials | None:
    """Parse an ``Authorization`` header value; None unless it is a usable Digest answer.

    Param names and the scheme are case-insensitive, LWS and unquoted values are tolerated.
    Another scheme, a syntax error, a repeated param or a missing mandatory param
    (username, realm, nonce, uri, response: RFC 7616 section 3.4) gives None. Never raises.
    """
    params = _parse_params(value)
    if params is None:
        return None
    username = params.get("username")
    if "username*" in params:
        if username is not None:
            return None  # RFC 7616 section 3.4.4: one or the other, never both
        username = _ext_value(params["username*"])
    realm = params.get("realm")
    nonce = params.get("nonce")
    uri = params.get("uri")
    response = params.get("response")
    if username is None or realm is None or nonce is None or uri is None or response is None:
        return None
    return DigestCredentials(
        username=username,
        realm=realm,
        nonce=nonce,
        uri=uri,
        response=response,
        algorithm=params.get("algorithm", "MD5"),
        qop=params.get("qop"),
        nc=params.get("nc"),
        cnonce=params.get("cnonce"),
        opaque=params.get("opaque"),
        userhash=_flag(params.get("userhash")),
    )


def parse_challenge(value: str) -> DigestChallenge | None:
    """Parse a ``WWW-Authenticate`` / ``Proxy-Authenticate`` value; None unless Digest with
    realm and nonce. Never raises."""
    params = _parse_params(value)
    if params is None or "realm" not in params or "nonce" not in params:
        return None
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return DigestChallenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=params.get("algorithm", "MD5"),
        qop=qop,
        opaque=params.get("opaque"),
        stale=_flag(params.get("stale")),
        userhash=_flag(params.get("userhash")),
    )


def choose_challenge(values: Iterable[str]) -> DigestChallenge | None:
    """Pick the challenge to answer among several header values: the strongest algorithm this
    module knows, with a qop it can answer; among equals, the first (the server's preference,
    RFC 8760 section 2.4). None if no value can be answered."""
    best: DigestChallenge | None = None
    best_rank = -1
    for value in values:
        challenge = parse_challenge(value)
        if challenge is None:
            continue
        found = _algorithm(challenge.algorithm)
        if found is None:
            continue
        if challenge.qop and not {"auth", "auth-int"} & set(challenge.qop):
            continue
        if found[2] and not challenge.qop:
            continue  # -sess needs a cnonce, which only exists with qop
        rank = _STRENGTH.get(found[0], 0)
        if rank > best_rank:
            best, best_rank = challenge, rank
    return best


# ---------------------------------------------------------------------------------------------
# Serialising


def _quote(value: str) -> str:
    """A quoted-string (RFC 3261 section 25.1); refuses characters that would break the header."""
    if any(c in value for c in "\r\n\0"):
        raise DigestError(f"control character in digest parameter {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def answer_challenge(
    challenge: DigestChallenge,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int,
    body: bytes = b"",
) -> str:
    """Build the ``Authorization`` value answering ``challenge`` (RFC 7616 section 3.4).

    ``qop=auth`` is used when offered, else ``auth-int`` (hashing ``body``), else the RFC 2069
    form without qop, nc and cnonce. The caller keeps ``nc`` counting up per nonce and passes a
    fresh random ``cnonce`` (e.g. ``secrets.token_hex(8)``). Raises :class:`DigestError` for an
    algorithm or qop it cannot answer.
    """
    found = _algorithm(challenge.algorithm)
    if found is None:
        raise DigestError(f"unsupported digest algorithm {challenge.algorithm!r}")
    base, fn, sess = found
    qop: str | None = None
    if challenge.qop:
        if "auth" in challenge.qop:
            qop = "auth"
        elif "auth-int" in challenge.qop:
            qop = "auth-int"
        else:
            raise DigestError(f"no supported qop in {challenge.qop!r}")
    elif sess:
        raise DigestError(f"{challenge.algorithm} needs qop (RFC 7616 section 3.4.2)")
    if not 0 < nc <= 0xFFFFFFFF:
        raise DigestError(f"nonce count {nc} out of range")
    if qop is not None and not cnonce:
        raise DigestError("cnonce must not be empty")
    nc_text = f"{nc:08x}"
    h1 = ha1(username, challenge.realm, password, base)
    if sess:
        h1 = fn(f"{h1}:{challenge.nonce}:{cnonce}")
    body_hash = _NEW[base](body, usedforsecurity=False).hexdigest() if qop == "auth-int" else ""
    response = _response(fn, h1, challenge.nonce, nc_text, cnonce, qop, method, uri, body_hash)
    shown_user = fn(f"{username}:{challenge.realm}") if challenge.userhash else username
    parts = [
        f"Digest username={_quote(shown_user)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
        f'response="{response}"',
        f"algorithm={challenge.algorithm}",
    ]
    if qop is not None:
        parts.append(f"cnonce={_quote(cnonce)}")
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    if qop is not None:
        parts.append(f"qop={qop}")
        parts.append(f"nc={nc_text}")
    if challenge.userhash:
        parts.append("userhash=true")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Server

_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{48}")
_NONCE_HEAD = 20  # 8-byte timestamp + 12 random bytes
_NONCE_MAC = 16  # truncated HMAC-SHA256: 128 bits is far beyond guessing over a network
_NC_RE = re.compile(r"[0-9A-Fa-f]{1,8}")
# Stored as the "highest nc" of a nonce answered without qop, so any later use is refused.
_SINGLE_USE = 1 << 32


class DigestServer:
    """Challenges and checks Digest answers for one realm.

    ``secret`` keys the nonce HMAC (at least 16 bytes; share it between nodes that should accept
    each other's nonces). Pass wall-clock time as ``now`` if nonces must survive a restart.
    ``max_nonces`` bounds the replay table; ``algorithms`` is the offer, preferred first.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_ttl: float = 300.0,
        *,
        max_nonces: int = 16384,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
    ) -> None:
        if not realm or any(c in realm for c in "\r\n\0"):
            raise DigestError(f"invalid realm {realm!r}")
        if len(secret) < 16:
            raise DigestError("the nonce secret must be at least 16 bytes")
        if not nonce_ttl > 0:
            raise DigestError(f"nonce_ttl must be positive, got {nonce_ttl}")
        if max_nonces < 1:
            raise DigestError(f"max_nonces must be at least 1, got {max_nonces}")
        if not algorithms:
            raise DigestError("at least one algorithm must be offered")
        for name in algorithms:
            found = _algorithm(name)
            if found is None or found[2]:
                # -sess is not offered: the server would have to remember each cnonce.
                raise DigestError(f"cannot offer digest algorithm {name!r}")
        self.realm = realm
        self.nonce_ttl = float(nonce_ttl)
        self._secret = bytes(secret)
        self._realm_bytes = realm.encode("utf-8")
        self._max_nonces = max_nonces
        self._algorithms = tuple(algorithms)
        self._opaque = hmac.digest(self._secret, b"opaque:" + self._realm_bytes, "sha256")[
            :12
        ].hex()
        # Unknown users are checked against this password so they cost the same as known ones.
        self._dummy_password = secrets.token_hex(16)
        # nonce -> (issue timestamp, highest nc seen), oldest first use first.
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()
        # Nonces issued at or before this time may have been forgotten by eviction: a nonce not
        # in the table and this old is refused as STALE rather than trusted as unused.
        self._forgotten_before = -math.inf

    @property
    def opaque(self) -> str:
        """The ``opaque`` value sent with every challenge."""
        return self._opaque

    def _make_nonce(self, now: float) -> str:
        head = struct.pack(">d", now) + secrets.token_bytes(_NONCE_HEAD - 8)
        mac = hmac.digest(self._secret, head + self._realm_bytes, "sha256")[:_NONCE_MAC]
        return base64.urlsafe_b64encode(head + mac).decode("ascii")

    def _nonce_time(self, nonce: str) -> float | None:
        """The issue time of one of our nonces; None for anything else."""
        # 48 base64 characters hold exactly 36 bytes with no slack bits, so each nonce has a
        # single spelling and the replay table cannot be dodged by re-encoding it.
        if len(nonce) != 48 or _NONCE_RE.fullmatch(nonce) is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce)
        except (binascii.Error, ValueError):
            return None
        head = raw[:_NONCE_HEAD]
        mac = hmac.digest(self._secret, head + self._realm_bytes, "sha256")[:_NONCE_MAC]
        if not hmac.compare_digest(mac, raw[_NONCE_HEAD:]):
            return None
        (issued,) = struct.unpack(">d", head[:8])
        return issued if math.isfinite(issued) else None

    def challenge(self, now: float, stale: bool = False) -> list[str]:
        """``WWW-Authenticate`` values, one per algorithm, preferred (SHA-256) first.

        RFC 8760 section 2.4: the server lists its preferred algorithm first; all share one fresh
        nonce. ``stale=True`` tells the phone to retry without prompting its user.
        """
        nonce = self._make_nonce(now)
        tail = ", stale=true" if stale else ""
        realm = _quote(self.realm)
        return [
            f'Digest realm={realm}, nonce="{nonce}", opaque="{self._opaque}", '
            f'algorithm={name}, qop="auth"{tail}'
            for name in self._algorithms
        ]

    def verify(
        self, method: str, creds: DigestCredentials, password: str | None, now: float
    ) -> AuthResult:
        """Check a Digest answer to a request with ``method``.

        ``password`` is None for an unknown user: the same work is done and the result is
        FAILED, as for a wrong password. The caller may also compare ``creds.uri`` with the
        Request-URI (RFC 3261 section 22.4 leaves it to the server).
        """
        found = _algorithm(creds.algorithm)
        if found is None:
            return AuthResult.FAILED
        base, fn, sess = found
        qop = creds.qop
        nc_value = 0
        if qop is not None:
            qop = qop.lower()
            # Only "auth" is offered; auth-int would need the body and was never asked for.
            if qop != "auth" or not creds.cnonce or creds.nc is None:
                return AuthResult.FAILED
            if _NC_RE.fullmatch(creds.nc) is None:
                return AuthResult.FAILED
            nc_value = int(creds.nc, 16)
            if nc_value == 0:
                return AuthResult.FAILED
        elif sess:
            return AuthResult.FAILED  # -sess hashes the cnonce, which only exists with qop
        if (
            creds.realm != self.realm
            or not creds.uri
            or creds.userhash  # never offered, and the server cannot invert the hash
            or (creds.opaque is not None and creds.opaque != self._opaque)
            or not creds.response.isascii()
        ):
            return AuthResult.FAILED
        issued = self._nonce_time(creds.nonce)
        if issued is None:
            return AuthResult.FAILED

        secret = password if password is not None else self._dummy_password
        h1 = ha1(creds.username, self.realm, secret, base)
        if sess:
            h1 = fn(f"{h1}:{creds.nonce}:{creds.cnonce}")
        expected = _response(
            fn, h1, creds.nonce, creds.nc, creds.cnonce, qop, method, creds.uri, ""
        )
        matches = hmac.compare_digest(expected, creds.response.lower())
        if not matches or password is None:
            return AuthResult.FAILED

        # RFC 7616 section 3.3: stale only once the answer itself is known to be right.
        # A nonce from the future (clock stepped, or another node's clock) is also just stale.
        if abs(now - issued) > self.nonce_ttl:
            return AuthResult.STALE
        return self._record(creds.nonce, issued, nc_value if qop else None, now)

    def _record(self, nonce: str, issued: float, nc: int | None, now: float) -> AuthResult:
        """Replay check (RFC 7616 section 3.3 / RFC 2617 section 3.2.3).

        A repeated or lower nc answers STALE rather than FAILED: the password was right, so
        an honest phone (parallel requests that crossed, a restarted stack) re-authenticates
        with a fresh nonce at once, as Asterisk and Kamailio make it do. A replayer gains
        nothing from STALE. Without qop there is no nc, so the nonce is single-use.
        """
        seen = self._seen
        entry = seen.get(nonce)
        if entry is None:
            if issued <= self._forgotten_before:
                return AuthResult.STALE
            seen[nonce] = (issued, _SINGLE_USE if nc is None else nc)
            self._trim(now)
            return AuthResult.OK
        if nc is None or nc <= entry[1]:
            return AuthResult.STALE
        seen[nonce] = (issued, nc)
        return AuthResult.OK

    def _trim(self, now: float) -> None:
        seen = self._seen
        ttl = self.nonce_ttl
        while seen:
            nonce, (issued, _) = next(iter(seen.items()))
            expired = abs(now - issued) > ttl
            if not expired and len(seen) <= self._max_nonces:
                return
            del seen[nonce]
            if not expired:
                # Forgotten while still valid: refuse its (and older) reuse from now on.
                self._forgotten_before = max(self._forgotten_before, issued)
