"""What happens to an order: every status change goes through ``move``, which checks it
against the allowed moves, records it in the history and publishes its event.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.kernel.db import UnitOfWork
from panthera.orders import errors
from panthera.orders.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderDelivered,
    OrderLine,
    OrderPlaced,
    OrderRefunded,
    OrderShipped,
)
from panthera.orders.models import Order, OrderItem, OrderStatusChange
from panthera.orders.states import (
    COMPENSATING_STEPS,
    REFUNDABLE,
    CancelReason,
    OrderStatus,
    SagaStep,
    can_move,
)

SYSTEM = "system"


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NewLine:
    product_id: uuid.UUID
    variant_id: uuid.UUID
    sku: str
    name: str
    category_id: uuid.UUID | None
    quantity: int
    unit_price: int


async def load(session: AsyncSession, order_id: uuid.UUID, *, for_update: bool = False) -> Order:
    query = select(Order).where(Order.id == order_id).execution_options(populate_existing=True)
    if for_update:
        query = query.with_for_update()
    order = (await session.execute(query)).scalar_one_or_none()
    if order is None:
        raise errors.OrderNotFound()
    return order


async def find(
    session: AsyncSession, order_id: uuid.UUID, *, for_update: bool = False
) -> Order | None:
    try:
        return await load(session, order_id, for_update=for_update)
    except errors.OrderNotFound:
        return None


async def placed_by(session: AsyncSession, request_key: str) -> Order | None:
    """The order an earlier run of the same request placed, if any."""
    found: Order | None = (
        await session.execute(select(Order).where(Order.request_key == request_key))
    ).scalar_one_or_none()
    return found


async def items_of(session: AsyncSession, order_id: uuid.UUID) -> list[OrderItem]:
    return list(
        (
            await session.execute(
                select(OrderItem).where(OrderItem.order_id == order_id).order_by(OrderItem.position)
            )
        ).scalars()
    )


async def history_of(session: AsyncSession, order_id: uuid.UUID) -> list[OrderStatusChange]:
    return list(
        (
            await session.execute(
                select(OrderStatusChange)
                .where(OrderStatusChange.order_id == order_id)
                .order_by(OrderStatusChange.at, OrderStatusChange.id)
            )
        ).scalars()
    )


def _lines(items: Sequence[OrderItem]) -> tuple[OrderLine, ...]:
    return tuple(
        OrderLine(
            product_id=item.product_id,
            variant_id=item.variant_id,
            sku=item.sku,
            name=item.name,
            category_id=item.category_id,
            quantity=item.quantity,
            unit_price=item.unit_price,
            line_total=item.unit_price * item.quantity,
        )
        for item in items
    )


def _common(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.id,
        "user_id": order.user_id,
        "status": order.status,
        "total_amount": order.total_amount,
        "currency": order.currency,
        "revision": order.revision,
        "occurred_at": order.updated_at,
    }


def _record(session: AsyncSession, order: Order, reason: str | None, actor: str) -> None:
    session.add(
        OrderStatusChange(
            id=uuid.uuid4(),
            order_id=order.id,
            status=order.status,
            reason=reason,
            actor=actor,
            at=order.updated_at,
        )
    )


def touch(order: Order) -> None:
    order.revision += 1
    order.updated_at = now()


async def place(
    uow: UnitOfWork,
    *,
    user_id: uuid.UUID,
    lines: Sequence[NewLine],
    currency: str,
    shipping_address: str,
    payment_method: str,
    request_key: str | None = None,
) -> tuple[Order, list[OrderItem]]:
    """Record a PENDING order priced by the catalog; the saga takes it from there."""
    at = now()
    order = Order(
        id=uuid.uuid4(),
        user_id=user_id,
        status=OrderStatus.PENDING,
        currency=currency,
        total_amount=sum(line.unit_price * line.quantity for line in lines),
        amount_refunded=0,
        shipping_address=shipping_address,
        revision=1,
        created_at=at,
        updated_at=at,
        saga_step=SagaStep.RESERVE,
        saga_attempts=0,
        saga_next_at=at,
        payment_method=payment_method,
        payment_revision=0,
        request_key=request_key,
    )
    uow.session.add(order)
    await uow.session.flush()
    items = [
        OrderItem(
            id=uuid.uuid4(),
            order_id=order.id,
            position=position,
            product_id=line.product_id,
            variant_id=line.variant_id,
            sku=line.sku,
            name=line.name,
            category_id=line.category_id,
            quantity=line.quantity,
            unit_price=line.unit_price,
        )
        for position, line in enumerate(lines)
    ]
    uow.session.add_all(items)
    _record(uow.session, order, None, str(user_id))
    uow.publish(
        OrderPlaced(**_common(order), items=_lines(items), shipping_address=shipping_address)
    )
    return order, items


async def move(
    uow: UnitOfWork,
    order: Order,
    target: OrderStatus,
    *,
    actor: str = SYSTEM,
    reason: str | None = None,
) -> None:
    """Change the order's status, if the rules allow it, with its history line and event."""
    current = OrderStatus(order.status)
    if not can_move(current, target):
        raise errors.TransitionNotAllowed(current, target)
    order.status = target
    touch(order)
    _record(uow.session, order, reason, actor)
    common = _common(order)
    if target == OrderStatus.CONFIRMED:
        uow.publish(
            OrderConfirmed(
                **common,
                items=_lines(await items_of(uow.session, order.id)),
                payment_id=order.payment_id,
            )
        )
    elif target == OrderStatus.CANCELLED:
        uow.publish(
            OrderCancelled(
                **common,
                reason=order.cancel_reason or reason or "cancelled",
                message=order.cancel_message,
                items=_lines(await items_of(uow.session, order.id)),
            )
        )
    elif target == OrderStatus.SHIPPED:
        uow.publish(
            OrderShipped(
                **common,
                tracking_number=order.tracking_number or "",
                carrier=order.carrier,
            )
        )
    elif target == OrderStatus.DELIVERED:
        uow.publish(OrderDelivered(**common))


