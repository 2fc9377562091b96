"""Live call events for screen pops: what the PBX tells subscribers of the event stream.

Every call-record event (:mod:`pbx.records`) becomes a small JSON-able event: ``call.ringing``
when a call starts, ``call.answered``, ``call.ended``, plus the queue's result. Each carries
the CRM record the caller's number matched (contact first, then lead), looked up once per call
in a worker thread, so a CRM page can pop the record while the phone still rings. A caller the
CRM does not know can become a lead when ``crm.create_leads`` says so.

:class:`EventHub` fans events out to subscribers (WebSocket connections, see
:mod:`pbx.api_events`) through bounded queues: a subscriber that cannot keep up loses its oldest
events (and is told how many), never slows the call path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .queueviews import CallerRecord
from .records import CallAnswered, CallEnded, CallEvent, CallQueued, CallStarted

logger = logging.getLogger(__name__)

Event = dict[str, Any]
#: Events kept per subscriber before the oldest are dropped.
QUEUE_DEPTH = 1000


@dataclass(eq=False)
class Subscriber:
    """One listener: its own queue and what it may see (``user``: only calls of that user
    and calls not yet given to anyone, for an agent's key; None: everything)."""

    user: str | None
    queue: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(QUEUE_DEPTH))
    dropped: int = 0
    shown: set[str] = field(default_factory=set)
    """Calls this agent has been told of and not yet told the end of: the rest of their
    events come too (another agent answering closes this agent's screen pop)."""

    def take(self, event: Event) -> None:
        """Deliver ``event`` (meant for this subscriber) and hear the rest of its call."""
        call_id = event.get("call_id")
        if self.user is not None and isinstance(call_id, str):
            self.shown.add(call_id)
        self._put(event)

    def offer(self, event: Event) -> None:
        if self.user is not None:
            call_id = event.get("call_id")
            parties = {event.get("caller_user"), event.get("callee_user"),
                       event.get("answered_by")} - {None}
            if parties and self.user not in parties and call_id not in self.shown:
                return
            if isinstance(call_id, str):
                if event.get("event") == "call.ended":
                    self.shown.discard(call_id)
                else:
                    self.shown.add(call_id)
        self._put(event)

    def _put(self, event: Event) -> None:
        while self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)


class EventHub:
    """Turns call-record events into live events for subscribers (see the module)."""

    def __init__(self, lookup: Callable[[str], CallerRecord | None] | None = None,
                 create_lead: Callable[[str, str], CallerRecord | None] | None = None) -> None:
        self._subscribers: set[Subscriber] = set()
        self._calls: dict[str, Event] = {}
        self._waiting: dict[str, list[str]] = {}
        """Calls whose CRM look-up is still running, with the users offered them meanwhile
        (their ``call.offered`` goes out with the match)."""
        self._lookup = lookup
        self._create_lead = create_lead
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="screen-pop")

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self, user: str | None) -> Subscriber:
        sub = Subscriber(user)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- from the call path (never blocks) ----------------------------------------------------
    def on_record(self, event: CallEvent) -> None:
        """A call-record event: publish it (after the caller's CRM look-up for a new call)."""
        if not self._subscribers and self._create_lead is None:
            return  # nobody listens: no look-ups, no work
        if isinstance(event, CallStarted):
            call: Event = {
                "call_id": event.call_id, "direction": event.direction,
                "from_number": event.from_number, "from_name": event.from_name,
                "to_number": event.to_number, "caller_user": event.caller_user,
                "callee_user": event.callee_user, "answered_by": None, "crm": None,
                "started_at": _iso(event.started_at),
            }
            self._calls[event.call_id] = call
            if self._lookup is not None and event.direction == "inbound":
                self._waiting[event.call_id] = []
                self._look_up(call)
            else:
                self._publish("call.ringing", call)
            return
        known = self._calls.get(event.call_id)
        if known is None:
            return
        call = known
        if isinstance(event, CallAnswered):
            call["answered_by"] = event.answered_by
            call["answered_at"] = _iso(event.answered_at)
            self._publish("call.answered", call)
        elif isinstance(event, CallQueued):
            call["queue"] = event.queue
            call["queue_result"] = event.result
            call["queue_wait"] = event.waited
            if event.agent is not None:
                call["answered_by"] = event.agent
            self._publish("call.queued", call)
        elif isinstance(event, CallEnded):
            call["ended_at"] = _iso(event.ended_at)
            call["disposition"] = event.disposition
            call["duration"] = event.duration
            self._publish("call.ended", call)
            self._calls.pop(event.call_id, None)
            self._waiting.pop(event.call_id, None)

    def offered(self, call_id: str, user: str) -> None:
        """``user``'s phones start ringing for the call (directly, in a ring group, as a
        queue's offer): ``call.offered`` to that user's agent keys (and supervisors), with the
        CRM match once the look-up has it. A CRM page pops on this one, not on every
        ``call.ringing`` of calls nobody has been given yet."""
        call = self._calls.get(call_id)
        if call is None or not self._subscribers:
            return
        waiting = self._waiting.get(call_id)
        if waiting is not None:
            waiting.append(user)  # sent when the look-up is done
            return
        self._offer(call, user)

    def _offer(self, call: Event, user: str) -> None:
        event = {"event": "call.offered", **call, "offered_to": user}
        for sub in list(self._subscribers):
            if sub.user is None or sub.user == user:
                sub.take(event)

    def _look_up(self, call: Event) -> None:
        loop = asyncio.get_running_loop()
        number = str(call["from_number"])
        name = str(call["from_name"])

        def work() -> CallerRecord | None:
            assert self._lookup is not None
            found = self._lookup(number)
            if found is None and self._create_lead is not None:
                found = self._create_lead(number, name)
            return found

        future = loop.run_in_executor(self._pool, work)

        def done(f: asyncio.Future[CallerRecord | None]) -> None:
            if not f.cancelled() and f.exception() is None:
                match = f.result()
                if match is not None:
                    call["crm"] = {"kind": match.kind, "id": match.record_id,
                                   "name": match.name, "owner": match.owner}
            elif not f.cancelled():
                logger.warning("screen pop: look-up of %s failed: %s", number, f.exception())
            offered = self._waiting.pop(str(call["call_id"]), [])
            self._publish("call.ringing", call)
            for user in offered:
                self._offer(call, user)

        future.add_done_callback(done)

    def notify(self, event: Event) -> None:
        """An event for supervisors and admins (the recording quota reached, say)."""
        for sub in list(self._subscribers):
            if sub.user is None:
                sub.offer(event)

    def reminder(self, scheduled: Any) -> None:
        """A scheduled call's reminder is due: tell its owner (and supervisors)."""
        event: Event = {
            "event": "call.reminder", "scheduled_call_id": scheduled.id,
            "subject": scheduled.subject, "number": scheduled.number,
            "direction": scheduled.direction, "owner": scheduled.owner,
            "callee_user": scheduled.owner,  # so that only the owner's agent key hears it
            "start_at": _iso(scheduled.start_at),
            "record_kind": scheduled.record_kind, "record_id": scheduled.record_id,
        }
        logger.info("reminder for %s: call %s at %s", scheduled.owner, scheduled.number,
                    event["start_at"])
        for sub in list(self._subscribers):
            sub.offer(event)

    def _publish(self, kind: str, call: Event) -> None:
        event = {"event": kind, **call}
        for sub in list(self._subscribers):
            sub.offer(event)


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds") + "Z"
