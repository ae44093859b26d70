"""Orders as the API shows them: exact decimal strings for money."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from panthera.kernel.money import Money
from panthera.kernel.sql import SessionSql
from panthera.orders import service
from panthera.orders.models import Order
from panthera.orders.schemas import OrderItemOut, OrderOut, OrderSummary, StatusChangeOut
from panthera.orders.states import OrderStatus


def money(amount: int, currency: str) -> str:
    return Money(amount, currency).format()


async def order_out(session: AsyncSession, order: Order) -> OrderOut:
    items = await service.items_of(SessionSql(session), order.id)
    history = await service.history_of(session, order.id)
    return OrderOut(
        orderId=order.id,
        userId=order.user_id,
        items=[
            OrderItemOut(
                productId=item.product_id,
                variantId=item.variant_id,
                sku=item.sku,
                name=item.name,
                quantity=item.quantity,
                unitPrice=money(item.unit_price, order.currency),
                lineTotal=money(item.unit_price * item.quantity, order.currency),
            )
            for item in items
        ],
        status=OrderStatus(order.status),
        totalAmount=money(order.total_amount, order.currency),
        currency=order.currency,
        amountRefunded=money(order.amount_refunded, order.currency),
        shippingAddress=order.shipping_address,
        cancelReason=order.cancel_reason,
        cancelMessage=order.cancel_message,
        trackingNumber=order.tracking_number,
        carrier=order.carrier,
        paymentId=order.payment_id,
        statusHistory=[
            StatusChangeOut(status=OrderStatus(change.status), reason=change.reason, at=change.at)
            for change in history
        ],
        createdAt=order.created_at,
        updatedAt=order.updated_at,
        revision=order.revision,
    )


def summary(order: Order, item_count: int) -> OrderSummary:
    return OrderSummary(
        orderId=order.id,
        userId=order.user_id,
        status=OrderStatus(order.status),
        totalAmount=money(order.total_amount, order.currency),
        currency=order.currency,
        itemCount=int(item_count),
        cancelReason=order.cancel_reason,
        createdAt=order.created_at,
        updatedAt=order.updated_at,
    )
