"""Every event analytics learns from, each applied by one function of the service module."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from panthera.analytics import service
from panthera.analytics.service import Metric, day_of, rollups, write_facts, write_rollups
from panthera.catalog.events import ProductViewed
from panthera.kernel.events import Envelope, EventContract
from panthera.kernel.service import EventHandler, ServiceRuntime, Subscription
from panthera.kernel.sql import Transaction
from panthera.orders.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderDelivered,
    OrderPlaced,
    OrderRefunded,
    OrderShipped,
)
from panthera.payments.events import PaymentFailed, PaymentRefunded, PaymentSucceeded
from panthera.users.events import UserRegistered

Apply = Callable[[Transaction, Any], Awaitable[None]]


def _applying(apply: Apply) -> EventHandler:
    async def handle(runtime: ServiceRuntime, tx: Transaction, event: Any, _: Envelope) -> None:
        await apply(tx, event)

    return handle


async def _cancelled(tx: Transaction, event: OrderCancelled) -> None:
    await service.order_changed(tx, event, cancelled=True)


async def _payment_confirmed(tx: Transaction, event: PaymentSucceeded) -> None:
    rollups(tx).count(Metric.PAYMENTS_CONFIRMED, day_of(event.occurred_at))


async def _payment_failed(tx: Transaction, event: PaymentFailed) -> None:
    rollups(tx).count(Metric.PAYMENTS_FAILED, day_of(event.occurred_at))


async def _registered(tx: Transaction, event: UserRegistered) -> None:
    rollups(tx).count(Metric.NEW_USERS, day_of(event.registered_at))


async def _viewed(tx: Transaction, event: ProductViewed) -> None:
    views = sum(entry.views for entry in event.counts)
    rollups(tx).count(Metric.PRODUCT_VIEWS, day_of(event.window_end), views)


async def write_batch(runtime: ServiceRuntime, tx: Transaction) -> None:
    """Once per consuming transaction, however many events it applied."""
    # The facts first: which events count, hence the roll-ups, follows from them.
    await write_facts(tx)
    await write_rollups(tx)


_APPLY: tuple[tuple[type[EventContract], Apply], ...] = (
    (OrderPlaced, service.order_placed),
    (OrderConfirmed, service.order_confirmed),
    (OrderCancelled, _cancelled),
    (OrderShipped, service.order_changed),
    (OrderDelivered, service.order_changed),
    (OrderRefunded, service.order_changed),
    (PaymentSucceeded, _payment_confirmed),
    (PaymentFailed, _payment_failed),
    (PaymentRefunded, service.payment_refunded),
    (UserRegistered, _registered),
    (ProductViewed, _viewed),
)

SUBSCRIPTIONS = tuple(Subscription(contract, _applying(apply)) for contract, apply in _APPLY)
