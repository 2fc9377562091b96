"""The PBX's users for a CRM: listed by the API with their phones' state, and written to the
CRM store's users table, which a reload keeps in step (a user removed stays, inactive)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from tests.integration.db import rows, wait_rows
from tests.integration.pbx_process import API_KEY, USERS, run_pbx
from tests.peers.phone_driver import Phone

pytestmark = pytest.mark.integration


@pytest.mark.asyncio
async def test_users_in_the_api_and_the_store_follow_the_config(tmp_path: Path) -> None:
    with run_pbx(tmp_path) as pbx:
        stored = wait_rows(pbx.database, "SELECT * FROM users WHERE active ORDER BY id",
                           count=3)
        assert [(u["id"], u["extension"], u["name"]) for u in stored] == [
            (uid, ext, name) for uid, (ext, _pw, name) in sorted(USERS.items())]
        async with Phone.start(name="alice") as alice, \
                httpx.AsyncClient(base_url=pbx.api, headers={"X-API-Key": API_KEY},
                                  timeout=5.0) as api:
            ext, pw, _ = USERS["alice"]
            await alice.register(pbx.address, ext, pw, domain="pbx.test")
            listed = (await api.get("/users")).json()
            assert [u["id"] for u in listed] == list(USERS)
            mine = next(u for u in listed if u["id"] == "alice")
            assert (mine["extension"], mine["presence"], mine["registered"]) == (
                ext, "available", 1)
            assert (await api.get("/users/bob")).json()["registered"] == 0
            missing = await api.get("/users/nobody")
            assert missing.status_code == 404 and "no user 'nobody'" in missing.text
            assert (await api.get("/users", headers={"X-API-Key": ""})).status_code == 401
            # carol leaves the config; a reload makes her inactive in the store.
            text = pbx.config_path.read_text()
            start = text.index("  - id: carol")
            end = text.find("  - id:", start + 1)
            pbx.config_path.write_text(text[:start] + (text[end:] if end != -1 else ""))
            pbx.signal(signal.SIGHUP)
            await asyncio.to_thread(pbx.wait_log, "config reloaded")
            assert "carol" not in [u["id"] for u in (await api.get("/users")).json()]
            await alice.unregister()
        for _ in range(50):
            carol = rows(pbx.database, "SELECT active FROM users WHERE id = 'carol'")
            if carol and not carol[0]["active"]:
                break
            await asyncio.sleep(0.1)
        assert carol == [{"active": 0}]
