"""Events the orders service publishes: its public contract.

Amounts are integer minor units of ``currency``. ``subject`` is the order id;
``revision`` grows with every change of the order, so a consumer that sees an
older revision after a newer one knows the older one is stale.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from panthera.kernel.events import EventContract


class OrderLine(BaseModel):
    """One line of an order, priced by the catalog when the order was placed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    product_id: uuid.UUID
    variant_id: uuid.UUID
    sku: str
    name: str
    category_id: uuid.UUID | None
    quantity: int
    unit_price: int
    line_total: int


class _OrderEvent(EventContract):
    order_id: uuid.UUID
    user_id: uuid.UUID
    status: str
    total_amount: int
    currency: str
    revision: int
    occurred_at: datetime

    def subject(self) -> str:
        return str(self.order_id)


class OrderPlaced(_OrderEvent):
    """A shopper placed an order; it is PENDING while stock and payment are sorted out."""

    event_type = "order.created"
    version = 1

    items: tuple[OrderLine, ...]
    shipping_address: str


class OrderConfirmed(_OrderEvent):
    """Stock is held for the order and its payment succeeded."""

    event_type = "order.confirmed"
    version = 1

    items: tuple[OrderLine, ...]
    payment_id: uuid.UUID | None


class OrderCancelled(_OrderEvent):
    """The order will not be fulfilled; stock went back and any money taken is refunded.

    ``reason`` is a stable code: ``out_of_stock``, ``card_declined``,
    ``insufficient_funds``, ``payment_error``, ``reservation_expired``,
    ``timed_out``, ``cancelled_by_customer``, ``cancelled_by_staff``...
    """

    event_type = "order.cancelled"
    version = 1

    reason: str
    message: str | None
    items: tuple[OrderLine, ...]


class OrderShipped(_OrderEvent):
    """Staff handed the order to a carrier."""

    event_type = "order.shipped"
    version = 1

    tracking_number: str
    carrier: str | None


class OrderDelivered(_OrderEvent):
    """The order reached the shopper."""

    event_type = "order.delivered"
    version = 1


class OrderRefunded(_OrderEvent):
    """Money went back to the shopper: ``refund_amount`` now, ``amount_refunded`` in all."""

    event_type = "order.refunded"
    version = 1

    refund_amount: int
    amount_refunded: int
    fully_refunded: bool
    reason: str


PUBLISHED = (
    OrderPlaced,
    OrderConfirmed,
    OrderCancelled,
    OrderShipped,
    OrderDelivered,
    OrderRefunded,
)
