"""The webhook worker against a real HTTP receiver on a loopback port, on a real SQLite file:
signatures, retries with back-off through errors and timeouts, dead letters and replay, and a
worker killed mid-way whose successor delivers the rest once per idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from crmsync.models import Base, WebhookDelivery
from crmsync.outbox import PendingEvent, enqueue, utcnow
from crmsync.webhooks import WebhookWorker, sign, verify
from crmsync.writer import CallRecordFolder
from pbx.config_crm import RetrySection, Webhook
from pbx.db import WriteBehind, open_engine
from pbx.records import CallAnswered, CallEnded, CallStarted

ROOT = Path(__file__).resolve().parents[2]
SECRET = "receiver-secret-0123456789"
T0 = datetime(2026, 11, 21, 9, 0, 0)


@dataclass
class Request:
    at: float
    headers: dict[str, str]
    body: bytes
    answer: str

    @property
    def key(self) -> str:
        return self.headers["x-pbx-idempotency-key"]

    @property
    def genuine(self) -> bool:
        return verify(SECRET, self.headers["x-pbx-timestamp"], self.body,
                      self.headers["x-pbx-signature"])


class Receiver:
    """A minimal HTTP/1.1 server (keep-alive, Content-Length bodies) that answers each POST
    as ``plan`` says, then as ``default``: ``ok`` (200), a status code such as ``"500"``,
    ``hang`` (answers nothing for ``hang_for`` seconds, then closes) or ``slow`` (200 after
    ``slow_for`` seconds)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.plan: list[str] = []
        self.default = "ok"
        self.hang_for = 2.0
        self.slow_for = 0.05
        self.arrived = asyncio.Event()
        self._closing = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hooks/calls"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        self._closing.set()
        for writer in self._writers:
            writer.close()
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 5.0)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def keys(self) -> set[str]:
        return {r.key for r in self.requests if r.answer in ("ok", "slow")}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                assert lines[0].startswith("POST /hooks/calls HTTP/1.1"), lines[0]
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                answer = self.plan.pop(0) if self.plan else self.default
                self.requests.append(Request(time.monotonic(), headers, body, answer))
                self.arrived.set()
                if answer == "hang":
                    await self._pause(self.hang_for)
                    break
                if answer == "slow":
                    await self._pause(self.slow_for)
                status = 200 if answer in ("ok", "slow") else int(answer)
                text = b"thanks" if status == 200 else b"receiver says no"
                writer.write(f"HTTP/1.1 {status} Whatever\r\nContent-Type: text/plain\r\n"
                             f"Content-Length: {len(text)}\r\n\r\n".encode() + text)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)
            self._writers.discard(writer)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.close()





def _hook(url: str, name: str = "crm", timeout: float = 1.0) -> Webhook:
    return Webhook(name=name, url=url, secret=SECRET, timeout=timeout)


def _retry(max_attempts: int = 8) -> RetrySection:
    return RetrySection(max_attempts=max_attempts, first_delay=0.05, max_delay=1.0)


def _queue(engine: Engine, keys: list[str], hooks: tuple[str, ...] = ("crm",)) -> None:
    """Outbox rows as the record writer makes them: ``<call id>:<event>``."""
    pending = []
    for key in keys:
        call_id, _, name = key.partition(":")
        pending.append(PendingEvent(name, call_id, T0, {"id": call_id}))
    with Session(engine) as s, s.begin():
        subscribers = {p.event: hooks for p in pending}
        enqueue(s, pending, subscribers, utcnow())


