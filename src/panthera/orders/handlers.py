"""What the orders service does when the payments service or the catalog tells it something.

Each event is applied once (the runtime's inbox) and only if it is newer than
what the order already knows of its payment (``revision``): events about one
order may arrive in any order.
"""

from __future__ import annotations

import uuid
from typing import Any

from panthera.catalog.events import StockReleased
from panthera.kernel.events import Envelope
from panthera.kernel.service import ServiceRuntime, Subscription
from panthera.kernel.sql import Transaction
from panthera.orders import service
from panthera.orders.deps import OrdersDeps
from panthera.orders.models import Order
from panthera.orders.states import CancelReason, OrderStatus, SagaStep, reason_for_payment_failure
from panthera.payments.events import PaymentFailed, PaymentRefunded, PaymentSucceeded

AWAITING_PAYMENT = frozenset({SagaStep.PAY, SagaStep.AWAIT_PAYMENT})


def _deps(runtime: ServiceRuntime) -> OrdersDeps:
    deps: OrdersDeps = runtime.components["orders_deps"]
    return deps


def _order_id(reference: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(reference)
    except ValueError:
        return None  # A payment or reservation that is not an order's.


async def _order_of(uow: Transaction, reference: str) -> Order | None:
    order_id = _order_id(reference)
    if order_id is None:
        return None
    # Locked for the transaction, outside the ORM: a handler that changes it saves it.
    return await service.lock(uow.sql, order_id)


def _is_stale(order: Order, revision: int) -> bool:
    return revision <= order.payment_revision


def _note_payment(order: Order, event: Any, status: str) -> None:
    service.note_payment(order, payment_id=event.payment_id, status=status, revision=event.revision)


def _succeeded(order: Order, event: PaymentSucceeded) -> bool:
    """Apply a payment that went through to ``order``; whether the saga takes it up.

    Publishes nothing, whatever the order's state.
    """
    _note_payment(order, event, "succeeded")
    if order.status == OrderStatus.PENDING and order.saga_step in AWAITING_PAYMENT:
        service.schedule(order, SagaStep.COMMIT)
        return True
    if order.status == OrderStatus.CANCELLED:
        # Money arrived for an order already called off: it goes back.
        service.ensure_money_goes_back(order)
        return True
    return False


async def payment_succeeded(
    runtime: ServiceRuntime, uow: Transaction, event: PaymentSucceeded, envelope: Envelope
) -> None:
    saga = _deps(runtime).saga
    order_id = _order_id(event.order_reference)
    if order_id is None:
        return
    known = saga.last_written(order_id)
    if known is not None:
        # The order as this process last wrote it: applied to a copy and written only
        # if the row is still exactly that, with no locked read first, as the whole
        # transaction (the event's inbox row goes with it). Payment revisions only
        # grow, so an event stale for this copy is stale for the row.
        if _is_stale(known, event.revision):
            return
        draft = service.detached_copy(known)
        if _succeeded(draft, event):
            saga.hold(draft)
            saga.kick_after_commit(uow, draft)
        if await service.save_and_commit(uow, draft, unchanged=known):
            return
    order = await service.lock(uow.sql, order_id)
    if order is None or _is_stale(order, event.revision):
        return
    if _succeeded(order, event):
        await _take_up(runtime, uow, order)
    else:
        await service.save(uow.sql, order)


async def payment_failed(
    runtime: ServiceRuntime, uow: Transaction, event: PaymentFailed, envelope: Envelope
) -> None:
    order = await _order_of(uow, event.order_reference)
    if order is None or _is_stale(order, event.revision):
        return
    _note_payment(order, event, "failed")
    if order.status == OrderStatus.PENDING and order.saga_step in AWAITING_PAYMENT:
        await service.cancel(
            uow, order, reason_for_payment_failure(event.reason), message=event.message
        )
        await _take_up(runtime, uow, order)
    else:
        await service.save(uow.sql, order)


async def payment_refunded(
    runtime: ServiceRuntime, uow: Transaction, event: PaymentRefunded, envelope: Envelope
) -> None:
    order = await _order_of(uow, event.order_reference)
    if order is None or _is_stale(order, event.revision):
        return
    _note_payment(order, event, "refunded" if event.fully_refunded else "partially_refunded")
    await service.apply_refunded(
        uow, order, amount_refunded=event.amount_refunded, reason=event.reason
    )
    await service.save(uow.sql, order)


async def stock_released(
    runtime: ServiceRuntime, uow: Transaction, event: StockReleased, envelope: Envelope
) -> None:
    if event.reason != "expired":
        return  # Released by this service itself.
    order = await _order_of(uow, event.reference)
    if order is None:
        return
    if order.status == OrderStatus.PENDING and order.saga_step in AWAITING_PAYMENT:
        # The payment may still go through: the compensation refunds it then.
        await service.cancel(
            uow,
            order,
            CancelReason.RESERVATION_EXPIRED,
            message="The stock held for the order ran out before it was paid.",
        )
        await _take_up(runtime, uow, order)


async def _take_up(runtime: ServiceRuntime, uow: Transaction, order: Order) -> None:
    _deps(runtime).saga.take_up_after_commit(uow, order)
    await service.save(uow.sql, order)


SUBSCRIPTIONS = (
    Subscription(PaymentSucceeded, payment_succeeded),
    Subscription(PaymentFailed, payment_failed),
    Subscription(PaymentRefunded, payment_refunded),
    Subscription(StockReleased, stock_released),
)
