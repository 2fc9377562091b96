"""The PBX on PostgreSQL: started with a database URL, it brings the empty database to its
schema, and a call between two phones lands there as one record with its webhook outbox rows."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import create_engine, text

from tests.integration.pbx_process import run_pbx
from tests.integration.test_ring_groups import USERS
from tests.integration.test_sipp_calls import SIPP_AUTH
from tests.peers.phone_driver import Phone
from tests.postgres import postgres_server

pytestmark = pytest.mark.integration

CRM = """\
crm:
  webhooks:
    - {name: crm, url: "http://127.0.0.1:9/hooks", secret: webhook-secret-0123456789}
"""


@pytest.mark.asyncio
async def test_a_call_is_recorded_in_postgresql(tmp_path_factory: pytest.TempPathFactory
                                                ) -> None:
    with postgres_server() as server:
        url = server.create_database("pbx")
        with run_pbx(tmp_path_factory.mktemp("pg"), SIPP_AUTH, users=USERS, extra_top=CRM,
                     database=url) as pbx:
            async with Phone.start(name="alice") as alice, Phone.start(name="bob") as bob:
                for phone, user in ((alice, "alice"), (bob, "bob")):
                    ext, pw, _ = USERS[user]
                    await phone.register(pbx.address, ext, pw, domain="pbx.test")
                await alice.dial(f"sip:102@{pbx.address}")
                await bob.wait_for("incoming", timeout=10)
                await bob.answer()
                await alice.wait_for("established", timeout=10)
                await asyncio.sleep(0.5)
                await alice.hangup()
                await bob.wait_for("closed", timeout=10)
            engine = create_engine(url)
            deadline = time.monotonic() + 10
            rows: list[object] = []
            while time.monotonic() < deadline and not rows:
                with engine.connect() as conn:
                    rows = list(conn.execute(text(
                        "SELECT caller_user, answered_by, disposition, duration FROM calls "
                        "WHERE ended_at IS NOT NULL")))
                await asyncio.sleep(0.2)
            with engine.connect() as conn:
                version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                events = sorted(r[0] for r in conn.execute(text(
                    "SELECT event FROM outbox")))
            engine.dispose()
    assert len(rows) == 1
    caller, answered_by, disposition, duration = rows[0]  # type: ignore[misc]
    assert (caller, answered_by, disposition) == ("alice", "bob", "answered") and duration > 0
    assert version is not None
    assert events == ["call.answered", "call.ended", "call.started"]