def _statuses(engine: Engine) -> dict[str, int]:
    with Session(engine) as s:
        rows = s.execute(select(WebhookDelivery.status, func.count())
                         .group_by(WebhookDelivery.status))
        return {status: count for status, count in rows}


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _settled(engine: Engine, done: Callable[[dict[str, int]], bool],
                   timeout: float = 10.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        statuses = await asyncio.to_thread(_statuses, engine)
        if done(statuses):
            return statuses
        assert time.monotonic() < deadline, f"timed out: {statuses}"
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_every_event_arrives_signed_soon_after_the_commit(
        engine: Engine, receiver: Receiver) -> None:
    # Polling alone would take 30 s: only the commit hook's wake-up can make this pass.
    worker = WebhookWorker(engine, [_hook(receiver.url)], _retry(), poll_interval=30.0)
    worker.start()
    folder = CallRecordFolder(on_outbox_commit=worker.wake)
    folder.set_webhooks([_hook(receiver.url)])
    db = WriteBehind(engine)
    try:
        folder.add(CallStarted("c1", "sip-1", "inbound", "+81312345678", "Caller", "5000",
                               None, "bob", T0))
        folder.add(CallAnswered("c1", T0 + timedelta(seconds=2), "bob", 2.0))
        folder.add(CallEnded("c1", T0 + timedelta(seconds=32), "answered", "caller hung up",
                             "caller", None, 30.0, 2.0, "/var/rec/c1.flac", 30.0))
        folder.add(CallStarted("c2", "sip-2", "inbound", "+81312345679", "", "5000", None,
                               "bob", T0))
        folder.add(CallEnded("c2", T0 + timedelta(seconds=20), "no_answer", "no answer",
                             "system", 480, 0.0, 20.0))
        job = folder.flush()
        assert job is not None
        db.submit(job)
        expected = {"c1:call.started", "c1:call.answered", "c1:call.ended",
                    "c1:recording.ready", "c2:call.started", "c2:call.ended", "c2:call.missed"}
        await _until(lambda: receiver.keys() == expected, timeout=5.0)
        await _settled(engine, lambda s: s == {"delivered": 7})
    finally:
        await worker.stop()
        db.close()
    assert len(receiver.requests) == 7  # once each
    for request in receiver.requests:
        assert request.genuine
        assert request.headers["content-type"] == "application/json"
        body = json.loads(request.body)
        assert body["id"] == request.key
        assert body["event"] == request.headers["x-pbx-event"] == request.key.split(":")[1]
        assert body["call"]["id"] == request.key.split(":")[0]
        # The signature covers the timestamp and the exact body.
        assert request.headers["x-pbx-signature"] == sign(
            SECRET, request.headers["x-pbx-timestamp"], request.body)
    ended = next(json.loads(r.body) for r in receiver.requests if r.key == "c1:call.ended")
    assert ended["occurred_at"] == "2026-11-21T09:00:32.000Z"
    assert ended["call"]["recording_path"] == "/var/rec/c1.flac"
    assert ended["call"]["duration"] == 30.0


def test_a_signature_is_refused_if_anything_changed() -> None:
    body = b'{"event":"call.ended"}'
    now = 1_800_000_000
    good = sign(SECRET, now, body)
    assert verify(SECRET, str(now), body, good, now=now + 10)
    assert not verify(SECRET, str(now), body + b" ", good, now=now)
    assert not verify(SECRET, str(now + 1), body, good, now=now)
    assert not verify("another-secret-0123456789", str(now), body, good, now=now)
    assert not verify(SECRET, str(now), body, good, now=now + 3600)  # too old: a replay
    assert not verify(SECRET, "yesterday", body, good, now=now)


@pytest.mark.asyncio
async def test_errors_and_timeouts_are_retried_with_growing_delays(
        engine: Engine, receiver: Receiver) -> None:
    receiver.plan = ["500", "503", "hang", "ok"]
    _queue(engine, ["c1:call.ended"])
    worker = WebhookWorker(engine, [_hook(receiver.url, timeout=0.3)], _retry())
    worker.start()
    try:
        await _settled(engine, lambda s: s == {"delivered": 1})
        [delivery] = await worker.deliveries()
        log = await worker.attempts(delivery.id)
    finally:
        await worker.stop()
    assert [r.answer for r in receiver.requests] == ["500", "503", "hang", "ok"]
    # Every attempt is the same event: same key, same body, each signed afresh.
    assert {r.key for r in receiver.requests} == {"c1:call.ended"}
    assert len({r.body for r in receiver.requests}) == 1
    assert all(r.genuine for r in receiver.requests)
    assert [(a.status_code, a.error) for a in log] == [
        (500, "HTTP 500: receiver says no"), (503, "HTTP 503: receiver says no"),
        (None, "no answer within 0.3s"), (200, None)]
    assert 250 <= log[2].duration_ms < 1000
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        "delivered", 4, 200)
    # Back-off: 50 ms, then 100 ms (less up to 20 % jitter) between the failed attempts.
    at = [r.at for r in receiver.requests]
    assert at[1] - at[0] >= 0.04
    assert at[2] - at[1] >= 0.08


