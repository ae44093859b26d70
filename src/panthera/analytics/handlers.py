"""Every event analytics learns from, each applied by one function of the service module."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from panthera.analytics import service
from panthera.analytics.service import Metric, day_of, rollups, write_facts, write_rollups
from panthera.catalog.events import ProductViewed
from panthera.kernel.db import UnitOfWork
from panthera.kernel.events import Envelope, EventContract
from panthera.kernel.service import EventHandler, ServiceRuntime, Subscription
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

Apply = Callable[[AsyncSession, Any], Awaitable[None]]


def _applying(apply: Apply) -> EventHandler:
    async def handle(runtime: ServiceRuntime, uow: UnitOfWork, event: Any, _: Envelope) -> None:
        await apply(uow.session, event)

    return handle


async def _cancelled(session: AsyncSession, event: OrderCancelled) -> None:
    await service.order_changed(session, event, cancelled=True)


async def _payment_confirmed(session: AsyncSession, event: PaymentSucceeded) -> None:
    rollups(session).count(Metric.PAYMENTS_CONFIRMED, day_of(event.occurred_at))


async def _payment_failed(session: AsyncSession, event: PaymentFailed) -> None:
    rollups(session).count(Metric.PAYMENTS_FAILED, day_of(event.occurred_at))


async def _registered(session: AsyncSession, event: UserRegistered) -> None:
    rollups(session).count(Metric.NEW_USERS, day_of(event.registered_at))


async def _viewed(session: AsyncSession, event: ProductViewed) -> None:
    views = sum(entry.views for entry in event.counts)
    rollups(session).count(Metric.PRODUCT_VIEWS, day_of(event.window_end), views)


async def write_batch(runtime: ServiceRuntime, uow: UnitOfWork) -> None:
    """Once per consuming transaction, however many events it applied."""
    # The facts first: which events count, hence the roll-ups, follows from them.
    await write_facts(uow.session)
    await write_rollups(uow.session)


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
