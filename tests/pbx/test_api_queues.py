"""The HTTP API for the call queues, over real HTTP on a loopback port: authentication and
roles, every queue and agent endpoint, the JSON error answers, the OpenAPI document, and the
embedded server's start, bind failure and stop.

The queues behind the API are a small in-memory :class:`QueueControl` (the real queue manager
has its own tests); it refuses what the real one refuses: unknown names, busy agents, paused
agents pausing again, a move to the same queue.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
import pytest_asyncio

from pbx.acd import IntervalFigures, LiveFigures
from pbx.api import create_app
from pbx.config_http import ApiKey
from pbx.httpserver import HttpServer
from pbx.queueviews import (
    AgentView,
    QueueControlError,
    QueueNotFound,
    QueueView,
    WaitingCall,
)

ADMIN = "admin-key-0123456789abcdef"
SUPERVISOR = "supervisor-key-0123456789"
ALICE = "alice-agent-key-0123456789"
STATES = ("available", "ringing", "on_call", "wrap_up", "paused", "offline")


def _call(call_id: str, queue: str, number: str, waited: float) -> WaitingCall:
    return WaitingCall(
        call_id=call_id, queue=queue, position=0, caller_number=number, caller_name="",
        crm_kind=None, crm_id=None, crm_name=None, crm_owner=None, waited=waited,
        callback=False, callback_number=None, offered_to=(), rule=None,
    )


@dataclass
class MemoryQueues:
    """Two queues (support, sales) and three agents, held in memory."""

    waiting_lists: dict[str, list[WaitingCall]] = field(default_factory=lambda: {
        "support": [
            replace(_call("call-1", "support", "+15550001", 42.5), caller_name="Ann Lee",
                    crm_kind="contact", crm_id="c-17", crm_name="Ann Lee", crm_owner="bob",
                    offered_to=("alice",), rule="vip"),
            _call("call-2", "support", "+15550002", 12.0),
        ],
        "sales": [],
    })
    agent_views: dict[str, AgentView] = field(default_factory=lambda: {
        user: AgentView(user_id=user, name=user.title(), extension=ext, state="available",
                        paused_reason=None, since=5.0, calls_today=0, queues=queues,
                        registered=True)
        for user, ext, queues in (("alice", "101", ("support",)),
                                  ("bob", "102", ("support", "sales")),
                                  ("carol", "103", ("sales",)))
    })
    threads: set[int] = field(default_factory=set)
    """The threads the API called in from: must be the event loop's only."""

    def _seen(self) -> None:
        self.threads.add(threading.get_ident())

    def _line(self, name: str) -> list[WaitingCall]:
        if name not in self.waiting_lists:
            raise QueueNotFound(f'no queue "{name}"')
        return self.waiting_lists[name]

    def _view(self, name: str) -> QueueView:
        line = self._line(name)
        states = dict.fromkeys(STATES, 0)
        for agent in self.agent_views.values():
            if name in agent.queues:
                states[agent.state] += 1
        return QueueView(
            name=name, strategy="longest_idle", max_callers=25, max_wait=1500.0,
            live=LiveFigures(waiting=len(line),
                             longest_wait=max((c.waited for c in line), default=0.0),
                             agents=states),
            interval=IntervalFigures(start=100.0, end=160.0, offered=3, answered=1,
                                     abandoned=0, abandoned_wait=0.0, overflowed=0,
                                     average_speed_of_answer=8.0, service_level=None),
        )

    def queues(self) -> list[QueueView]:
        self._seen()
        return [self._view(name) for name in self.waiting_lists]

    def queue(self, name: str) -> QueueView:
        self._seen()
        return self._view(name)

    def waiting(self, name: str) -> list[WaitingCall]:
        self._seen()
        return [replace(c, position=i) for i, c in enumerate(self._line(name), start=1)]

    def _waiting_call(self, name: str, call_id: str) -> WaitingCall:
        for waiting in self._line(name):
            if waiting.call_id == call_id:
                return waiting
        raise QueueNotFound(f'no call "{call_id}" waiting in queue "{name}"')

    def pick(self, name: str, call_id: str, agent: str) -> None:
        self._seen()
        waiting = self._waiting_call(name, call_id)
        view = self.agent(agent)
        if view.state != "available":
            raise QueueControlError(f'{agent} cannot take a call: {view.state}')
        self.waiting_lists[name].remove(waiting)
        self.agent_views[agent] = replace(view, state="on_call", since=0.0)

    def move(self, name: str, call_id: str, to_queue: str) -> None:
        self._seen()
        waiting = self._waiting_call(name, call_id)
        target = self._line(to_queue)
        if to_queue == name:
            raise QueueControlError(f'call "{call_id}" already waits in queue "{name}"')
        self.waiting_lists[name].remove(waiting)
        target.append(replace(waiting, queue=to_queue))

    def agents(self) -> list[AgentView]:
        self._seen()
        return list(self.agent_views.values())

    def agent(self, user_id: str) -> AgentView:
        self._seen()
        if user_id not in self.agent_views:
            raise QueueNotFound(f'no agent "{user_id}"')
        return self.agent_views[user_id]

    def _set(self, user_id: str, state: str, reason: str | None = None) -> AgentView:
        view = replace(self.agent(user_id), state=state, paused_reason=reason, since=0.0)
        self.agent_views[user_id] = view
        return view

    def login(self, user_id: str) -> AgentView:
        return self._set(user_id, "available")

    def logout(self, user_id: str) -> AgentView:
        return self._set(user_id, "offline")

    def pause(self, user_id: str, reason: str) -> AgentView:
        state = self.agent(user_id).state
        if state in ("paused", "offline"):
            raise QueueControlError(f"{user_id} is {state}")
        return self._set(user_id, "paused", reason)

    def unpause(self, user_id: str) -> AgentView:
        if self.agent(user_id).state != "paused":
            raise QueueControlError(f"{user_id} is not paused")
        return self._set(user_id, "available")


