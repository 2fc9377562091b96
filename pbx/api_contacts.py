"""The CRM's contacts and leads in the HTTP API: create, update, read, and search by number
(any form: ``03-1234-5678``, ``+81312345678`` and ``0081312345678`` find the same record) or
by name. Every key may use them.

Also what the CRM routers share (:mod:`pbx.api_calls` is the other): the
:class:`~pbx.crmcontrol.CrmControl` dependency, its errors as HTTP answers, and UTC times.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pbx.api_base import ERRORS, AuthCaller, Caller, Error
from pbx.crmcontrol import CrmControl, CrmRequestError, RecordKind

__all__ = [
    "Contact", "ContactCreate", "ContactUpdate", "Crm", "Lead", "LeadCreate", "LeadUpdate",
    "Phone", "PhoneIn", "UtcDatetime", "answer", "crm_control", "router",
]

_T = TypeVar("_T")
_VIEW = ConfigDict(from_attributes=True, frozen=True)
_INPUT = ConfigDict(extra="forbid", frozen=True)

Responses = dict[int | str, dict[str, Any]]

NOT_FOUND: Responses = {404: {"model": Error, "description": "No record with this id"}}
INVALID: Responses = {
    422: {"model": Error, "description": "A malformed parameter or body, or an invalid phone "
                                         "number (named in the reason)"},
}


async def crm_control(request: Request) -> CrmControl:
    """Dependency: the CRM store of the app (see :func:`pbx.api_calls.include_crm`)."""
    crm = getattr(request.app.state, "crm", None)
    if not isinstance(crm, CrmControl):
        raise RuntimeError("the app has no CRM store: include it with pbx.api_calls.include_crm")
    return crm


Crm = Annotated[CrmControl, Depends(crm_control)]


async def answer(pending: Awaitable[_T]) -> _T:
    """``await pending``, with a refusal of the CRM store as the HTTP error it names."""
    try:
        return await pending
    except CrmRequestError as exc:
        raise HTTPException(exc.status_code, str(exc)) from None


def _as_utc(value: datetime) -> datetime:
    # The store keeps naive UTC times; say so on the wire ("...Z").
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
"""A time in UTC (ISO 8601 ending in ``Z`` in JSON)."""


class PhoneIn(BaseModel):
    """A phone number of a contact or lead, in any form a person would write it."""

    model_config = _INPUT

    number: str = Field(min_length=1, max_length=64, examples=["03-1234-5678"])
    label: str = Field(default="", max_length=32, examples=["work"])


class Phone(BaseModel):
    """A phone number as written, and in E.164 as searches compare it."""

    model_config = _VIEW

    number: str = Field(examples=["03-1234-5678"])
    e164: str = Field(examples=["+81312345678"])
    label: str


class ContactCreate(BaseModel):
    """A new contact; numbers are checked and kept in E.164 beside the written form."""

    model_config = _INPUT

    first_name: str = Field(default="", max_length=255)
    last_name: str = Field(default="", max_length=255)
    company: str = Field(default="", max_length=255)
    email: str = Field(default="", max_length=320)
    owner: str | None = Field(default=None, max_length=64,
                              description="User id of the agent who owns the record.")
    phones: list[PhoneIn] = Field(default_factory=list, max_length=50)


class ContactUpdate(ContactCreate):
    """Changes to a contact: only the fields given change; ``phones`` replaces every number,
    ``owner: null`` takes the record from its owner."""


class LeadCreate(ContactCreate):
    """A new lead: a contact's fields and a status."""

    status: str = Field(default="new", min_length=1, max_length=32, examples=["new"])


class LeadUpdate(LeadCreate):
    """Changes to a lead: only the fields given change, as for a contact."""


class Contact(BaseModel):
    """A contact with its phone numbers."""

    model_config = _VIEW

    id: str
    first_name: str
    last_name: str
    company: str
    email: str
    owner: str | None
    phones: list[Phone]
    created_at: UtcDatetime
    updated_at: UtcDatetime


class Lead(Contact):
    """A lead: a contact's fields and a status."""

    status: str


def _values(body: ContactCreate, *, given_only: bool) -> dict[str, object]:
    names = body.model_fields_set if given_only else set(type(body).model_fields)
    values: dict[str, object] = {}
    for name in names:
        values[name] = getattr(body, name)
    if isinstance(phones := values.get("phones"), list):
        values["phones"] = [(phone.number, phone.label) for phone in phones]
    return values


router = APIRouter(responses={**ERRORS, **INVALID})
"""The contact and lead endpoints, to include under ``/api/v1``."""

Number = Annotated[str | None, Query(
    min_length=1, max_length=64, examples=["03-1234-5678"],
    description="A phone number in any form (national, +E.164, 00-prefixed).")]
Text = Annotated[str | None, Query(
    min_length=1, max_length=100,
    description="Part of the first or last name, the full name, the company or the email "
                "(any case).")]
