"""Registration of the PBX with its SIP providers (trunks with ``register: true``).

For every such trunk the PBX keeps one registration (RFC 3261 10.2): a REGISTER to
``sip:<host>:<port>`` binding ``<sip:username@from_domain>`` to a Contact of the PBX whose user
part is the trunk's username, so the provider's calls for that account come back here. The
Call-ID stays the same across refreshes and the CSeq goes up (RFC 3261 10.2.4).

Theory of operation
-------------------
Each trunk is a small state machine (:class:`_Registration`): ``registering`` while a REGISTER
is out, ``registered`` after a 2xx, ``failed`` after a refusal or no answer, ``unregistered``
once removed. A digest challenge (401/407) is answered once per attempt with the trunk's
credentials; another challenge after that answer (unless it only says the nonce was stale,
RFC 7616 3.3) or a 403 means the credentials are wrong, and the attempt fails instead of
looping. Failures back off exponentially with jitter (30 s doubling to 15 min), so a provider
that is down or refuses the password sees a REGISTER every few minutes, not a storm. A 2xx
is refreshed at about 85 % of the granted lifetime, at least 30 s before it runs out.

Time is the event loop's clock (``app.now()``); the one timer of the whole set is armed with
``call_at`` on the loop (or on any object with that method, such as a virtual clock in tests).
Host names are resolved with ``loop.getaddrinfo`` in a task at every attempt, so a provider
that moves is followed and the loop never blocks on DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from sip.dialog import new_call_id, new_tag
from sip.digest import DigestError, answer_challenge, choose_challenge
from sip.errors import LocalSipError, ParseError
from sip.message import Headers, Request, Response
from sip.transaction import Peer
from sip.uri import Address, SipUri

if TYPE_CHECKING:
    from .config_routing import Trunk
    from .sipapp import ClientOwner

__all__ = ["BACKOFF_MAX", "BACKOFF_MIN", "TrunkRegistrations", "TrunkState", "TrunkStatus"]

logger = logging.getLogger(__name__)

TrunkState = Literal["registering", "registered", "failed", "unregistered"]

BACKOFF_MIN = 30.0
"""Seconds before the first retry after a failure; doubles with each failure in a row."""
BACKOFF_MAX = 900.0
"""Longest wait between attempts (15 minutes)."""
_JITTER = 0.2  # waits are drawn from [80 %, 100 %] of the nominal one: trunks do not align
_REFRESH_SHARE = 0.85
_REFRESH_MARGIN = 30.0
_RETRY_AFTER_MAX = 3600.0  # a provider's Retry-After is honoured up to an hour
_NO_ANSWER = 408  # RFC 3261 8.1.3.1: a timeout or transport error counts as 408


class _Handle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """What arms the timer: the event loop, or a virtual clock in tests."""

    def call_at(self, when: float, callback: Callable[[], None], /) -> _Handle: ...


class _Layer(Protocol):
    def send_request(self, req: Request, peer: Peer, now: float) -> str: ...


class TrunkApp(Protocol):
    """The part of :class:`pbx.sipapp.SipApp` that registrations use."""

    own_requests: dict[str, ClientOwner]
    user_agent: str

    @property
    def layer(self) -> _Layer: ...
    def now(self) -> float: ...
    def flush(self) -> None: ...
    def add_via(self, req: Request, peer: Peer) -> None: ...
    def contact(self, peer: Peer) -> Address: ...


Resolver = Callable[[str, int, str], Awaitable[str]]
"""``(host, port, transport) -> IP address``; raises OSError when the name does not resolve."""


@dataclass(frozen=True, slots=True)
class TrunkStatus:
    """Where one trunk's registration stands; times are on the event loop's clock."""

    name: str
    state: TrunkState
    last_status: int | None
    """Status code of the last final answer (408 when none came), None before any."""
    last_reason: str
    expires_at: float | None
    """When the binding granted by the provider runs out (None: not registered)."""
    next_attempt_at: float | None
    """When the next REGISTER (refresh or retry) goes out (None: none planned)."""
    failures: int
    """Failed attempts in a row."""


@dataclass(eq=False)
class _Registration:
    trunk: Trunk
    call_id: str
    from_tag: str = field(default_factory=new_tag)
    cseq: int = 0
    state: TrunkState = "registering"
    expires: int = 0  # what we ask for: trunk.expires, raised by a 423's Min-Expires
    key: str | None = None  # the REGISTER in flight
    request: Request | None = None
    peer: Peer | None = None
    answered: int = 0  # challenges answered in this attempt
    resolving: bool = False
    removing: bool = False  # the next REGISTER unbinds (Expires: 0) and ends the entry
    unbinding: bool = False  # the REGISTER in flight is that unbinding one
    again: bool = False  # start a new attempt once the one in flight ends (RFC 3261 10.2)
    last_status: int | None = None
    last_reason: str = ""
    expires_at: float | None = None
    next_at: float | None = None
    failures: int = 0
    generation: int = 0
    logged: tuple[str, int | None] | None = None

    def status(self) -> TrunkStatus:
        return TrunkStatus(self.trunk.name, self.state, self.last_status, self.last_reason,
                           self.expires_at, self.next_at, self.failures)


def _target(trunk: Trunk) -> tuple[object, ...]:
    """What makes two trunk entries the same registration (same AoR at the same registrar)."""
    return (trunk.host, trunk.port, trunk.transport, trunk.username, trunk.from_domain)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _int_or_none(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() and len(text) <= 10 else None


async def _getaddrinfo(host: str, port: int, transport: str) -> str:
    loop = asyncio.get_running_loop()
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    found = await loop.getaddrinfo(host, port, type=kind)
    if not found:
        raise OSError(f"no address for {host}")
    # The SIP sockets usually listen on IPv4: take an IPv4 address when there is one.
    found.sort(key=lambda info: info[0] != socket.AF_INET)
    return str(found[0][4][0])


class TrunkRegistrations:
    """The PBX's registrations with its providers; see the module docstring.

    ``app`` is the :class:`~pbx.sipapp.SipApp`; ``scheduler`` defaults to the running loop,
    ``resolve`` to ``loop.getaddrinfo`` and ``rng`` (jitter) to a fresh ``random.Random``.
    """

    def __init__(
        self,
        app: TrunkApp,
        *,
        scheduler: Scheduler | None = None,
        resolve: Resolver | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._app = app
        self._scheduler: Scheduler = scheduler or asyncio.get_running_loop()
        self._resolve = resolve or _getaddrinfo
        self._rng = rng or random.Random()
        self._regs: dict[str, _Registration] = {}
        #: Unbinding REGISTERs of removed or moved trunks, until their final answer.
        self._leaving: list[_Registration] = []
        self._by_key: dict[str, _Registration] = {}
        self._timer: _Handle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._left = asyncio.Event()

    # -- the public face -----------------------------------------------------------------------
    def apply(self, trunks: tuple[Trunk, ...]) -> None:
        """Take the configured trunks: register new ones with ``register: true``, re-register
        changed ones, unregister (Expires: 0) those removed or no longer registering."""
        now = self._app.now()
        wanted = {t.name: t for t in trunks if t.registration}
        for name in list(self._regs):
            reg = self._regs[name]
            new = wanted.get(name)
            if new is not None and _target(new) == _target(reg.trunk):
                if new != reg.trunk:  # password or expires changed: same binding, register now
                    reg.trunk = new
                    reg.expires = new.expires
                    reg.failures = 0
                    self._start(reg, now)
                continue
            del self._regs[name]
            self._leave(reg, now)
        for name, trunk in wanted.items():
            if name not in self._regs:
                reg = _Registration(trunk, new_call_id(trunk.from_domain or trunk.host),
                                    expires=trunk.expires)
                self._regs[name] = reg
                self._start(reg, now)
        self._regs = {name: self._regs[name] for name in wanted}  # config order for status()
        self._arm()
        self._app.flush()

    def unregister_all(self) -> None:
        """Unbind every registration (Expires: 0) and stop refreshing (shutdown)."""
        self.apply(())

    async def stop(self, timeout: float = 2.0) -> None:
        """Unregister every trunk and wait, at most ``timeout`` seconds, for the answers."""
        self.unregister_all()
        if self._leaving:
            self._left.clear()
            try:
                await asyncio.wait_for(self._left.wait(), timeout)
            except TimeoutError:
                logger.info("%d trunk unregistrations unanswered at shutdown",
                            len(self._leaving))
        for task in list(self._tasks):
            task.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None

    def status(self) -> list[TrunkStatus]:
        """The registration of every trunk with ``register: true``, in config order, then
        those being unbound after a removal (state ``unregistered``) until that ends."""
        return [reg.status() for reg in (*self._regs.values(), *self._leaving)]

    # -- answers (the ClientOwner protocol of SipApp.own_requests) -----------------------------
    def on_response(self, response: Response, key: str) -> None:
        """A response to one of our REGISTERs."""
        reg = self._finished(key) if response.status >= 200 else None
        if reg is None:
            return
        now = self._app.now()
        status = response.status
        if reg.removing and not reg.unbinding:
            # Removed while a REGISTER was out: whatever it did, now unbind (RFC 3261 10.2.2).
            self._start(reg, now)
        elif status in (401, 407) and self._answer(reg, response, now):
            pass
        elif 200 <= status < 300:
            self._registered(reg, response, now)
        elif status == 423 and self._raise_expires(reg, response, now):
            pass
        else:
            self._failed(reg, now, status, response.reason, response)
        self._arm()
        self._app.flush()

    def on_failure(self, key: str) -> None:
        """No answer (RFC 3261 17.1.2.2 Timer F) or the transport failed (RFC 3261 8.1.3.1)."""
        reg = self._finished(key)
        if reg is None:
            return
        now = self._app.now()
        if reg.removing and not reg.unbinding:
            self._start(reg, now)
        else:
            self._failed(reg, now, _NO_ANSWER, "no answer")
        self._arm()
        self._app.flush()

    def _finished(self, key: str) -> _Registration | None:
        """The registration whose REGISTER ``key`` ended; None for one no longer current."""
        self._app.own_requests.pop(key, None)
        reg = self._by_key.pop(key, None)
        if reg is None or reg.key != key:
            return None
        reg.key = None
        return reg

    # -- attempts ------------------------------------------------------------------------------
    def _start(self, reg: _Registration, now: float) -> None:
        """A new attempt now; after the one in flight if there is one (RFC 3261 10.2)."""
        if reg.key is not None or reg.resolving:
            reg.again = True
            return
        reg.again = False
        reg.answered = 0
        reg.next_at = None
        if not reg.removing and reg.state != "registered":
            # A refresh keeps "registered": the binding holds until expires_at.
            reg.state = "registering"
        trunk = reg.trunk
        try:
            address = str(ipaddress.ip_address(trunk.host))
        except ValueError:
            reg.resolving = True
            reg.generation += 1
            task = asyncio.get_running_loop().create_task(self._resolve_then_send(reg,
                                                                                 reg.generation))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self._send_new(reg, Peer(trunk.transport, (address, trunk.port)), now)

    async def _resolve_then_send(self, reg: _Registration, generation: int) -> None:
        trunk = reg.trunk
        try:
            address = await self._resolve(trunk.host, trunk.port, trunk.transport)
            problem = None
        except (OSError, UnicodeError) as e:
            address, problem = "", f"cannot resolve {trunk.host}: {e}"
        if generation != reg.generation:
            return
        reg.resolving = False
        now = self._app.now()
        if problem is not None:
            self._failed(reg, now, None, problem)
        else:
            self._send_new(reg, Peer(trunk.transport, (address, trunk.port)), now)
        self._arm()
        self._app.flush()

    def _send_new(self, reg: _Registration, peer: Peer, now: float) -> None:
        """Build and send the first REGISTER of an attempt (no credentials yet)."""
        trunk = reg.trunk
        app = self._app
        uri = SipUri("sip", host=_bracket(trunk.host), port=trunk.port,
                     params={"transport": "tcp"} if trunk.transport == "tcp" else {})
        aor = SipUri("sip", user=trunk.username, host=_bracket(trunk.from_domain or trunk.host))
        expires = 0 if reg.removing else reg.expires
        try:
            mine = app.contact(peer)
        except (RuntimeError, OSError) as e:  # the PBX does not listen on that transport
            self._failed(reg, now, None, f"cannot send over {trunk.transport}: {e}")
            return
        # The provider sends the account's calls to this Contact; its user part names the
        # trunk account, as providers expect (RFC 3261 10.2.1).
        contact = Address(SipUri("sip", user=trunk.username, host=mine.uri.host,
                                 port=mine.uri.port, params=dict(mine.uri.params)))
        h = Headers()
        h.add("Max-Forwards", "70")
        h.add("From", str(Address(aor, params={"tag": reg.from_tag})))
        h.add("To", str(Address(aor)))
        h.add("Call-ID", reg.call_id)
        h.add("CSeq", "0 REGISTER")  # numbered in _send
        h.add("Contact", str(contact))
        h.add("Expires", str(expires))
        h.add("User-Agent", app.user_agent)
        reg.peer = peer
        reg.unbinding = reg.removing
        self._send(reg, Request("REGISTER", uri, h), now)

    def _send(self, reg: _Registration, req: Request, now: float) -> None:
        """Number ``req`` (RFC 3261 10.2.4: one Call-ID, CSeq up by one each time) and send
        it in a new client transaction."""
        assert reg.peer is not None
        reg.cseq += 1
        req.headers.set("CSeq", f"{reg.cseq} REGISTER")
        req.headers.remove("Via")
        self._app.add_via(req, reg.peer)
        try:
            key = self._app.layer.send_request(req, reg.peer, now)
        except LocalSipError as e:
            self._failed(reg, now, None, f"cannot send REGISTER: {e}")
            return
        reg.key = key
        reg.request = req
        self._by_key[key] = reg
        self._app.own_requests[key] = self

    def _answer(self, reg: _Registration, response: Response, now: float) -> bool:
        """Answer a 401/407 with the trunk's credentials; False when it must not be answered
        (again): the caller then records the failure."""
        proxy = response.status == 407
        values = response.headers.get_all("Proxy-Authenticate" if proxy else "WWW-Authenticate")
        challenge = choose_challenge(values)
        req = reg.request
        trunk = reg.trunk
        if challenge is None or req is None or trunk.username is None or trunk.password is None:
            return False
        # One answer per attempt; a second challenge means wrong credentials, unless it only
        # says our answer used an expired nonce (RFC 7616 3.3), which is worth one more try.
        if reg.answered >= 2 or (reg.answered == 1 and not challenge.stale):
            return False
        try:
            value = answer_challenge(challenge, "REGISTER", req.raw_uri, trunk.username,
                                     trunk.password, secrets.token_hex(8), 1)
        except DigestError as e:
            logger.debug("trunk %s: cannot answer the challenge: %s", trunk.name, e)
            return False
        reg.answered += 1
        retry = Request("REGISTER", req.raw_uri, req.headers.copy(), req.body)
        retry.headers.remove("Authorization")
        retry.headers.remove("Proxy-Authorization")
        # RFC 3261 22.2: same Call-ID, CSeq plus one, the answer in (Proxy-)Authorization.
        retry.headers.add("Proxy-Authorization" if proxy else "Authorization", value)
        self._send(reg, retry, now)
        return True

    def _raise_expires(self, reg: _Registration, response: Response, now: float) -> bool:
        """423 Interval Too Brief: ask again with the registrar's Min-Expires (RFC 3261
        10.2.8). Only upwards, so a registrar that keeps answering 423 cannot loop us."""
        wanted = _int_or_none(response.headers.get("Min-Expires"))
        if wanted is None or wanted <= reg.expires or reg.removing:
            return False
        reg.expires = wanted
        logger.info("trunk %s: the provider wants at least %d s, asking for that",
                    reg.trunk.name, wanted)
        self._start(reg, now)
        return True

    # -- outcomes ------------------------------------------------------------------------------
    def _registered(self, reg: _Registration, response: Response, now: float) -> None:
        if reg.removing:
            self._gone(reg, 200, response.reason)
            return
        granted = self._granted(reg, response)
        reg.last_status, reg.last_reason = response.status, response.reason
        if granted <= 0:
            self._failed(reg, now, response.status, "the provider kept no binding", response)
            return
        reg.state = "registered"
        reg.failures = 0
        reg.expires_at = now + granted
        # Refresh at 85 % of the lifetime, at least 30 s before its end, and past its middle
        # (a lifetime of a few seconds still gets half of it).
        delay = max(granted / 2, min(granted * _REFRESH_SHARE, granted - _REFRESH_MARGIN))
        reg.next_at = now + delay
        self._log(reg, logging.INFO, "trunk %s: registered, expires in %d s",
                  reg.trunk.name, granted)
        if reg.again:
            self._start(reg, now)

    def _granted(self, reg: _Registration, response: Response) -> int:
        """The lifetime the registrar granted: our Contact's ``expires``, else the Expires
        header, else what we asked for (RFC 3261 10.2.4)."""
        sent = reg.request.contacts[0].uri if reg.request is not None else None
        try:
            contacts = response.contacts
        except ParseError:  # a registrar's malformed Contact: fall back to Expires
            contacts = []
        for c in contacts:
            uri = c.uri
            if (sent is not None and uri.user == sent.user and uri.port == sent.port
                    and uri.host.lower() == sent.host.lower()):
                value = _int_or_none(c.params.get("expires"))
                if value is not None:
                    return value
        value = _int_or_none(response.headers.get("Expires"))
        return value if value is not None else reg.expires

    def _failed(self, reg: _Registration, now: float, status: int | None, reason: str,
                response: Response | None = None) -> None:
        if reg.removing:
            self._gone(reg, status, reason)
            return
        reg.state = "failed"
        reg.last_status, reg.last_reason = status, reason
        reg.failures += 1
        if reg.expires_at is not None and reg.expires_at <= now:
            reg.expires_at = None
        nominal = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(reg.failures - 1, 16))
        wait = nominal * (1 - _JITTER * self._rng.random())
        # RFC 3261 20.33: a provider that says when to come back (503, 500, 404...) is heeded.
        after = _int_or_none(response.headers.get("Retry-After")) if response else None
        if after is not None:
            wait = max(wait, min(float(after), _RETRY_AFTER_MAX))
        reg.next_at = now + wait
        what = f"{status} {reason}" if status is not None else reason
        self._log(reg, logging.WARNING, "trunk %s: registration failed: %s, next try in %d s",
                  reg.trunk.name, what, round(wait))
        if reg.again:
            reg.again = False
            reg.failures = 0
            self._start(reg, now)

    def _leave(self, reg: _Registration, now: float) -> None:
        """Stop refreshing ``reg``; unbind it at the provider if a binding may be there."""
        bound = reg.expires_at is not None and reg.expires_at > now
        reg.generation += 1  # a resolution under way is forgotten
        reg.resolving = False
        reg.next_at = None
        reg.removing = True
        reg.state = "unregistered"
        if not bound and reg.key is None:
            self._gone(reg, None, "removed")
            return
        self._leaving.append(reg)
        self._start(reg, now)

    def _gone(self, reg: _Registration, status: int | None, reason: str) -> None:
        reg.state = "unregistered"
        reg.next_at = None
        reg.expires_at = None
        if reg in self._leaving:
            self._leaving.remove(reg)
            what = "unregistered" if status is not None and 200 <= status < 300 else (
                f"unregistering failed: {status} {reason}" if status is not None else
                f"unregistering failed: {reason}")
            logger.info("trunk %s: %s", reg.trunk.name, what)
        if not self._leaving:
            self._left.set()

    def _log(self, reg: _Registration, level: int, fmt: str, *args: object) -> None:
        """Log a state or status change once; the same outcome again goes to debug only."""
        seen = (reg.state, reg.last_status)
        if seen != reg.logged:
            reg.logged = seen
            logger.log(level, fmt, *args)
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug(fmt, *args)

    # -- the timer -----------------------------------------------------------------------------
    def _arm(self) -> None:
        times = [r.next_at for r in self._regs.values() if r.next_at is not None]
        at = min(times) if times else None
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            self._timer = self._scheduler.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        now = self._app.now()
        for reg in list(self._regs.values()):
            if reg.next_at is not None and reg.next_at <= now:
                self._start(reg, now)
        self._arm()
        self._app.flush()
