"""The envelope every event travels in, and the base class of event contracts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, Field


class EventContract(BaseModel):
    """A published event's payload. Subclasses set ``event_type`` and ``version``.

    A breaking change to a payload means a new ``version``; consumers say which
    versions they understand.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: ClassVar[str]
    version: ClassVar[int] = 1

    # The aggregate the event is about. Delivery order is not guaranteed: consumers
    # compare the payload's own revision to recognise a stale event.
    def subject(self) -> str:
        return ""


class Envelope(BaseModel):
    """What crosses the broker: identity, type, version, time, source and trace context."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: str
    version: int = 1
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: str
    subject: str = ""
    traceparent: str | None = None
    payload: dict[str, Any]

    @classmethod
    def wrap(cls, event: EventContract, *, source: str, traceparent: str | None = None) -> Envelope:
        """Put a contract instance into an envelope."""
        return cls(
            type=event.event_type,
            version=event.version,
            source=source,
            subject=event.subject(),
            traceparent=traceparent,
            payload=event.model_dump(mode="json"),
        )

    def to_bytes(self) -> bytes:
        """The envelope as compact JSON."""
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        """Parse an envelope received from a transport."""
        return cls.model_validate(orjson.loads(raw))
