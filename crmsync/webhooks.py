"""The webhook worker: pushes the outbox to the configured webhooks, on the PBX's event loop.

What a receiver gets, per call event and webhook, is one HTTP POST of a JSON body
``{"event": ..., "id": <idempotency key>, "occurred_at": ..., "call": {...}}`` (times in
ISO 8601 UTC, ``...Z``) with these headers:

- ``Content-Type: application/json``
- ``X-PBX-Event``: ``call.started``, ``call.answered``, ``call.ended``, ``call.missed`` or
  ``recording.ready``
- ``X-PBX-Idempotency-Key``: ``<call id>:<event>``, the same as ``id`` in the body
- ``X-PBX-Timestamp``: when this attempt was signed, in whole seconds since the Unix epoch
- ``X-PBX-Signature``: ``sha256=`` and the hex HMAC-SHA256, keyed with the webhook's
  ``secret``, of the timestamp, a ``.`` and the exact body bytes: ``f"{timestamp}.{body}"``.

A receiver recomputes the signature over the raw body (before any JSON parsing), compares it
in constant time, and refuses a timestamp more than a few minutes from its own clock, so a
recorded request cannot be replayed later; :func:`verify` does all three.

Any 2xx answer means delivered. Anything else, no answer within the webhook's ``timeout``, or
a connection error is retried after ``first_delay * 2**(n-1)`` (at most ``max_delay``, with
jitter); after ``max_attempts`` the delivery is dead until it is replayed (:meth:`replay`).
Redirects are not followed. Proxies come from the usual environment variables
(``HTTPS_PROXY``, ``NO_PROXY``).

Delivery is at least once: a row is marked delivered only after a 2xx has arrived, so if the
PBX dies between the two, the POST is made again (with the same body and idempotency key) once
its claim lapses. Receivers must therefore deduplicate by ``X-PBX-Idempotency-Key``; events of
one call may also arrive out of order (a retried ``call.started`` after ``call.ended``), so
order them by ``occurred_at``. Nothing is lost: the outbox is written in the transaction of
the call record, and rows stay pending while the receiver is down.

Database work runs in one worker thread of its own, never on the event loop, so a slow
database or receiver delays deliveries but never a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx
from sqlalchemy import Engine

from .outbox import (
    AttemptInfo,
    Claim,
    DeliveryInfo,
    Due,
    OutboxStore,
    Outcome,
    RetryPolicy,
    RetrySpec,
    Synced,
    Transition,
    WebhookSpec,
    utcnow,
)

__all__ = ["WebhookWorker", "sign", "verify"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_PRUNE_EVERY = 3600.0
_MAX_REPLY = 65536  # bytes of an answer read at most; more closes the connection
_USER_AGENT = "pbx-webhooks/1"


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-PBX-Signature`` value of ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *,
           now: float | None = None, tolerance: float = 300.0) -> bool:
    """Whether a received request is genuine: its signature matches and its timestamp is
    within ``tolerance`` seconds of ``now`` (the receiver's clock)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookWorker:
    """Delivers pending outbox rows to the webhooks, retrying with back-off.

    ``max_concurrency`` POSTs at most are in flight, ``per_webhook`` at most to one webhook (so
    a slow receiver cannot hold every slot); by default each webhook's fair share of
    ``max_concurrency`` (at least 4): all of it for a single webhook, so that each round of the
    worker (one database transaction) claims many rows, not two. ``poll_interval`` bounds how
    long a row written by another process waits when nobody calls :meth:`wake`. A claimed row is
    leased for its webhook's timeout plus ``lease_margin`` seconds: the time after which another
    worker (or this PBX after a restart) sends a row whose worker died. The log entries of
    deliveries delivered more than ``log_retention`` seconds ago are deleted once an hour, and
    the deliveries and events themselves after ``event_retention`` seconds (the call records
    stay: the API has them).
    """

    def __init__(self, engine: Engine, webhooks: Iterable[WebhookSpec] = (),
                 retry: RetrySpec | None = None, *, max_concurrency: int = 16,
                 per_webhook: int | None = None, poll_interval: float = 5.0,
                 lease_margin: float = 10.0,
                 log_retention: float = 7 * 86400.0,
                 event_retention: float = 30 * 86400.0) -> None:
        if max_concurrency < 1 or (per_webhook is not None and per_webhook < 1):
            raise ValueError("max_concurrency and per_webhook must be at least 1")
        self.store = OutboxStore(engine)
        self._webhooks: dict[str, WebhookSpec] = {}
        self._retry: RetrySpec = retry or RetryPolicy()
        self._max_concurrency = max_concurrency
        self._per_webhook = per_webhook
        self._poll_interval = poll_interval
        self._lease_margin = lease_margin
        self._log_retention = log_retention
        self._event_retention = event_retention
        self._random = random.Random()
        self._executor: ThreadPoolExecutor | None = None
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._inflight: dict[int, tuple[str, asyncio.Task[None]]] = {}
        self._outcomes: list[Outcome] = []
        self._release: set[int] = set()
        self._failing: dict[str, str] = {}  # webhook -> the error that made it fail
        self._db_failing = False
        self._next_prune = 0.0
        self._rotation = 0
        self.set_webhooks(webhooks, retry)

    def set_webhooks(self, webhooks: Iterable[WebhookSpec],
                     retry: RetrySpec | None = None) -> None:
        """Apply a reloaded config: deliveries go to these webhooks (the enabled ones) from
        the next claim on; POSTs in flight finish as they began. ``retry`` (if given) applies
        to every outcome from now on. Rows of a webhook that was removed or disabled stay
        pending until it is back."""
        self._webhooks = {hook.name: hook for hook in webhooks if hook.enabled}
        if retry is not None:
            self._retry = retry
        for name in list(self._failing):
            if name not in self._webhooks:
                del self._failing[name]
        self.wake()

    def start(self) -> None:
        """Start delivering (call on the running event loop)."""
        if self._task is not None:
            raise RuntimeError("the webhook worker is running already")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stopping = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhooks-db")
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            limits=httpx.Limits(max_connections=self._max_concurrency),
            headers={"User-Agent": _USER_AGENT},
        )
        self._task = self._loop.create_task(self._run(), name="webhook-worker")

    async def stop(self, grace: float = 2.0) -> None:
        """Stop: POSTs in flight get ``grace`` seconds to finish; the rest are abandoned and
        their rows made due again at once (they go out after the next start)."""
        if self._task is None:
            return
        self._stopping = True
        self.wake()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        tasks = [task for _name, task in self._inflight.values()]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._inflight.clear()
        try:
            await self._sync(claims=())
        except Exception:
            logger.exception("webhooks: could not save the last delivery results")
        assert self._client is not None and self._executor is not None
        await self._client.aclose()
        self._executor.shutdown(wait=False)
        self._executor = None
        self._client = None
        self._task = None

    def wake(self) -> None:
        """Look for due deliveries now (new outbox rows were committed). Safe from any
        thread."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to wake
                loop.call_soon_threadsafe(self._wake.set)

    async def replay(self, delivery_ids: Collection[int] | None = None, *,
                     statuses: Collection[str] = ("dead",), webhook: str | None = None,
                     event: str | None = None, call_id: str | None = None) -> list[int]:
        """Send matching dead (or, if ``statuses`` says so, delivered) deliveries again with
        a fresh retry budget; with no ids and no filter, every dead one. Returns their ids.
        Raises ``ValueError`` for a status that cannot be replayed."""
        ids = await self._in_thread(
            self.store.replay, delivery_ids, statuses=statuses, webhook=webhook, event=event,
            call_id=call_id,
        )
        if ids:
            logger.info("webhooks: %d deliveries replayed", len(ids))
            self.wake()
        return ids

    async def deliveries(self, *, status: str | None = None, webhook: str | None = None,
                         call_id: str | None = None, limit: int = 100,
                         before_id: int | None = None) -> list[DeliveryInfo]:
        """Deliveries newest first, optionally filtered (see :meth:`OutboxStore.deliveries`)."""
        return await self._in_thread(self.store.deliveries, status=status, webhook=webhook,
                                     call_id=call_id, limit=limit, before_id=before_id)

    async def attempts(self, delivery_id: int) -> list[AttemptInfo]:
        """The delivery log of one delivery, oldest first."""
        return await self._in_thread(self.store.attempts, delivery_id)

    async def _in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        executor = self._executor
        if executor is None:  # not started: any thread will do
            return await asyncio.to_thread(fn, *args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, lambda: fn(*args, **kwargs))

    async def _run(self) -> None:
        delay = 0.0
        while not self._stopping:
            self._wake.clear()
            try:
                timeout = await self._round()
            except Exception as e:
                # The database is unreachable or locked: results stay in memory, rows stay
                # pending; try again later. One line when it starts, one when it is over.
                if not self._db_failing:
                    logger.error("webhooks: cannot use the database, retrying: %s", e)
                    self._db_failing = True
                delay = min(max(delay * 2, 0.5), self._poll_interval)
                await self._sleep(delay)
                continue
            if self._db_failing:
                logger.info("webhooks: the database works again")
                self._db_failing = False
            delay = 0.0
            await self._sleep(timeout)

    async def _round(self) -> float:
        """Save outcomes, claim and start what is due; returns how long to sleep at most."""
        synced = await self._sync(claims=self._claims())
        for due in synced.claimed:
            if self._stopping or due.webhook not in self._webhooks:
                self._release.add(due.delivery_id)
                continue
            hook = self._webhooks[due.webhook]
            task = asyncio.get_running_loop().create_task(self._deliver(due, hook))
            self._inflight[due.delivery_id] = (due.webhook, task)
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + _PRUNE_EVERY
            await self._prune()
        timeout = self._poll_interval
        if synced.next_due is not None:
            wait = (synced.next_due - utcnow()).total_seconds()
            timeout = min(timeout, max(wait, 0.01))
        return timeout

    async def _sleep(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _claims(self) -> list[Claim]:
        """How many rows of each webhook to claim: what its free slots and the free total
        allow, starting with a different webhook each time so none is always last."""
        free = self._max_concurrency - len(self._inflight)
        names = list(self._webhooks)
        if free <= 0 or not names:
            return []
        busy: dict[str, int] = {}
        for name, _task in self._inflight.values():
            busy[name] = busy.get(name, 0) + 1
        self._rotation = (self._rotation + 1) % len(names)
        share = self._per_webhook or max(4, self._max_concurrency // len(names))
        claims = []
        for name in names[self._rotation:] + names[:self._rotation]:
            limit = min(share - busy.get(name, 0), free)
            if limit > 0:
                hook = self._webhooks[name]
                claims.append(Claim(name, limit, hook.timeout + self._lease_margin))
                free -= limit
        return claims

    async def _sync(self, claims: list[Claim] | tuple[()]) -> Synced:
        outcomes, self._outcomes = self._outcomes, []
        release, self._release = self._release, set()
        jitter = [self._random.random() for _ in outcomes]
        try:
            synced = await self._in_thread(
                self.store.sync, outcomes, retry=self._retry, jitter=jitter, claims=claims,
                busy=set(self._inflight), release=release,
            )
        except BaseException:
            # Not written: keep them for the next round.
            self._outcomes[:0] = outcomes
            self._release |= release
            raise
        for transition in synced.transitions:
            self._log(transition)
        return synced

    async def _prune(self) -> None:
        now = utcnow()
        try:
            count = await self._in_thread(self.store.prune,
                                          now - timedelta(seconds=self._log_retention))
            events = await self._in_thread(self.store.prune_events,
                                           now - timedelta(seconds=self._event_retention))
        except Exception as e:
            logger.warning("webhooks: pruning the delivery log failed: %s", e)
            return
        if count or events:
            logger.info("webhooks: pruned %d old delivery log entries and %d delivered events",
                        count, events)

    async def _deliver(self, due: Due, hook: WebhookSpec) -> None:
        try:
            outcome = await self._post(due, hook)
            self._outcomes.append(outcome)
            self._note_health(hook.name, outcome)
        except asyncio.CancelledError:
            self._release.add(due.delivery_id)  # stopped mid-POST: due again at once
            raise
        finally:
            self._inflight.pop(due.delivery_id, None)
            self._wake.set()

    async def _post(self, due: Due, hook: WebhookSpec) -> Outcome:
        assert self._client is not None
        body = due.payload.encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-PBX-Event": due.event,
            "X-PBX-Idempotency-Key": due.key,
            "X-PBX-Timestamp": timestamp,
            "X-PBX-Signature": sign(hook.secret, timestamp, body),
        }
        at = utcnow()
        started = time.monotonic()
        code: int | None = None
        reply = b""
        failure = ""
        try:
            # httpx's timeout bounds each phase; this bounds the whole exchange.
            async with asyncio.timeout(hook.timeout), self._client.stream(
                "POST", hook.url, content=body, headers=headers, timeout=hook.timeout
            ) as response:
                code = response.status_code
                reply = await _read_some(response)
        except (TimeoutError, httpx.TimeoutException):
            failure = f"no answer within {hook.timeout:g}s"
        except httpx.HTTPError as e:
            failure = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        except (OSError, ValueError) as e:
            failure = f"{type(e).__name__}: {e}"
        # Once the status line is in, it decides; a body cut short only loses the excerpt.
        error: str | None = None
        if code is None:
            error = failure or "no answer"
        elif not 200 <= code < 300:
            text = reply[:200].decode("utf-8", "replace").strip()
            error = f"HTTP {code}" + (f": {text}" if text else "")
        duration_ms = int((time.monotonic() - started) * 1000)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("webhook %s: POST %s attempt %d: %s (%d ms)", hook.name, due.key,
                         due.attempts + 1, error or f"HTTP {code}", duration_ms)
        return Outcome(due, at, code, error, duration_ms)

    def _note_health(self, name: str, outcome: Outcome) -> None:
        """Log when a webhook starts failing and when it works again, not every failure."""
        if outcome.ok:
            if self._failing.pop(name, None) is not None:
                logger.info("webhook %s: delivering again", name)
        elif name not in self._failing and name in self._webhooks:
            self._failing[name] = outcome.error or ""
            logger.warning("webhook %s: failing (%s); retrying with back-off", name,
                           outcome.error)

    def _log(self, transition: Transition) -> None:
        due = transition.outcome.due
        if transition.status == "delivered":
            logger.info("webhook %s: %s delivered (attempt %d, HTTP %s)", due.webhook,
                        due.key, transition.attempts, transition.outcome.status_code)
        elif transition.status == "dead":
            logger.warning("webhook %s: %s is dead after %d attempts (last: %s); replay it "
                           "when the receiver is fixed", due.webhook, due.key,
                           transition.attempts, transition.outcome.error)
        elif logger.isEnabledFor(logging.DEBUG) and transition.next_attempt_at is not None:
            logger.debug("webhook %s: %s retry %d at %s", due.webhook, due.key,
                         transition.attempts + 1, _hms(transition.next_attempt_at))


async def _read_some(response: httpx.Response) -> bytes:
    """Up to 64 KiB of the answer (what a receiver says is rarely more; a longer one is cut
    and its connection closed)."""
    data = bytearray()
    async for chunk in response.aiter_raw():
        data += chunk
        if len(data) >= _MAX_REPLY:
            break
    return bytes(data)


def _hms(value: datetime) -> str:
    return value.strftime("%H:%M:%S.%f")[:-3]