@dataclass
class Api:
    queues: MemoryQueues
    keys: list[ApiKey]
    server: HttpServer
    http: httpx.AsyncClient

    async def get(self, path: str, key: str | None = ADMIN) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return await self.http.get(path, headers=headers)

    async def post(self, path: str, key: str | None = ADMIN, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return await self.http.post(path, headers=headers, **kwargs)


def _keys() -> list[ApiKey]:
    return [
        ApiKey(name="crm", key=ADMIN),
        ApiKey(name="wallboard", key=SUPERVISOR, role="supervisor"),
        ApiKey(name="alice-phone", key=ALICE, role="agent", user="alice"),
    ]


@pytest_asyncio.fixture
async def api() -> AsyncIterator[Api]:
    queues = MemoryQueues()
    keys = _keys()
    server = HttpServer(create_app(queues, lambda: keys), "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}/api/v1",
                                     timeout=5.0) as http:
            yield Api(queues, keys, server, http)
    finally:
        await server.stop()
    assert queues.threads <= {threading.get_ident()}


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and body["error"]
    return str(body["error"])


# --- authentication ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_health_answers_without_a_key(api: Api) -> None:
    response = await api.get("/health", key=None)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.asyncio
async def test_no_key_or_an_unknown_key_is_401_with_a_reason(api: Api) -> None:
    missing = await api.get("/queues", key=None)
    assert "API key is required" in error_of(missing, 401)
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert error_of(await api.get("/queues", key="not-a-key-0123456789"), 401) == \
        "unknown API key"
    basic = await api.http.get("/queues", headers={"Authorization": "Basic YTpi"})
    assert "Bearer" in error_of(basic, 401)
    both = await api.http.get("/queues", headers={"Authorization": f"Bearer {ADMIN}",
                                                  "X-API-Key": SUPERVISOR})
    assert "different keys" in error_of(both, 401)
    # Nothing was asked of the queues on behalf of a refused request.
    assert api.queues.threads == set()


@pytest.mark.asyncio
async def test_both_header_forms_authenticate(api: Api) -> None:
    bearer = await api.http.get("/queues", headers={"Authorization": f"Bearer {SUPERVISOR}"})
    header = await api.http.get("/queues", headers={"X-API-Key": SUPERVISOR})
    lower = await api.http.get("/queues", headers={"authorization": f"bearer {SUPERVISOR}"})
    assert bearer.status_code == header.status_code == lower.status_code == 200
    assert bearer.json() == header.json() == lower.json()


@pytest.mark.asyncio
async def test_a_reload_changes_the_keys_at_once(api: Api) -> None:
    api.keys[:] = [ApiKey(name="new", key="fresh-key-after-reload-42")]
    assert error_of(await api.get("/queues"), 401) == "unknown API key"
    assert (await api.get("/queues", key="fresh-key-after-reload-42")).status_code == 200


# --- queues ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_queues_list_with_live_and_interval_figures(api: Api) -> None:
    response = await api.get("/queues", key=ALICE)
    assert response.status_code == 200
    support, sales = response.json()
    assert support == {
        "name": "support", "strategy": "longest_idle", "max_callers": 25, "max_wait": 1500.0,
        "live": {"waiting": 2, "longest_wait": 42.5,
                 "agents": {"available": 2, "ringing": 0, "on_call": 0, "wrap_up": 0,
                            "paused": 0, "offline": 0}},
        "interval": {"start": 100.0, "end": 160.0, "offered": 3, "answered": 1,
                     "abandoned": 0, "abandoned_wait": 0.0, "overflowed": 0,
                     "average_speed_of_answer": 8.0, "service_level": None},
    }
    assert sales["name"] == "sales" and sales["live"]["waiting"] == 0


@pytest.mark.asyncio
async def test_one_queue_and_an_unknown_one(api: Api) -> None:
    response = await api.get("/queues/sales")
    assert response.status_code == 200
    assert response.json()["live"]["agents"]["available"] == 2
    assert error_of(await api.get("/queues/billing"), 404) == 'no queue "billing"'


@pytest.mark.asyncio
async def test_waiting_list_in_order_with_the_crm_match(api: Api) -> None:
    response = await api.get("/queues/support/calls", key=ALICE)
    assert response.status_code == 200
    first, second = response.json()
    assert first == {
        "call_id": "call-1", "queue": "support", "position": 1,
        "caller_number": "+15550001", "caller_name": "Ann Lee", "crm_kind": "contact",
        "crm_id": "c-17", "crm_name": "Ann Lee", "crm_owner": "bob", "waited": 42.5,
        "callback": False, "callback_number": None, "offered_to": ["alice"], "rule": "vip",
    }
    assert (second["call_id"], second["position"], second["crm_kind"]) == ("call-2", 2, None)
    assert error_of(await api.get("/queues/billing/calls"), 404) == 'no queue "billing"'


@pytest.mark.asyncio
async def test_a_supervisor_picks_a_caller_for_an_agent(api: Api) -> None:
    response = await api.post("/queues/support/calls/call-2/pick", key=SUPERVISOR,
                              json={"agent": "bob"})
    assert response.status_code == 200
    assert response.json() == {"queue": "support", "call_id": "call-2", "agent": "bob"}
    calls = (await api.get("/queues/support/calls")).json()
    assert [c["call_id"] for c in calls] == ["call-1"]
    assert (await api.get("/agents/bob")).json()["state"] == "on_call"
    # Bob is on that call now: the queues refuse to give him another.
    busy = await api.post("/queues/support/calls/call-1/pick", json={"agent": "bob"})
    assert error_of(busy, 409) == "bob cannot take a call: on_call"


@pytest.mark.asyncio
async def test_pick_of_unknown_call_queue_or_agent_is_404(api: Api) -> None:
    assert "call-9" in error_of(
        await api.post("/queues/support/calls/call-9/pick", json={"agent": "bob"}), 404)
    assert "billing" in error_of(
        await api.post("/queues/billing/calls/call-1/pick", json={"agent": "bob"}), 404)
    assert error_of(await api.post("/queues/support/calls/call-1/pick", json={"agent": "dan"}),
                    404) == 'no agent "dan"'


@pytest.mark.asyncio
async def test_an_agent_key_picks_for_its_own_user_only(api: Api) -> None:
    other = await api.post("/queues/support/calls/call-1/pick", key=ALICE, json={"agent": "bob"})
    assert 'acts for user "alice" only' in error_of(other, 403)
    assert (await api.get("/agents/bob")).json()["state"] == "available"
    own = await api.post("/queues/support/calls/call-1/pick", key=ALICE)
    assert own.status_code == 200
    assert own.json() == {"queue": "support", "call_id": "call-1", "agent": "alice"}


@pytest.mark.asyncio
async def test_a_key_without_a_user_must_name_the_agent(api: Api) -> None:
    response = await api.post("/queues/support/calls/call-1/pick", key=ADMIN, json={})
    assert "agent" in error_of(response, 400)
    assert len((await api.get("/queues/support/calls")).json()) == 2


@pytest.mark.asyncio
async def test_a_supervisor_moves_a_caller_to_the_end_of_another_line(api: Api) -> None:
    api.queues.waiting_lists["sales"].append(_call("call-7", "sales", "+15550007", 3.0))
    response = await api.post("/queues/support/calls/call-1/move", key=SUPERVISOR,
                              json={"queue": "sales"})
    assert response.status_code == 200
    assert response.json() == {"call_id": "call-1", "from_queue": "support", "queue": "sales"}
    sales = (await api.get("/queues/sales/calls")).json()
    assert [(c["call_id"], c["position"], c["queue"]) for c in sales] == [
        ("call-7", 1, "sales"), ("call-1", 2, "sales"),
    ]


@pytest.mark.asyncio
async def test_move_refusals(api: Api) -> None:
    agent = await api.post("/queues/support/calls/call-1/move", key=ALICE,
                           json={"queue": "sales"})
    assert "supervisor or admin" in error_of(agent, 403)
    assert error_of(await api.post("/queues/support/calls/call-1/move",
                                   json={"queue": "billing"}), 404) == 'no queue "billing"'
    assert "already waits" in error_of(
        await api.post("/queues/support/calls/call-1/move", json={"queue": "support"}), 409)
    assert "queue" in error_of(await api.post("/queues/support/calls/call-1/move", json={}), 422)
    assert [c["call_id"] for c in (await api.get("/queues/support/calls")).json()] == [
        "call-1", "call-2",
    ]


# --- agents ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_agents_list_and_one_agent(api: Api) -> None:
    response = await api.get("/agents", key=SUPERVISOR)
    assert response.status_code == 200
    assert [a["user_id"] for a in response.json()] == ["alice", "bob", "carol"]
    assert response.json()[1] == {
        "user_id": "bob", "name": "Bob", "extension": "102", "state": "available",
        "paused_reason": None, "since": 5.0, "calls_today": 0, "queues": ["support", "sales"],
        "registered": True,
    }
    assert (await api.get("/agents/carol")).json()["extension"] == "103"
    assert error_of(await api.get("/agents/dan"), 404) == 'no agent "dan"'


@pytest.mark.asyncio
async def test_an_agent_key_reads_its_own_agent_only(api: Api) -> None:
    own = await api.get("/agents/alice", key=ALICE)
    assert own.status_code == 200 and own.json()["user_id"] == "alice"
    error_of(await api.get("/agents/bob", key=ALICE), 403)
    error_of(await api.get("/agents", key=ALICE), 403)


@pytest.mark.asyncio
async def test_login_logout_pause_unpause(api: Api) -> None:
    out = await api.post("/agents/alice/logout", key=ALICE)
    assert out.status_code == 200 and out.json()["state"] == "offline"
    assert error_of(await api.post("/agents/alice/pause", key=ALICE, json={"reason": "lunch"}),
                    409) == "alice is offline"
    back = await api.post("/agents/alice/login", key=ALICE)
    assert back.status_code == 200 and back.json()["state"] == "available"
    paused = await api.post("/agents/alice/pause", key=ALICE, json={"reason": " lunch "})
    assert paused.status_code == 200
    assert (paused.json()["state"], paused.json()["paused_reason"]) == ("paused", "lunch")
    assert (await api.get("/agents/alice", key=SUPERVISOR)).json()["paused_reason"] == "lunch"
    resumed = await api.post("/agents/alice/unpause", key=ALICE)
    assert resumed.status_code == 200
    assert (resumed.json()["state"], resumed.json()["paused_reason"]) == ("available", None)
    assert error_of(await api.post("/agents/alice/unpause"), 409) == "alice is not paused"
    assert error_of(await api.post("/agents/dan/login"), 404) == 'no agent "dan"'


@pytest.mark.asyncio
async def test_an_agent_key_acting_on_another_agent_is_403(api: Api) -> None:
    for action, body in (("login", None), ("logout", None), ("unpause", None),
                         ("pause", {"reason": "lunch"})):
        reason = error_of(await api.post(f"/agents/bob/{action}", key=ALICE, json=body), 403)
        assert 'may not' in reason and '"bob"' in reason
    assert api.queues.agent_views["bob"].state == "available"
    # A supervisor may act on anyone.
    done = await api.post("/agents/bob/pause", key=SUPERVISOR, json={"reason": "coaching"})
    assert done.json()["state"] == "paused"


@pytest.mark.asyncio
async def test_bad_pause_bodies_are_422_with_a_reason(api: Api) -> None:
    path = "/agents/alice/pause"
    assert error_of(await api.post(path), 422) == "a JSON body is required"
    assert error_of(await api.post(path, json={}), 422) == "reason: Field required"
    assert "at least 1 character" in error_of(await api.post(path, json={"reason": ""}), 422)
    assert "reason must not be blank" in error_of(
        await api.post(path, json={"reason": "   "}), 422)
    assert "at most 100 characters" in error_of(
        await api.post(path, json={"reason": "x" * 101}), 422)
    assert "line breaks" in error_of(await api.post(path, json={"reason": "a\nb"}), 422)
    assert error_of(await api.post(path, json={"reason": "lunch", "until": "13:00"}),
                    422) == "until: Extra inputs are not permitted"
    assert "not valid JSON" in error_of(
        await api.http.post(path, content=b"{reason", headers={
            "Content-Type": "application/json", "X-API-Key": ADMIN}), 422)
    assert api.queues.agent_views["alice"].state == "available"


# --- the document and the server -------------------------------------------------------------


@pytest.mark.asyncio
async def test_openapi_document_lists_the_paths_and_the_key_schemes(api: Api) -> None:
    response = await api.get("/openapi.json", key=None)
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/api/v1/health", "/api/v1/queues", "/api/v1/queues/{name}",
        "/api/v1/queues/{name}/calls", "/api/v1/queues/{name}/calls/{call_id}/pick",
        "/api/v1/queues/{name}/calls/{call_id}/move", "/api/v1/agents",
        "/api/v1/agents/{user_id}", "/api/v1/agents/{user_id}/login",
        "/api/v1/agents/{user_id}/logout", "/api/v1/agents/{user_id}/pause",
        "/api/v1/agents/{user_id}/unpause",
    }
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert schemes["apiKey"] == {**schemes["apiKey"], "in": "header", "name": "X-API-Key"}
    pause = document["paths"]["/api/v1/agents/{user_id}/pause"]["post"]
    assert {"401", "403", "404", "409", "422"} <= set(pause["responses"])
    queue = document["components"]["schemas"]["Queue"]
    assert queue["properties"]["max_wait"]["type"] == "number"
    assert "security" not in document["paths"]["/api/v1/health"]["get"]
    docs = await api.get("/docs", key=None)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


