"""Request and response bodies of the notifications service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from panthera.notifications.models import Channel, DeliveryStatus


class DeliveryResponse(BaseModel):
    id: uuid.UUID
    eventId: uuid.UUID
    userId: uuid.UUID | None
    channel: Channel
    recipient: str
    template: str
    subject: str
    transactional: bool
    status: DeliveryStatus
    attempts: int
    nextAttemptAt: datetime | None
    lastError: str | None
    createdAt: datetime
    sentAt: datetime | None


PushToken = Annotated[str, Field(min_length=8, max_length=4096, pattern=r"^[\x21-\x7e]+$")]


class PreferencesUpdate(BaseModel):
    """Only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    marketingEmail: bool | None = Field(
        default=None, description="Mail that is not about an order or the account (welcome...)."
    )
    sms: bool | None = Field(default=None, description="Order updates by text message.")
    push: bool | None = Field(default=None, description="Order updates as push notifications.")
    pushTokens: list[PushToken] | None = Field(
        default=None, max_length=10, description="The devices push notifications go to."
    )


class PreferencesResponse(BaseModel):
    userId: uuid.UUID
    email: str
    phoneNumber: str | None
    marketingEmail: bool
    sms: bool
    push: bool
    pushTokens: list[str]
    updatedAt: datetime


class Unsubscribed(BaseModel):
    unsubscribed: bool
