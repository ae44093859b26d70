"""Events: versioned contracts, the outbox, the relay, the inbox and transports."""

from panthera.kernel.events.envelope import Envelope, EventContract
from panthera.kernel.events.transport import (
    BatchDeliveryHandler,
    DeliveryHandler,
    EventTransport,
)

__all__ = ["BatchDeliveryHandler", "DeliveryHandler", "Envelope", "EventContract", "EventTransport"]