Limit = Annotated[int, Query(ge=1, le=500, description="At most this many records.")]
RecordId = Annotated[str, Path(max_length=64)]


async def _owner_allowed(caller: Caller, body: ContactCreate, crm: CrmControl | None = None,
                         kind: RecordKind = "contact", record_id: str | None = None) -> None:
    """The owner decides whose queue calls a customer's calls become (assignment rules): an
    agent's key may own a record nobody else owns, or give up its own, nothing more."""
    if caller.supervises or "owner" not in body.model_fields_set:
        return
    allowed = body.owner in (None, caller.user)
    if allowed and crm is not None and record_id is not None:
        current = await answer(crm.get_record(kind, record_id))
        allowed = getattr(current, "owner", None) in (None, caller.user)
    if not allowed:
        raise HTTPException(403, f'key "{caller.key_name}" (role {caller.role}) may not give '
                                 "a record to someone else or take it from its owner; that "
                                 "needs a supervisor or admin key")


async def _create(crm: CrmControl, kind: RecordKind, body: ContactCreate, request: Request,
                  response: Response) -> object:
    record = await answer(crm.create_record(kind, _values(body, given_only=False)))
    location = request.url_for(f"get_{kind}", **{f"{kind}_id": str(getattr(record, "id", ""))})
    response.headers["Location"] = str(location)
    return record


@router.post("/contacts", status_code=201, tags=["contacts"], summary="Create a contact")
async def create_contact(body: ContactCreate, caller: AuthCaller, crm: Crm, request: Request,
                         response: Response) -> Contact:
    """The new contact, with its numbers in E.164; 422 names a number that is not one."""
    await _owner_allowed(caller, body)
    return Contact.model_validate(await _create(crm, "contact", body, request, response))


@router.get("/contacts", tags=["contacts"], summary="Search contacts")
async def search_contacts(caller: AuthCaller, crm: Crm, number: Number = None,
                          q: Text = None, limit: Limit = 50) -> list[Contact]:
    """Contacts with the number and/or matching the text, most recently updated first (with
    neither, the most recently updated contacts)."""
    found = await answer(crm.search_records("contact", number=number, q=q, limit=limit))
    return [Contact.model_validate(record) for record in found]


@router.get("/contacts/{contact_id}", tags=["contacts"], summary="One contact",
            responses=NOT_FOUND)
async def get_contact(contact_id: RecordId, caller: AuthCaller, crm: Crm) -> Contact:
    """The contact with its numbers."""
    return Contact.model_validate(await answer(crm.get_record("contact", contact_id)))


@router.patch("/contacts/{contact_id}", tags=["contacts"], summary="Update a contact",
              responses=NOT_FOUND)
async def update_contact(contact_id: RecordId, body: ContactUpdate, caller: AuthCaller,
                         crm: Crm) -> Contact:
    """Change the fields given; ``phones`` replaces the contact's numbers."""
    await _owner_allowed(caller, body, crm, "contact", contact_id)
    record = await answer(crm.update_record("contact", contact_id,
                                            _values(body, given_only=True)))
    return Contact.model_validate(record)


@router.post("/leads", status_code=201, tags=["leads"], summary="Create a lead")
async def create_lead(body: LeadCreate, caller: AuthCaller, crm: Crm, request: Request,
                      response: Response) -> Lead:
    """The new lead (status ``new`` unless given); 422 names a number that is not one."""
    await _owner_allowed(caller, body)
    return Lead.model_validate(await _create(crm, "lead", body, request, response))


@router.get("/leads", tags=["leads"], summary="Search leads")
async def search_leads(caller: AuthCaller, crm: Crm, number: Number = None, q: Text = None,
                       limit: Limit = 50) -> list[Lead]:
    """Leads with the number and/or matching the text, most recently updated first."""
    found = await answer(crm.search_records("lead", number=number, q=q, limit=limit))
    return [Lead.model_validate(record) for record in found]


@router.get("/leads/{lead_id}", tags=["leads"], summary="One lead", responses=NOT_FOUND)
async def get_lead(lead_id: RecordId, caller: AuthCaller, crm: Crm) -> Lead:
    """The lead with its numbers."""
    return Lead.model_validate(await answer(crm.get_record("lead", lead_id)))


@router.patch("/leads/{lead_id}", tags=["leads"], summary="Update a lead", responses=NOT_FOUND)
async def update_lead(lead_id: RecordId, body: LeadUpdate, caller: AuthCaller,
                      crm: Crm) -> Lead:
    """Change the fields given; ``phones`` replaces the lead's numbers."""
    await _owner_allowed(caller, body, crm, "lead", lead_id)
    record = await answer(crm.update_record("lead", lead_id, _values(body, given_only=True)))
    return Lead.model_validate(record)
