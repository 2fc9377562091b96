"""The fields a CRM's Calls module has, worked out from a call record.

A call record (a row of ``calls``) says what happened on the wire: direction, who answered,
how it ended. A CRM's Calls module (Zoho CRM's, for one) files the same call under a type, a
status, an owner and a subject. These functions derive those from the record, the same way
for the record writer (:mod:`crmsync.writer`), the migration of older records, imports and
the HTTP API. They read a mapping of column names to values and touch no database, so they
also serve as column defaults of :class:`crmsync.models.Call` for rows inserted without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

__all__ = [
    "CALL_TYPES", "STATUSES", "SUBJECT_LENGTH", "CallStatus", "CallType", "call_owner",
    "call_status", "call_type", "is_missed", "outside_number", "record_name", "subject",
]

CallType = Literal["inbound", "outbound", "missed", "internal"]
CallStatus = Literal["in_progress", "completed"]

CALL_TYPES: Final[tuple[CallType, ...]] = ("inbound", "outbound", "missed", "internal")
"""What ``call_type`` holds: ``missed`` is an inbound or internal call nobody answered."""
STATUSES: Final[tuple[CallStatus, ...]] = ("in_progress", "completed")
"""What ``status`` holds (a CRM's scheduled and cancelled calls are ``scheduled_calls``)."""
SUBJECT_LENGTH: Final = 255

Row = Mapping[str, Any]


def is_missed(row: Row) -> bool:
    """Whether an ended call is a missed call: inbound or internal, and nobody answered it.

    It rang out or the caller gave up (disposition ``no_answer`` or ``cancelled``), or it was
    a queue caller the PBX answered to wait who never reached an agent. This is the rule of
    the ``call.missed`` webhook event and of ``type=missed`` in the API.
    """
    if row.get("direction") == "outbound" or row.get("answered_by") is not None:
        return False
    if row.get("disposition") in ("no_answer", "cancelled"):
        return True
    return row.get("queue") is not None and row.get("queue_result") != "answered"


def call_status(row: Row) -> CallStatus:
    """``in_progress`` until the call has ended, then ``completed``."""
    return "in_progress" if row.get("ended_at") is None else "completed"


def call_type(row: Row) -> CallType:
    """``outbound``, ``internal`` or ``inbound`` by direction; an ended inbound or internal
    call nobody answered is ``missed`` (:func:`is_missed`)."""
    direction = row.get("direction")
    if direction == "outbound":
        return "outbound"
    if row.get("ended_at") is not None and is_missed(row):
        return "missed"
    return "internal" if direction == "internal" else "inbound"


def call_owner(row: Row) -> str | None:
    """The user the call belongs to: for an outbound call the user who placed it; otherwise
    the user who answered it, or, while nobody has (and for a missed call), the user it was
    for (None for a queue's or a trunk's call nobody took)."""
    if row.get("direction") == "outbound":
        owner: str | None = row.get("caller_user")
        return owner
    answered: str | None = row.get("answered_by")
    return answered if answered is not None else row.get("callee_user")


def outside_number(row: Row) -> str | None:
    """The number of the party outside the PBX, as it was sent: the caller of an inbound
    call, the called number of an outbound one; None for an internal call."""
    direction = row.get("direction")
    number: str | None = None
    if direction == "inbound":
        number = row.get("from_number")
    elif direction == "outbound":
        number = row.get("to_number")
    return number or None


def record_name(first_name: str, last_name: str, company: str) -> str:
    """How a contact or lead is named: first and last name, else the company ("" if none),
    as the caller look-up names them."""
    return f"{first_name} {last_name}".strip() or company.strip()


def subject(row: Row, name: str | None = None) -> str:
    """The subject the PBX gives a call: ``Inbound call from Ichiro Tanaka``, ``Outbound call
    to +81 90...``, ``Missed call from ...``, ``Internal call 101 → 102``.

    ``name`` is the CRM record's name of the outside party, when the call is linked to one;
    otherwise the caller's display name or the number as sent stands in.
    """
    kind = call_type(row)
    from_number = row.get("from_number") or ""
    to_number = row.get("to_number") or ""
    if kind == "internal":
        text = f"Internal call {from_number} → {to_number}"
    elif kind == "outbound":
        text = f"Outbound call to {name or to_number or 'an unknown number'}"
    else:
        caller = name or (row.get("from_name") or "").strip() or from_number or "an unknown caller"
        text = f"{'Missed' if kind == 'missed' else 'Inbound'} call from {caller}"
    return _clip(" ".join(text.split()))  # a display name's tabs or line breaks: one space


def _clip(text: str) -> str:
    return text if len(text) <= SUBJECT_LENGTH else text[:SUBJECT_LENGTH - 1] + "…"
