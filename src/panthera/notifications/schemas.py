"""Response bodies of the notifications service."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel


class DeliveryResponse(BaseModel):
    id: uuid.UUID
    eventId: uuid.UUID
    userId: uuid.UUID | None
    channel: str
    recipient: str
    template: str
    subject: str
    status: str
    attempts: int
    lastError: str | None
    createdAt: datetime
    sentAt: datetime | None
