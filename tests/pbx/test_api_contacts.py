"""Contacts and leads over the HTTP API, on a real SQLite file and a real server: create, find
by the number written another way, update, read, and the refusals (bad numbers named, unknown
ids, unknown fields, missing keys)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crmsync.models import Contact, Lead, PhoneNumber
from tests.pbx.test_api_calls import ADMIN, ALICE, SUPERVISOR, Api, api, error_of

__all__ = ["api"]  # the fixture, shared with the call tests


async def post(api: Api, path: str, body: Any, key: str | None = ADMIN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return await api.http.post(path, json=body, headers=headers)


async def patch(api: Api, path: str, body: Any, key: str | None = ADMIN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return await api.http.patch(path, json=body, headers=headers)


def count(api: Api, model: type[Contact | Lead | PhoneNumber]) -> int:
    with Session(api.seeder) as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["contact", "lead"])
async def test_create_find_by_another_form_update_and_read(api: Api, kind: str) -> None:
    created = await post(api, f"/{kind}s", {
        "first_name": "Hanako", "last_name": "Yamada", "company": "Yamada Trading",
        "email": "hanako@example.jp", "owner": "alice",
        "phones": [{"number": "03-1234-5678", "label": "work"},
                   {"number": "090-1234-5678", "label": "mobile"}],
    }, key=ALICE)
    assert created.status_code == 201, created.text
    record = created.json()
    record_id = record["id"]
    base = str(api.http.base_url).rstrip("/")
    assert created.headers["location"] == f"{base}/{kind}s/{record_id}"
    assert record["phones"] == [
        {"number": "03-1234-5678", "e164": "+81312345678", "label": "work"},
        {"number": "090-1234-5678", "e164": "+819012345678", "label": "mobile"},
    ]
    assert record["created_at"].endswith("Z") and record["owner"] == "alice"
    if kind == "lead":
        assert record["status"] == "new"

    for written in ("+81312345678", "0081312345678", "(03) 1234-5678", "+81 90 1234 5678"):
        found = await api.get(f"/{kind}s", params={"number": written}, key=ALICE)
        assert [r["id"] for r in found.json()] == [record_id], written
    assert (await api.get(f"/{kind}s", params={"number": "03-1234-0000"})).json() == []
    for text in ("yamada", "HANAKO YAMADA", "Yamada Hanako", "trading", "hanako@"):
        found = await api.get(f"/{kind}s", params={"q": text})
        assert [r["id"] for r in found.json()] == [record_id], text
    # LIKE's wildcards are plain characters in a search.
    assert (await api.get(f"/{kind}s", params={"q": "%"})).json() == []
    both = await api.get(f"/{kind}s", params={"q": "hanako", "number": "0312345678"})
    assert [r["id"] for r in both.json()] == [record_id]

    taken = await patch(api, f"/{kind}s/{record_id}", {"owner": "bob"}, key=ALICE)
    assert taken.status_code == 403 and "someone else" in taken.json()["error"]
    change: dict[str, Any] = {"last_name": "Suzuki", "owner": None,
                              "phones": [{"number": "+81 6-1111-2222", "label": "osaka"}]}
    if kind == "lead":
        change["status"] = "qualified"
    updated = await patch(api, f"/{kind}s/{record_id}", change, key=ALICE)
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert (body["first_name"], body["last_name"], body["company"], body["owner"]) == \
        ("Hanako", "Suzuki", "Yamada Trading", None)
    assert body["phones"] == [{"number": "+81 6-1111-2222", "e164": "+81611112222",
                               "label": "osaka"}]
    assert body["updated_at"] >= record["updated_at"]
    if kind == "lead":
        assert body["status"] == "qualified"
    # The old numbers are gone, the new one is found in its national form.
    assert (await api.get(f"/{kind}s", params={"number": "03-1234-5678"})).json() == []
    found = await api.get(f"/{kind}s", params={"number": "06-1111-2222"})
    assert [r["id"] for r in found.json()] == [record_id]
    read = await api.get(f"/{kind}s/{record_id}", key=SUPERVISOR)
    assert read.json() == body


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["contact", "lead"])
async def test_bad_numbers_are_refused_by_name_and_nothing_is_written(api: Api,
                                                                      kind: str) -> None:
    refused = await post(api, f"/{kind}s", {
        "first_name": "Taro",
        "phones": [{"number": "03-1234-5678"}, {"number": "12-34"}],
    })
    assert error_of(refused, 422) == "'12-34' is not a valid phone number in region JP"
    model = Contact if kind == "contact" else Lead
    assert count(api, model) == 0 and count(api, PhoneNumber) == 0
    assert error_of(await api.get(f"/{kind}s", params={"number": "call-me"}), 422) == \
        "'call-me' is not a valid phone number in region JP"
    record_id = (await post(api, f"/{kind}s", {"first_name": "Taro",
                                               "phones": [{"number": "0312345678"}]})).json()["id"]
    bad_update = await patch(api, f"/{kind}s/{record_id}", {"first_name": "Jiro",
                                                            "phones": [{"number": "999"}]})
    assert error_of(bad_update, 422) == "'999' is not a valid phone number in region JP"
    kept = (await api.get(f"/{kind}s/{record_id}")).json()
    assert kept["first_name"] == "Taro" and kept["phones"][0]["e164"] == "+81312345678"


@pytest.mark.asyncio
async def test_other_refusals(api: Api) -> None:
    contact = (await post(api, "/contacts", {"first_name": "Ann"})).json()
    assert contact["phones"] == [] and contact["owner"] is None
    assert error_of(await api.get("/contacts/nobody"), 404) == "no contact with id 'nobody'"
    assert error_of(await patch(api, "/leads/nobody", {"status": "lost"}), 404) == \
        "no lead with id 'nobody'"
    # A contact's id is not a lead's.
    assert error_of(await api.get(f"/leads/{contact['id']}"), 404).startswith("no lead")
    assert "status" in error_of(await post(api, "/contacts", {"status": "new"}), 422)
    assert "first_name" in error_of(
        await patch(api, f"/contacts/{contact['id']}", {"first_name": None}), 422)
    assert "email" in error_of(await post(api, "/contacts", {"email": "not an address"}), 422)
    assert "line breaks" in error_of(await post(api, "/leads", {"first_name": "A\r\nB"}), 422)
    assert "status" in error_of(await post(api, "/leads", {"status": ""}), 422)
    assert "JSON" in error_of(await api.http.post(
        "/contacts", content=b"{", headers={"Authorization": f"Bearer {ADMIN}",
                                            "Content-Type": "application/json"}), 422)
    assert "limit" in error_of(await api.get("/contacts", params={"limit": 0}), 422)
    assert "API key" in error_of(await post(api, "/contacts", {"first_name": "X"}, key=None),
                                 401)
    assert "API key" in error_of(await api.get("/leads", key=None), 401)
    assert count(api, Contact) == 1 and count(api, Lead) == 0


@pytest.mark.asyncio
async def test_search_without_criteria_lists_the_latest_first(api: Api) -> None:
    ids = [(await post(api, "/leads", {"first_name": f"Lead {i}"})).json()["id"]
           for i in range(5)]
    await patch(api, f"/leads/{ids[1]}", {"status": "called"})
    listed = (await api.get("/leads", params={"limit": 3})).json()
    assert [r["id"] for r in listed] == [ids[1], ids[4], ids[3]]
