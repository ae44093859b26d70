"""The notifications service's tables: its directory of recipients and the delivery log."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from panthera.kernel.db import UTCDateTime, service_metadata
from panthera.kernel.events.outbox import event_tables


class Base(DeclarativeBase):
    metadata = service_metadata()


EVENT_TABLES = event_tables(Base.metadata)


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"


class Recipient(Base):
    """Who a user is to this service: addresses and choices, copied from user events.

    Order and payment events carry only a user id; this copy lets a message be
    addressed without calling the users service on every event.
    """

    __tablename__ = "recipients"

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    phone_number: Mapped[str | None] = mapped_column(String(32))
    push_tokens: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The users service's revision of the profile last copied; older updates are stale.
    revision: Mapped[int] = mapped_column(Integer, default=0)
    # Messages that are not transactional (the welcome mail) go only while this is on.
    marketing_email: Mapped[bool] = mapped_column(Boolean, default=True)
    # Order updates by text or push go only where the user opted in.
    sms_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    push_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Delivery(Base):
    """One message to one recipient over one channel, and what became of it.

    The message is rendered when the event arrives and kept here, so that retries
    and a staff resend send exactly what the event produced.
    """

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    channel: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str] = mapped_column(String(320))
    template: Mapped[str] = mapped_column(String(80))
    subject: Mapped[str] = mapped_column(String(300))
    transactional: Mapped[bool] = mapped_column(Boolean, default=True)
    # What the channel sends: text and html for email, text for SMS, title and text for push.
    content: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
