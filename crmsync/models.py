"""SQLAlchemy models of the records the PBX keeps: one row per logical call."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Call(Base):
    """One logical call, from the first INVITE to the last BYE (times are UTC)."""

    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sip_call_id: Mapped[str] = mapped_column(String(255), index=True)
    direction: Mapped[str] = mapped_column(String(16))
    from_number: Mapped[str] = mapped_column(String(64), index=True)
    from_name: Mapped[str] = mapped_column(String(255), default="")
    to_number: Mapped[str] = mapped_column(String(64), index=True)
    caller_user: Mapped[str | None] = mapped_column(String(64), nullable=True)
    callee_user: Mapped[str | None] = mapped_column(String(64), nullable=True)
    answered_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    duration: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Talk time in seconds (answer to end); 0 for unanswered calls."""
    ring_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    disposition: Mapped[str] = mapped_column(String(16), default="in_progress")
    hangup_cause: Mapped[str] = mapped_column(String(255), default="")
    hangup_by: Mapped[str | None] = mapped_column(String(16), nullable=True)
    sip_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    recording_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    recording_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    transferred_to: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The user the call was last transferred to (None if it never was)."""
    transfers: Mapped[int] = mapped_column(Integer, default=0)
    keys: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """Keys the caller pressed while the PBX answered (menu choices), in order."""
