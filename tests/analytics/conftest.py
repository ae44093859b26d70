"""Order and payment history for the analytics service, built from the services' contracts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from panthera.kernel.events import Envelope, EventContract
from panthera.orders.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderLine,
    OrderPlaced,
    OrderShipped,
)
from tests.conftest import Account, Platform

SHOES = uuid.UUID("00000000-0000-4000-8000-00000000a001")
SOCKS = uuid.UUID("00000000-0000-4000-8000-00000000a002")
TENT = uuid.UUID("00000000-0000-4000-8000-00000000a003")
FOOTWEAR = uuid.UUID("00000000-0000-4000-8000-00000000c001")
CAMPING = uuid.UUID("00000000-0000-4000-8000-00000000c002")
CATALOG = {
    SHOES: ("Trail running shoe", FOOTWEAR, 8950),
    SOCKS: ("Merino socks", FOOTWEAR, 1299),
    TENT: ("Two-person tent", CAMPING, 24900),
}


def at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=UTC)


def lines(*quantities: tuple[uuid.UUID, int]) -> tuple[OrderLine, ...]:
    result = []
    for product_id, quantity in quantities:
        name, category, price = CATALOG[product_id]
        result.append(
            OrderLine(
                product_id=product_id,
                variant_id=uuid.uuid5(product_id, "default"),
                sku=name.upper().replace(" ", "-")[:20],
                name=name,
                category_id=category,
                quantity=quantity,
                unit_price=price,
                line_total=quantity * price,
            )
        )
    return tuple(result)


@dataclass
class Order:
    """An order as the orders service would record it, and the events it publishes."""

    user_id: uuid.UUID
    items: tuple[OrderLine, ...]
    currency: str = "USD"
    order_id: uuid.UUID = field(default_factory=uuid.uuid4)
    revision: int = 0
    status: str = "PENDING"
    events: list[EventContract] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(line.line_total for line in self.items)

    def _common(self, status: str, moment: datetime) -> dict[str, Any]:
        self.revision += 1
        self.status = status
        return {
            "order_id": self.order_id,
            "user_id": self.user_id,
            "status": status,
            "total_amount": self.total,
            "currency": self.currency,
            "revision": self.revision,
            "occurred_at": moment,
        }

    def placed(self, moment: datetime) -> OrderPlaced:
        event = OrderPlaced(
            items=self.items, shipping_address="1 Main St", **self._common("PENDING", moment)
        )
        self.events.append(event)
        return event

    def confirmed(self, moment: datetime, payment_id: uuid.UUID | None = None) -> OrderConfirmed:
        event = OrderConfirmed(
            items=self.items, payment_id=payment_id, **self._common("CONFIRMED", moment)
        )
        self.events.append(event)
        return event

    def cancelled(self, moment: datetime, reason: str = "card_declined") -> OrderCancelled:
        event = OrderCancelled(
            items=self.items, reason=reason, message=None, **self._common("CANCELLED", moment)
        )
        self.events.append(event)
        return event

    def shipped(self, moment: datetime) -> OrderShipped:
        event = OrderShipped(
            tracking_number="1Z999", carrier="UPS", **self._common("SHIPPED", moment)
        )
        self.events.append(event)
        return event


async def publish(
    platform: Platform, event: EventContract, source: str = "orders", order: Order | None = None
) -> Envelope:
    """Deliver an event as the transport does, for a service this process does not run."""
    envelope = Envelope.wrap(event, source=source)
    await platform.app.state.platform.transport.publish(envelope)
    if order is not None:
        order.envelopes.append(envelope)
    return envelope


async def redeliver(platform: Platform, envelope: Envelope) -> None:
    """The same envelope again, as a broker does after a lost acknowledgement."""
    await platform.app.state.platform.transport.publish(envelope)


async def report(platform: Platform, admin: Account, name: str, **query: Any) -> dict[str, Any]:
    response = await platform.client.get(
        f"/api/v1/analytics/{name}", params=query, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def today() -> date:
    return datetime.now(UTC).date()


def days_ago(count: int) -> date:
    return today() - timedelta(days=count)
