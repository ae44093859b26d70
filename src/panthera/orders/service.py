"""What happens to an order: every status change goes through ``move``, which checks it
against the allowed moves, records it in the history and publishes its event.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
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

# The hot transactions (placing an order, recording a saga step's outcome) run these
# Core statements, compiled once, instead of the ORM's load, change tracking and flush.
_ORDERS = cast(Table, Order.__table__)
_COLUMNS = tuple(column.key for column in _ORDERS.columns)
# Never changed once the order is placed.
_FIXED = frozenset(
    {"id", "user_id", "currency", "total_amount", "shipping_address", "created_at", "request_key"}
)
_CHANGING = tuple(key for key in _COLUMNS if key not in _FIXED)
_LOCK = select(*_ORDERS.columns).where(_ORDERS.c.id == bindparam("order_id")).with_for_update()
_SAVE = update(_ORDERS).where(_ORDERS.c.id == bindparam("order_id"))
_INSERT_ORDER = insert(_ORDERS)
_INSERT_ITEMS = insert(cast(Table, OrderItem.__table__))
_INSERT_HISTORY = insert(cast(Table, OrderStatusChange.__table__))


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


async def lock(session: AsyncSession, order_id: uuid.UUID) -> Order | None:
    """The order, locked for this transaction, as an object outside the session.

    Changes made to it are written by ``save`` in the same transaction.
    """
    row = (await session.execute(_LOCK, {"order_id": order_id})).first()
    return None if row is None else Order(**row._mapping)


async def save(session: AsyncSession, order: Order) -> None:
    """Write an order taken with ``lock`` back, in the transaction that locked it."""
    values = {key: getattr(order, key) for key in _CHANGING}
    values["order_id"] = order.id
    await session.execute(_SAVE, values)


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


async def _record(session: AsyncSession, order: Order, reason: str | None, actor: str) -> None:
    await session.execute(
        _INSERT_HISTORY,
        {
            "id": uuid.uuid4(),
            "order_id": order.id,
            "status": order.status,
            "reason": reason,
            "actor": actor,
            "at": order.updated_at,
        },
    )


def touch(order: Order) -> None:
    order.revision += 1
    order.updated_at = now()


def new_order(
    *,
    user_id: uuid.UUID,
    lines: Sequence[NewLine],
    currency: str,
    shipping_address: str,
    payment_method: str,
    request_key: str | None = None,
) -> tuple[Order, list[OrderItem]]:
    """A PENDING order priced by the catalog, with its lines, not yet written."""
    at = now()
    order = Order(
        id=uuid.uuid4(),
        user_id=user_id,
        status=OrderStatus.PENDING,
        currency=currency,
        total_amount=sum(line.unit_price * line.quantity for line in lines),
        amount_refunded=0,
        shipping_address=shipping_address,
        cancel_reason=None,
        cancel_message=None,
        tracking_number=None,
        carrier=None,
        revision=1,
        created_at=at,
        updated_at=at,
        saga_step=SagaStep.RESERVE,
        saga_attempts=0,
        saga_next_at=at,
        saga_lease_until=None,
        saga_last_error=None,
        request_key=request_key,
        payment_method=payment_method,
        reservation_expires_at=None,
        payment_deadline=None,
        payment_id=None,
        payment_status=None,
        payment_revision=0,
    )
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
    return order, items


async def place(uow: UnitOfWork, order: Order, items: Sequence[OrderItem]) -> None:
    """Write an order from ``new_order`` with its lines, history and event; the saga
    takes it from there."""
    session = uow.session
    await session.execute(_INSERT_ORDER, {key: getattr(order, key) for key in _COLUMNS})
    await session.execute(
        _INSERT_ITEMS,
        [
            {
                "id": item.id,
                "order_id": item.order_id,
                "position": item.position,
                "product_id": item.product_id,
                "variant_id": item.variant_id,
                "sku": item.sku,
                "name": item.name,
                "category_id": item.category_id,
                "quantity": item.quantity,
                "unit_price": item.unit_price,
            }
            for item in items
        ],
    )
    await _record(session, order, None, str(order.user_id))
    uow.publish(
        OrderPlaced(**_common(order), items=_lines(items), shipping_address=order.shipping_address)
    )


async def move(
    uow: UnitOfWork,
    order: Order,
    target: OrderStatus,
    *,
    actor: str = SYSTEM,
    reason: str | None = None,
    items: Sequence[OrderItem] | None = None,
) -> None:
    """Change the order's status, if the rules allow it, with its history line and event.

    ``items``: the order's lines, when the caller has them (they never change).
    """
    current = OrderStatus(order.status)
    if not can_move(current, target):
        raise errors.TransitionNotAllowed(current, target)
    order.status = target
    touch(order)
    await _record(uow.session, order, reason, actor)
    common = _common(order)
    lines = None if items is None else _lines(items)
    if target == OrderStatus.CONFIRMED:
        uow.publish(
            OrderConfirmed(
                **common,
                items=lines or _lines(await items_of(uow.session, order.id)),
                payment_id=order.payment_id,
            )
        )
    elif target == OrderStatus.CANCELLED:
        uow.publish(
            OrderCancelled(
                **common,
                reason=order.cancel_reason or reason or "cancelled",
                message=order.cancel_message,
                items=lines or _lines(await items_of(uow.session, order.id)),
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
