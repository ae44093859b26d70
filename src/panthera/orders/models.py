"""The orders' tables: orders with their saga state, their lines, and their status history.

Money is integer minor units of the order's currency. Line prices are the
catalog's at the moment the order was placed and never change afterwards.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from panthera.kernel.db import UTCDateTime, service_metadata
from panthera.kernel.events.outbox import event_tables
from panthera.kernel.idempotency import idempotency_table

_Money = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = service_metadata()


EVENT_TABLES = event_tables(Base.metadata)
IDEMPOTENCY_KEYS = idempotency_table(Base.metadata)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("total_amount >= 0", name="total_not_negative"),
        CheckConstraint(
            "amount_refunded >= 0 AND amount_refunded <= total_amount", name="refund_within_total"
        ),
        Index("ix_orders_user_created", "user_id", "created_at"),
        Index("ix_orders_status_created", "status", "created_at"),
        # The saga worker's question: which orders have a step due now?
        Index("ix_orders_saga_due", "saga_step", "saga_next_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    status: Mapped[str] = mapped_column(String(20))
    currency: Mapped[str] = mapped_column(String(3))
    total_amount: Mapped[int] = mapped_column(_Money)
    amount_refunded: Mapped[int] = mapped_column(_Money, default=0)
    shipping_address: Mapped[str] = mapped_column(Text)
    cancel_reason: Mapped[str | None] = mapped_column(String(40))
    cancel_message: Mapped[str | None] = mapped_column(String(500))
    tracking_number: Mapped[str | None] = mapped_column(String(100))
    carrier: Mapped[str | None] = mapped_column(String(100))
    # Grows with every change: events carry it so consumers can drop stale ones.
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    # The saga: the step still to do, when, and who is doing it now.
    saga_step: Mapped[str] = mapped_column(String(20))
    saga_attempts: Mapped[int] = mapped_column(Integer, default=0)
    saga_next_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # A worker holds the order until then; a worker that died lets go by itself.
    saga_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    saga_last_error: Mapped[str | None] = mapped_column(String(500))
    # The provider's token for the payment (tok_..., pm_...): never card data.
    payment_method: Mapped[str | None] = mapped_column(String(210))
    reservation_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    payment_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    payment_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    payment_status: Mapped[str | None] = mapped_column(String(30))
    # The newest payment revision applied: an older event about it is stale.
    payment_revision: Mapped[int] = mapped_column(Integer, default=0)


class OrderItem(Base):
    __tablename__ = "order_items"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("unit_price >= 0", name="unit_price_not_negative"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    product_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    variant_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    sku: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(300))
    category_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[int] = mapped_column(_Money)


class OrderStatusChange(Base):
    """One line of an order's history: what it became, when, why and by whom."""

    __tablename__ = "order_status_history"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(40))
    # "system" for the saga, else the user id of the person who did it.
    actor: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
