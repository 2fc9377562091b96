"""Registrar binding logic (RFC 3261 section 10.3, RFC 5626 section 6), with no I/O.

The caller parses the REGISTER, authenticates it, and hands the facts to
:meth:`Registrar.register`; it gets back the status to answer and the bindings to list in the
200 (or to store, or to route to). Time is passed in as ``now``; the caller runs one timer on
:meth:`Registrar.next_expiry` and calls :meth:`Registrar.expire` when it fires.

Theory of operation:

* State is ``AOR -> list of bindings``, oldest refresh first. A refreshed binding moves to the
  end, so the list order is also "most recently registered" order.
* Every request is all-or-nothing: the new list is built on the side and only stored once the
  whole request has been accepted, so a 400/423/500 leaves the state exactly as it was.
* Expiry uses a heap of ``(expires_at, aor)`` with lazy deletion: a refresh pushes a new entry
  and leaves the old one, which is dropped when it reaches the top and matches no binding.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal
from urllib.parse import unquote

__all__ = [
    "Binding",
    "ContactSpec",
    "RegisterResult",
    "Registrar",
    "contact_key",
]


@dataclass(frozen=True, slots=True)
class ContactSpec:
    """One Contact entry of a REGISTER, already parsed by the caller."""

    #: The contact URI exactly as sent, e.g. ``sip:alice@192.0.2.4:5062;transport=tcp``;
    #: ``*`` for the wildcard.
    uri: str
    #: The contact's ``expires`` param, if any.
    expires: int | None = None
    q: float | None = None
    #: ``+sip.instance`` (RFC 5626), unquoted, e.g. ``<urn:uuid:...>``.
    instance: str | None = None
    #: ``reg-id`` (RFC 5626).
    reg_id: int | None = None
    #: The other contact params as written, to echo back in the 200.
    params: str = ""


@dataclass(frozen=True, slots=True)
class Binding:
    """A registered contact of an address-of-record."""

    aor: str
    uri: str
    #: Absolute time (same clock as ``now``) after which the binding is gone.
    expires_at: float
    q: float | None
    call_id: str
    cseq: int
    instance: str | None
    reg_id: int | None
    #: Opaque to the registrar: where the REGISTER came from (``udp:192.0.2.4:5062``, or a
    #: connection id). The caller routes by it (RFC 5626 flows).
    source: str
    #: The Path header value(s) of the REGISTER (RFC 3327), to route requests through.
    path: str = ""
    user_agent: str = ""
    #: The contact params as written, echoed back in the 200.
    params: str = ""
    #: When the binding was created or last refreshed.
    updated_at: float = 0.0

    def expires_in(self, now: float) -> int:
        """Whole seconds left, for the ``expires`` param of the 200's Contact."""
        return max(0, math.ceil(self.expires_at - now - 1e-6))


@dataclass(frozen=True, slots=True)
class RegisterResult:
    """What to answer to a REGISTER, and what changed."""

    status: int
    reason: str
    #: All current bindings of the AOR after the request, best first (for the 200's Contacts).
    bindings: list[Binding] = field(default_factory=list)
    #: Set with status 423: the Min-Expires header value to send.
    min_expires: int | None = None
    #: Bindings added or refreshed by this request.
    changed: list[Binding] = field(default_factory=list)
    #: Bindings gone because of this request: removed, replaced by another URI or flow,
    #: evicted over ``max_contacts``, or found already expired.
    removed: list[Binding] = field(default_factory=list)