@pytest.mark.asyncio
async def test_unknown_path_is_404_json(api: Api) -> None:
    assert error_of(await api.get("/nothing-here"), 404) == "Not Found"
    assert error_of(await api.http.delete("/queues", headers={"X-API-Key": ADMIN}),
                    405) == "Method Not Allowed"


@pytest.mark.asyncio
async def test_server_binds_a_free_port_keeps_signal_handlers_and_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    server = HttpServer(create_app(MemoryQueues(), list), "127.0.0.1", 0)
    await server.start()
    try:
        assert server.running and server.port > 0
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
        async with httpx.AsyncClient(timeout=5.0) as http:
            health = await http.get(f"http://127.0.0.1:{server.port}/api/v1/health")
            assert health.json() == {"status": "ok"}
    finally:
        await server.stop()
    assert not server.running
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(loop.sock_connect(probe, ("127.0.0.1", server.port)), 5.0)


@pytest.mark.asyncio
async def test_a_taken_port_is_an_oserror_naming_the_address() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = HttpServer(create_app(MemoryQueues(), list), "127.0.0.1", port)
        with pytest.raises(OSError, match=f"cannot listen for HTTP on 127.0.0.1:{port}"):
            await server.start()
        assert not server.running
        await server.stop()  # a no-op on a server that never started


class BrokenQueues(MemoryQueues):
    def queues(self) -> list[QueueView]:
        raise RuntimeError("queue manager bug")


@pytest.mark.asyncio
async def test_a_failing_queue_manager_is_a_500_and_the_server_goes_on() -> None:
    server = HttpServer(create_app(BrokenQueues(), _keys), "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}/api/v1",
                                     headers={"X-API-Key": ADMIN}, timeout=5.0) as http:
            assert error_of(await http.get("/queues"), 500) == "internal error"
            assert (await http.get("/queues/support")).status_code == 200
    finally:
        await server.stop()
