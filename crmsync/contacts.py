"""Contacts and leads of the CRM store, with their phone numbers in E.164.

People write numbers the way they dial them (``03-1234-5678`` in Japan, ``+81 3 1234 5678``,
``0081312345678``), and trunks send them as they please; the PBX stores each number once more in
E.164 (``+81312345678``) so that a caller is found with one indexed comparison, whatever the
form on either side. :func:`normalise` is that conversion, with ``phonenumbers`` (Google's
libphonenumber metadata).

The create and update functions take a :class:`~sqlalchemy.orm.Session` and leave the commit to
the caller, so a record and all of its numbers land in one transaction::

    with Session(engine) as session, session.begin():
        create_contact(session, first_name="Hanako", phones=[("03-1234-5678", "work")],
                       region="JP")

Every number is checked before anything is added to the session: a bad one raises
:class:`ContactError` naming it, and the record is not written at all.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final, Literal

import phonenumbers
from sqlalchemy import delete
from sqlalchemy.orm import Session

from .models import Contact, Lead, PhoneNumber

__all__ = [
    "UNSET",
    "ContactError",
    "RecordKind",
    "RecordNotFound",
    "Unset",
    "create_contact",
    "create_lead",
    "normalise",
    "update_contact",
    "update_lead",
]

RecordKind = Literal["contact", "lead"]

Phones = Sequence[tuple[str, str]]
"""Numbers of a record as ``(number as written, label)``, e.g. ``("03-1234-5678", "work")``."""

# Visual separators of a written or dialled number (RFC 3966 5.1.1) and blanks.
_DIALLED = re.compile(r"\+?[0-9 ()./-]{1,40}")
_SEPARATORS = re.compile(r"[ ()./-]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_NAME_LENGTH = 255
_EMAIL_LENGTH = 320
_OWNER_LENGTH = 64
_LABEL_LENGTH = 32
_STATUS_LENGTH = 32


class ContactError(ValueError):
    """A contact or lead was given something it cannot store; the message says what."""

    def __init__(self, message: str, number: str | None = None) -> None:
        super().__init__(message)
        self.number = number
        """The phone number at fault, as it was written (None when a number is not the issue)."""


class RecordNotFound(LookupError):
    """No contact or lead has the id an update named."""


class Unset(enum.Enum):
    """Marks an update argument that was not given (``None`` is a value: no owner)."""

    UNSET = enum.auto()


UNSET: Final = Unset.UNSET


def normalise(number: str, region: str) -> str | None:
    """``number`` in E.164 (``+81312345678``), or None if it is not a valid phone number.

    ``region`` is the ISO country code numbers are dialled from (``JP``). Accepted: the national
    form (``03-1234-5678``), international with ``+``, with the region's international prefix
    (``010 81 3 1234 5678`` in JP) or with the common ``00`` prefix (``0081312345678``), and
    bare country code plus number (``81312345678``); spaces, hyphens, dots and brackets are
    ignored. Short internal extensions (``101``) and service codes are not phone numbers: None.
    """
    text = number.strip()
    if not _DIALLED.fullmatch(text):
        return None
    region = region.upper()
    found = _valid(text, region)
    if found is not None or text.startswith("+"):
        return found
    # Not valid as dialled in the region: the caller ID may still be international without
    # its "+" (trunks often drop it), with or without a 00 prefix other than the region's own.
    digits = _SEPARATORS.sub("", text)
    if digits.startswith("00"):
        return _valid("+" + digits[2:], region)
    return _valid("+" + digits, region)


def _valid(text: str, region: str) -> str | None:
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def create_contact(
    session: Session,
    *,
    first_name: str,
    last_name: str = "",
    company: str = "",
    email: str = "",
    owner: str | None = None,
    phones: Phones = (),
    region: str,
    now: datetime | None = None,
) -> str:
    """Add a contact and its numbers to ``session``; returns the new contact's id.

    ``now`` (UTC) stamps ``created_at`` and ``updated_at``; it defaults to the current time and
    is there for imports that keep the original dates. Raises :class:`ContactError` on a bad
    number or field, before anything is added.
    """
    numbers = _numbers(phones, region)
    stamp = _stamp(now)
    record = Contact(
        id=str(uuid.uuid4()),
        first_name=_text(first_name, "first_name", _NAME_LENGTH),
        last_name=_text(last_name, "last_name", _NAME_LENGTH),
        company=_text(company, "company", _NAME_LENGTH),
        email=_email(email),
        owner=_owner(owner),
        created_at=stamp,
        updated_at=stamp,
    )
    session.add(record)
    _add_numbers(session, "contact", record.id, numbers)
    session.flush()
    return record.id


def create_lead(
    session: Session,
    *,
    first_name: str,
    last_name: str = "",
    company: str = "",
    email: str = "",
    owner: str | None = None,
    status: str = "new",
    phones: Phones = (),
    region: str,
    now: datetime | None = None,
) -> str:
    """Add a lead and its numbers to ``session``; returns the new lead's id.

    As :func:`create_contact`, with the lead's ``status`` (``new`` unless given).
    """
    numbers = _numbers(phones, region)
    stamp = _stamp(now)
    record = Lead(
        id=str(uuid.uuid4()),
        first_name=_text(first_name, "first_name", _NAME_LENGTH),
        last_name=_text(last_name, "last_name", _NAME_LENGTH),
        company=_text(company, "company", _NAME_LENGTH),
        email=_email(email),
        owner=_owner(owner),
        status=_status(status),
        created_at=stamp,
        updated_at=stamp,
    )
    session.add(record)
    _add_numbers(session, "lead", record.id, numbers)
    session.flush()
    return record.id


def update_contact(
    session: Session,
    record_id: str,
    *,
    first_name: str | Unset = UNSET,
    last_name: str | Unset = UNSET,
    company: str | Unset = UNSET,
    email: str | Unset = UNSET,
    owner: str | Unset | None = UNSET,
    phones: Phones | None = None,
    region: str,
    now: datetime | None = None,
) -> None:
    """Change the fields given of contact ``record_id``; ``phones`` (if given) replaces its numbers.

    ``owner=None`` takes the contact away from its owner. Raises :class:`RecordNotFound` for an
    unknown id and :class:`ContactError` on a bad number or field, before anything changes.
    """
    record = session.get(Contact, record_id)
    if record is None:
        raise RecordNotFound(f"no contact with id {record_id!r}")
    numbers = None if phones is None else _numbers(phones, region)
    values = _changes(first_name, last_name, company, email, owner)
    for name, value in values.items():
        setattr(record, name, value)
    if numbers is not None:
        _replace_numbers(session, "contact", record_id, numbers)
    record.updated_at = _stamp(now)
    session.flush()


def update_lead(
    session: Session,
    record_id: str,
    *,
    first_name: str | Unset = UNSET,
    last_name: str | Unset = UNSET,
    company: str | Unset = UNSET,
    email: str | Unset = UNSET,
    owner: str | Unset | None = UNSET,
    status: str | Unset = UNSET,
    phones: Phones | None = None,
    region: str,
    now: datetime | None = None,
) -> None:
    """Change the fields given of lead ``record_id``; as :func:`update_contact`, plus ``status``."""
    record = session.get(Lead, record_id)
    if record is None:
        raise RecordNotFound(f"no lead with id {record_id!r}")
    numbers = None if phones is None else _numbers(phones, region)
    values = _changes(first_name, last_name, company, email, owner)
    if not isinstance(status, Unset):
        values["status"] = _status(status)
    for name, value in values.items():
        setattr(record, name, value)
    if numbers is not None:
        _replace_numbers(session, "lead", record_id, numbers)
    record.updated_at = _stamp(now)
    session.flush()


def _changes(
    first_name: str | Unset,
    last_name: str | Unset,
    company: str | Unset,
    email: str | Unset,
    owner: str | Unset | None,
) -> dict[str, str | None]:
    """The checked values of the fields an update names (all checked before any is set)."""
    values: dict[str, str | None] = {}
    for name, value in (("first_name", first_name), ("last_name", last_name),
                        ("company", company)):
        if not isinstance(value, Unset):
            values[name] = _text(value, name, _NAME_LENGTH)
    if not isinstance(email, Unset):
        values["email"] = _email(email)
    if not isinstance(owner, Unset):
        values["owner"] = _owner(owner)
    return values


def _numbers(phones: Phones, region: str) -> list[tuple[str, str, str]]:
    """``(e164, label, raw)`` for each number, once per E.164 number (the first label wins)."""
    if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown region {region!r}: use an ISO country code such as JP or US")
    out: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for raw, label in phones:
        e164 = normalise(raw, region)
        if e164 is None:
            raise ContactError(f"{raw!r} is not a valid phone number in region {region}", raw)
        label = _text(label, "phone label", _LABEL_LENGTH)
        if e164 not in seen:
            seen.add(e164)
            out.append((e164, label, raw.strip()))
    return out


def _add_numbers(
    session: Session, kind: RecordKind, record_id: str, numbers: list[tuple[str, str, str]]
) -> None:
    session.add_all(
        PhoneNumber(id=str(uuid.uuid4()), owner_kind=kind, record_id=record_id,
                    number_e164=e164, label=label, raw=raw)
        for e164, label, raw in numbers
    )


def _replace_numbers(
    session: Session, kind: RecordKind, record_id: str, numbers: list[tuple[str, str, str]]
) -> None:
    session.execute(
        delete(PhoneNumber).where(PhoneNumber.owner_kind == kind,
                                  PhoneNumber.record_id == record_id),
        execution_options={"synchronize_session": False},
    )
    _add_numbers(session, kind, record_id, numbers)


def _text(value: str, what: str, limit: int) -> str:
    text = value.strip()
    if len(text) > limit:
        raise ContactError(f"{what} is longer than {limit} characters")
    if _CONTROL.search(text):
        # Names end up in SIP display names and CSV exports; a line break would forge both.
        raise ContactError(f"{what} must not contain control characters or line breaks")
    return text


def _email(value: str) -> str:
    text = _text(value, "email", _EMAIL_LENGTH)
    if text and not _EMAIL.fullmatch(text):
        raise ContactError(f"email {text!r} is not an address like name@example.com")
    return text


def _owner(value: str | None) -> str | None:
    if value is None:
        return None
    text = _text(value, "owner", _OWNER_LENGTH)
    return text or None


def _status(value: str) -> str:
    text = _text(value, "status", _STATUS_LENGTH)
    if not text:
        raise ContactError("status must not be empty")
    return text


def _stamp(now: datetime | None) -> datetime:
    """A naive UTC time, as the ``calls`` table keeps its times."""
    if now is None:
        return datetime.now(UTC).replace(tzinfo=None)
    if now.tzinfo is not None:
        return now.astimezone(UTC).replace(tzinfo=None)
    return now