@lru_cache(maxsize=8192)
def contact_key(uri: str) -> tuple[str | None, ...]:
    """A comparison key for a contact URI, after RFC 3261 section 19.1.4, loosely.

    Scheme and host compare case-insensitively, the user part case-sensitively after
    %-decoding; the port counts only if written (no default filling, as 19.1.4 says); of the
    params, only transport, user, maddr, ttl and method take part; headers are ignored.
    """
    text = uri.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("sip", "sips"):
        return (scheme, text)
    rest = rest.split("?", 1)[0]
    userinfo, at, hostpart = rest.partition("@")
    if not at:
        userinfo, hostpart = "", rest
    user = unquote(userinfo.split(":", 1)[0])
    hostport, _, param_text = hostpart.partition(";")
    if hostport.startswith("["):
        close = hostport.find("]")
        host, port = hostport[: close + 1], hostport[close + 1 :].removeprefix(":")
    else:
        host, _, port = hostport.partition(":")
    port = port.lstrip("0") or ("0" if port else "")
    wanted = dict.fromkeys(("transport", "user", "maddr", "ttl", "method"))
    for param in param_text.split(";"):
        name, _, value = param.partition("=")
        name = name.strip().lower()
        if name in wanted:
            value = value.strip()
            wanted[name] = value if name == "method" else value.lower()
    return (scheme, user, host.lower(), port, *wanted.values())


def _find(bindings: list[Binding], uri: str, instance: str | None, reg_id: int | None) -> int:
    """Index of the binding a contact refers to, or -1.

    RFC 5626 section 6: with ``+sip.instance`` the binding is keyed by instance and reg-id
    (two flows of one device may share one URI), so the URI matters only against plain
    bindings; without it, by URI (RFC 3261 section 10.3 step 7).
    """
    if instance is not None:
        for i, b in enumerate(bindings):
            if b.instance == instance and b.reg_id == reg_id:
                return i
    key = contact_key(uri)
    for i, b in enumerate(bindings):
        if (instance is None or b.instance is None) and contact_key(b.uri) == key:
            return i
    return -1


def _q(b: Binding) -> float:
    # An absent q ranks as 1.0, the top of the RFC 3261 section 20.10 range.
    return 1.0 if b.q is None else b.q


def _ordered(bindings: list[Binding]) -> list[Binding]:
    """Highest q first, then most recently refreshed first."""
    indexed = sorted(enumerate(bindings), key=lambda t: (-_q(t[1]), -t[0]))
    return [b for _, b in indexed]