async def cancel(
    uow: UnitOfWork,
    order: Order,
    reason: CancelReason,
    *,
    actor: str = SYSTEM,
    message: str | None = None,
    compensate: bool = True,
) -> None:
    """Call the order off; with ``compensate``, the saga then gives back stock and money."""
    order.cancel_reason = reason
    order.cancel_message = message
    await move(uow, order, OrderStatus.CANCELLED, actor=actor, reason=reason)
    order.payment_method = None
    schedule(order, SagaStep.RELEASE if compensate else SagaStep.DONE)


def note_payment(order: Order, *, payment_id: uuid.UUID, status: str, revision: int) -> None:
    """Keep what is known of the order's payment, unless newer word is already here."""
    if revision < order.payment_revision:
        return
    order.payment_id = payment_id
    order.payment_status = status
    order.payment_revision = revision


def schedule(order: Order, step: SagaStep, *, at: datetime | None = None) -> None:
    """Make ``step`` the saga's next one, due at ``at`` (now by default), with fresh tries."""
    order.saga_step = step
    order.saga_attempts = 0
    order.saga_next_at = at or now()
    order.saga_last_error = None


def ensure_money_goes_back(order: Order) -> None:
    """A cancelled order must end with nothing charged: queue a refund unless one is queued."""
    if order.saga_step not in COMPENSATING_STEPS:
        # A new revision gives the refund a new idempotency key: the earlier one
        # found nothing to give back.
        touch(order)
        schedule(order, SagaStep.REFUND)


async def apply_refunded(
    uow: UnitOfWork,
    order: Order,
    *,
    amount_refunded: int,
    reason: str,
    actor: str = SYSTEM,
) -> None:
    """Record money given back; a paid order refunded in full becomes REFUNDED.

    ``amount_refunded`` is the payment's total so far, so applying it twice is harmless.
    """
    total = min(order.total_amount, max(order.amount_refunded, amount_refunded))
    if total == order.amount_refunded:
        return
    refund_amount = total - order.amount_refunded
    order.amount_refunded = total
    fully = order.amount_refunded >= order.total_amount
    if fully and OrderStatus(order.status) in REFUNDABLE:
        await move(uow, order, OrderStatus.REFUNDED, actor=actor, reason=reason[:40])
    else:
        touch(order)
    uow.publish(
        OrderRefunded(
            **_common(order),
            refund_amount=refund_amount,
            amount_refunded=order.amount_refunded,
            fully_refunded=fully,
            reason=reason,
        )
    )