@pytest.mark.asyncio
async def test_dead_after_the_budget_then_replayed(
        engine: Engine, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.default = "500"
    _queue(engine, ["c1:call.missed", "c2:call.missed"])
    worker = WebhookWorker(engine, [_hook(receiver.url)], _retry(max_attempts=3))
    worker.start()
    try:
        with caplog.at_level(logging.INFO, logger="crmsync.webhooks"):
            await _settled(engine, lambda s: s == {"dead": 2})
            dead = await worker.deliveries(status="dead")
            assert len(receiver.requests) == 6  # three each, then nothing more
            await asyncio.sleep(0.3)
            assert len(receiver.requests) == 6
            receiver.default = "ok"
            replayed = await worker.replay(call_id="c2")
            assert replayed == [d.id for d in dead if d.call_id == "c2"]
            await _settled(engine, lambda s: s == {"dead": 1, "delivered": 1})
            assert await worker.replay(statuses=("dead",)) == [
                d.id for d in dead if d.call_id == "c1"]
            await _settled(engine, lambda s: s == {"delivered": 2})
    finally:
        await worker.stop()
    assert [r.key for r in receiver.requests[6:]] == ["c2:call.missed", "c1:call.missed"]
    assert all(r.genuine for r in receiver.requests)
    messages = [r.getMessage() for r in caplog.records]
    # One line when the webhook starts failing and one when it works again, not one per
    # attempt; one per delivery that died or got through.
    assert sum("failing (HTTP 500" in m for m in messages) == 1
    assert sum("delivering again" in m for m in messages) == 1
    assert sum("is dead after 3 attempts" in m for m in messages) == 2
    assert sum(" delivered (attempt 1, HTTP 200)" in m for m in messages) == 2


@pytest.mark.asyncio
async def test_stop_gives_back_a_post_in_flight(engine: Engine, receiver: Receiver) -> None:
    receiver.plan = ["hang"]
    _queue(engine, ["c1:call.ended"])
    worker = WebhookWorker(engine, [_hook(receiver.url, timeout=5.0)], _retry())
    worker.start()
    await asyncio.wait_for(receiver.arrived.wait(), 5.0)
    started = time.monotonic()
    await worker.stop(grace=0.1)
    assert time.monotonic() - started < 2.0
    [row] = await worker.deliveries()
    # Not counted as an attempt, and due at once rather than when its lease would lapse.
    assert (row.status, row.attempts) == ("pending", 0)
    assert row.next_attempt_at <= utcnow()
    successor = WebhookWorker(engine, [_hook(receiver.url, timeout=5.0)], _retry())
    successor.start()
    try:
        await _settled(engine, lambda s: s == {"delivered": 1}, timeout=3.0)
    finally:
        await successor.stop()
    assert [r.answer for r in receiver.requests] == ["hang", "ok"]


@pytest.mark.asyncio
async def test_a_hanging_webhook_does_not_hold_up_another(
        engine: Engine, receiver: Receiver) -> None:
    other = Receiver()
    other.default = "hang"
    await other.start()
    keys = [f"c{i}:call.ended" for i in range(20)]
    _queue(engine, keys, ("crm", "slowpoke"))
    worker = WebhookWorker(
        engine, [_hook(receiver.url), _hook(other.url, "slowpoke", timeout=5.0)], _retry(),
        max_concurrency=8, per_webhook=4,
    )
    worker.start()
    try:
        await _until(lambda: receiver.keys() == set(keys), timeout=3.0)
        assert len(other.requests) == 4  # its four slots, still waiting
    finally:
        await worker.stop(grace=0.0)
        await other.close()


@pytest.mark.asyncio
async def test_rows_of_a_disabled_webhook_wait_until_it_is_back(
        engine: Engine, receiver: Receiver) -> None:
    _queue(engine, ["c1:call.ended"])
    hook = _hook(receiver.url)
    worker = WebhookWorker(engine, [hook.model_copy(update={"enabled": False})], _retry(),
                           poll_interval=0.05)
    worker.start()
    try:
        await asyncio.sleep(0.3)
        assert receiver.requests == []
        worker.set_webhooks([hook])
        await _settled(engine, lambda s: s == {"delivered": 1}, timeout=3.0)
    finally:
        await worker.stop()


_KILLED_WORKER = """
import asyncio, sys
from crmsync.webhooks import WebhookWorker
from pbx.config_crm import RetrySection, Webhook
from pbx.db import open_engine

async def main() -> None:
    hook = Webhook(name="crm", url=sys.argv[2], secret=sys.argv[3], timeout=1.0)
    worker = WebhookWorker(open_engine(sys.argv[1]), [hook],
                           RetrySection(first_delay=0.05, max_delay=0.5), per_webhook=4,
                           lease_margin=0.2)
    worker.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.asyncio
async def test_a_killed_worker_loses_nothing(tmp_path: Path, receiver: Receiver) -> None:
    """SIGKILL a PBX process mid-way through the outbox, with POSTs in flight and failures
    pending a retry: a new worker on the same database delivers every event, and the only
    duplicates are the POSTs the dead process had in flight (same idempotency key)."""
    url = f"sqlite:///{tmp_path / 'pbx.db'}"
    engine = open_engine(url)
    Base.metadata.create_all(engine)
    keys = [f"c{i}:{event}" for i in range(20) for event in ("call.started", "call.ended")]
    _queue(engine, keys)
    receiver.default = "slow"
    receiver.plan = ["500", "slow", "503"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KILLED_WORKER, url, receiver.url, SECRET, cwd=str(ROOT),
    )
    try:
        await _until(lambda: len(receiver.requests) >= 12, timeout=15.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = await asyncio.to_thread(_statuses, engine)
    assert before.get("pending", 0) > 0 and before.get("delivered", 0) > 0
    # The dead process leased its claims for the webhook timeout (1 s) plus 0.2 s: they go
    # out again once that has lapsed.
    worker = WebhookWorker(engine, [_hook(receiver.url)], _retry(), lease_margin=0.2)
    worker.start()
    try:
        await _settled(engine, lambda s: s == {"delivered": len(keys)}, timeout=15.0)
    finally:
        await worker.stop()
    assert receiver.keys() == set(keys)
    assert all(r.genuine for r in receiver.requests)
    answered = [r.key for r in receiver.requests if r.answer == "slow"]
    duplicates = len(answered) - len(set(answered))
    assert duplicates <= 4  # at most what the dead process had in flight (per_webhook)
    bodies: dict[str, bytes] = {}
    for r in receiver.requests:
        assert bodies.setdefault(r.key, r.body) == r.body  # a duplicate is the same event


@pytest.mark.asyncio
async def test_an_unreachable_receiver_is_retried(engine: Engine) -> None:
    # Bind and close a port so nothing listens there: connection refused.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    _queue(engine, ["c1:call.ended"])
    worker = WebhookWorker(engine, [_hook(f"http://127.0.0.1:{port}/x")], _retry(3))
    worker.start()
    try:
        await _settled(engine, lambda s: s == {"dead": 1})
        [row] = await worker.deliveries()
    finally:
        with contextlib.suppress(Exception):
            await worker.stop()
    assert row.last_status_code is None
    assert row.last_error is not None and row.last_error.startswith("ConnectError")
