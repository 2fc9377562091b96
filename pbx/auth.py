"""Digest authentication of phones (RFC 3261 22, RFC 8760), on top of :mod:`sip.digest`.

The PBX challenges REGISTER and INVITE with 401 (as a B2BUA, like Asterisk: RFC 3261 22.1 lets
a UAS do so, and some phones cannot answer 407 to an INVITE). A phone may log in with its user
id or its extension. Unknown users and wrong passwords get exactly the same answer.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sip.digest import AuthResult, DigestServer, parse_digest
from sip.message import Request

from .config import User


@dataclass(frozen=True, slots=True)
class Challenge:
    """Answer 401 with these WWW-Authenticate values."""

    headers: list[str]


class Authenticator:
    def __init__(
        self,
        realm: str,
        nonce_ttl: float,
        find_user: Callable[[str], User | None],
        secret: bytes | None = None,
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
    ) -> None:
        self._find_user = find_user
        self._secret = secret or secrets.token_bytes(32)
        self.realm = realm
        self._algorithms = algorithms
        self._digest = DigestServer(realm, self._secret, nonce_ttl, algorithms=algorithms)

    def reconfigure(self, realm: str, nonce_ttl: float, algorithms: tuple[str, ...]) -> None:
        """Apply a reloaded realm or nonce lifetime (nonces already issued stay valid if the
        realm is unchanged: the secret is kept)."""
        if (realm, nonce_ttl, algorithms) != (self.realm, self._digest.nonce_ttl,
                                               self._algorithms):
            self.realm = realm
            self._algorithms = algorithms
            self._digest = DigestServer(realm, self._secret, nonce_ttl, algorithms=algorithms)

    def check(self, request: Request, now: float) -> User | Challenge:
        """The authenticated user, or the challenge to send."""
        stale = False
        for value in request.headers.get_all("Authorization"):
            creds = parse_digest(value)
            if creds is None or creds.realm != self.realm:
                continue
            user = self._find_user(creds.username)
            result = self._digest.verify(
                request.method, creds, user.password if user else None, now
            )
            if result is AuthResult.OK and user is not None:
                return user
            stale = stale or result is AuthResult.STALE
        return Challenge(self._digest.challenge(now, stale=stale))