class Registrar:
    """In-memory location service for the AORs of one domain.

    Phones move between networks and re-register from new addresses all the time, often
    without removing their old contact. So when an AOR would hold more than ``max_contacts``
    bindings, the least recently refreshed ones are evicted instead of refusing the phone that
    is registering now: refusing would lock out a user whose stale bindings are still counted.
    """

    def __init__(
        self,
        min_expires: int = 60,
        max_expires: int = 7200,
        default_expires: int = 3600,
        max_contacts: int = 10,
    ) -> None:
        if not 0 < min_expires <= default_expires <= max_expires:
            raise ValueError(
                "need 0 < min_expires <= default_expires <= max_expires, got "
                f"{min_expires}, {default_expires}, {max_expires}"
            )
        if max_contacts < 1:
            raise ValueError(f"max_contacts must be at least 1, got {max_contacts}")
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.max_contacts = max_contacts
        self._by_aor: dict[str, list[Binding]] = {}
        self._heap: list[tuple[float, str]] = []
        self._count = 0
        # source -> AORs holding a flow binding (reg-id) from it, for remove_source().
        self._flows: dict[str, set[str]] = {}

    # -- the one place that changes state ------------------------------------------------------

    def _store(self, aor: str, new: list[Binding], added: Iterable[Binding] = ()) -> None:
        old = self._by_aor.get(aor, [])
        for b in old:
            if b.reg_id is not None:
                aors = self._flows.get(b.source)
                if aors is not None:
                    aors.discard(aor)
                    if not aors:
                        del self._flows[b.source]
        for b in new:
            if b.reg_id is not None:
                self._flows.setdefault(b.source, set()).add(aor)
        self._count += len(new) - len(old)
        if new:
            self._by_aor[aor] = new
        else:
            self._by_aor.pop(aor, None)
        for b in added:
            heapq.heappush(self._heap, (b.expires_at, aor))
        if len(self._heap) > 2 * self._count + 64:
            # Too many stale entries from refreshes: rebuild from the live bindings.
            self._heap = [(b.expires_at, a) for a, bs in self._by_aor.items() for b in bs]
            heapq.heapify(self._heap)

    # -- REGISTER ------------------------------------------------------------------------------

    def register(
        self,
        aor: str,
        contacts: list[ContactSpec] | Literal["*"],
        expires_header: int | None,
        call_id: str,
        cseq: int,
        source: str,
        now: float,
        user_agent: str = "",
        path: str = "",
        max_contacts: int | None = None,
    ) -> RegisterResult:
        """Apply a REGISTER for ``aor`` (RFC 3261 section 10.3 steps 6-8).

        ``contacts`` is the parsed Contact list, or ``"*"``. An empty list is a query.
        Answers 200 with the AOR's bindings, 400 for an invalid request, 423 with
        ``min_expires`` for a too-short interval, 500 for an out-of-order CSeq. Any status
        but 200 leaves the state unchanged.
        """
        if not aor or not call_id or not 0 <= cseq < 2**32:
            return RegisterResult(400, "Bad Request")
        current = self._by_aor.get(aor, [])
        live = [b for b in current if b.expires_at > now]
        expired = [b for b in current if b.expires_at <= now]

        if contacts == "*" or any(c.uri.strip() == "*" for c in contacts):
            return self._unregister_all(aor, contacts, expires_header, call_id, cseq, live, expired)

        plans: list[tuple[ContactSpec, int]] = []
        for spec in contacts:
            if spec.expires is not None:
                expires = spec.expires
            elif expires_header is not None:
                expires = expires_header
            else:
                expires = self.default_expires
            if expires < 0:
                return RegisterResult(400, "Invalid expires")
            if spec.q is not None and not 0.0 <= spec.q <= 1.0:
                return RegisterResult(400, "Invalid q")
            if spec.reg_id is not None and spec.instance is None:
                # RFC 5626 section 6: reg-id without +sip.instance is ignored.
                spec = ContactSpec(spec.uri, spec.expires, spec.q, None, None, spec.params)
            plans.append((spec, min(expires, self.max_expires)))
        brief = [e for _, e in plans if 0 < e < self.min_expires]
        if brief:
            # RFC 3261 section 10.3 step 7: refuse the whole request, say what is acceptable.
            return RegisterResult(423, "Interval Too Brief", min_expires=self.min_expires)

        working = list(live)
        original = {id(b) for b in live}
        for spec, expires in plans:
            i = _find(working, spec.uri, spec.instance, spec.reg_id)
            if i >= 0:
                old = working[i]
                # RFC 3261 section 10.3 step 7: same Call-ID needs a higher CSeq, else the
                # update "MUST be aborted and the request fails". A binding added earlier in
                # this same request is simply overwritten.
                if id(old) in original and old.call_id == call_id and cseq <= old.cseq:
                    return RegisterResult(500, "Out of order")
                del working[i]
            if expires > 0:
                working.append(
                    Binding(
                        aor=aor,
                        uri=spec.uri,
                        expires_at=now + expires,
                        q=spec.q,
                        call_id=call_id,
                        cseq=cseq,
                        instance=spec.instance,
                        reg_id=spec.reg_id,
                        source=source,
                        path=path,
                        user_agent=user_agent,
                        params=spec.params,
                        updated_at=now,
                    )
                )
        limit = max_contacts if max_contacts is not None else self.max_contacts
        if len(working) > limit:
            working = working[-limit:]

        kept = {id(b) for b in working}
        changed = [b for b in working if id(b) not in original]
        removed = [b for b in live if id(b) not in kept] + expired
        if changed or removed:
            self._store(aor, working, changed)
        return RegisterResult(200, "OK", _ordered(working), changed=changed, removed=removed)

    def _unregister_all(
        self,
        aor: str,
        contacts: list[ContactSpec] | Literal["*"],
        expires_header: int | None,
        call_id: str,
        cseq: int,
        live: list[Binding],
        expired: list[Binding],
    ) -> RegisterResult:
        # RFC 3261 section 10.3 step 6: "*" is valid only alone and with Expires: 0.
        if contacts != "*" and (len(contacts) != 1 or contacts[0].expires not in (None, 0)):
            return RegisterResult(400, "Invalid wildcard Contact")
        if expires_header != 0:
            return RegisterResult(400, "Invalid wildcard Contact")
        for b in live:
            # Same Call-ID and a CSeq not higher: abort, as for a single binding.
            if b.call_id == call_id and cseq <= b.cseq:
                return RegisterResult(500, "Out of order")
        removed = live + expired
        if removed:
            self._store(aor, [])
        return RegisterResult(200, "OK", [], removed=removed)

    # -- queries and timers --------------------------------------------------------------------

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Unexpired bindings of ``aor``: highest q first, then most recently refreshed."""
        return _ordered([b for b in self._by_aor.get(aor, ()) if b.expires_at > now])

    def all_bindings(self) -> list[Binding]:
        """Every stored binding, including expired ones :meth:`expire` has not removed yet."""
        return [b for bindings in self._by_aor.values() for b in bindings]

    def expire(self, now: float) -> list[Binding]:
        """Remove and return the bindings whose time has come (``expires_at <= now``)."""
        heap = self._heap
        due: set[str] = set()
        while heap and heap[0][0] <= now:
            due.add(heapq.heappop(heap)[1])
        removed: list[Binding] = []
        for aor in due:
            bindings = self._by_aor.get(aor)
            if not bindings:
                continue
            gone = [b for b in bindings if b.expires_at <= now]
            if gone:
                removed.extend(gone)
                self._store(aor, [b for b in bindings if b.expires_at > now])
        return removed

    def next_expiry(self) -> float | None:
        """When the earliest binding expires: the time to call :meth:`expire` next."""
        heap = self._heap
        while heap:
            at, aor = heap[0]
            if any(b.expires_at == at for b in self._by_aor.get(aor, ())):
                return at
            heapq.heappop(heap)  # left behind by a refresh or a removal
        return None

    def remove_source(self, source: str) -> list[Binding]:
        """A connection or flow has failed: remove and return the bindings it carried.

        Only RFC 5626 bindings (with reg-id) are tied to their flow (RFC 5626 section 6), and a
        phone using outbound registers a new flow at once. A plain binding names an address the
        phone still listens on after its TCP connection closes (RFC 3261 section 18), so it
        stays until it expires.
        """
        removed: list[Binding] = []
        for aor in sorted(self._flows.get(source, ())):
            bindings = self._by_aor.get(aor, [])
            keep = [b for b in bindings if b.reg_id is None or b.source != source]
            removed.extend(b for b in bindings if b.reg_id is not None and b.source == source)
            self._store(aor, keep)
        return removed

    def load(self, bindings: Iterable[Binding], now: float) -> int:
        """Restore bindings saved before a restart; expired ones are dropped.

        Merged into the current state in ``updated_at`` order, a later binding replacing an
        earlier one for the same contact, and ``max_contacts`` still holds. Returns the number
        of bindings loaded.
        """
        fresh = sorted((b for b in bindings if b.expires_at > now), key=lambda b: b.updated_at)
        by_aor: dict[str, list[Binding]] = {}
        for b in fresh:
            working = by_aor.get(b.aor)
            if working is None:
                working = by_aor[b.aor] = list(self._by_aor.get(b.aor, []))
            i = _find(working, b.uri, b.instance, b.reg_id)
            if i >= 0:
                del working[i]
            working.append(b)
        loaded = 0
        for aor, working in by_aor.items():
            working = working[-self.max_contacts :]
            previous = {id(b) for b in self._by_aor.get(aor, [])}
            added = [b for b in working if id(b) not in previous]
            loaded += len(added)
            self._store(aor, working, added)
        return loaded
