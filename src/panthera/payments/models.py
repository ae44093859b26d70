"""The payments' tables: payments, refunds, provider webhooks received, idempotency keys.

No card data is kept, ever: the API takes provider tokens only, and what the
provider knows about the card stays with it. A payment keeps its token only
until the provider has answered, so that a lost answer can be asked for again.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from panthera.kernel.db import UTCDateTime, service_metadata
from panthera.kernel.events.outbox import event_tables
from panthera.kernel.idempotency import idempotency_table


class Base(DeclarativeBase):
    metadata = service_metadata()


EVENT_TABLES = event_tables(Base.metadata)
IDEMPOTENCY_KEYS = idempotency_table(Base.metadata)


class PaymentStatus(StrEnum):
    # Recorded, not yet answered by the provider (or its answer was lost).
    REQUIRES_CONFIRMATION = "requires_confirmation"
    # Accepted by the provider; the outcome arrives as a webhook.
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


# An order has at most one payment in these states: a retry after a failure may
# make a new one, but nothing takes the money for an order twice.
LIVE_STATUSES = frozenset(
    {
        PaymentStatus.REQUIRES_CONFIRMATION,
        PaymentStatus.PROCESSING,
        PaymentStatus.SUCCEEDED,
        PaymentStatus.PARTIALLY_REFUNDED,
        PaymentStatus.REFUNDED,
    }
)
# Waiting for the provider's word.
OPEN_STATUSES = frozenset({PaymentStatus.REQUIRES_CONFIRMATION, PaymentStatus.PROCESSING})
REFUNDABLE_STATUSES = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED})
# Only a payment in these states may have refunds.
REFUNDED_STATUSES = REFUNDABLE_STATUSES | {PaymentStatus.REFUNDED}


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


_DEAD = "status IN ('failed', 'canceled')"


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(
            "amount_refunded >= 0 AND amount_refunded <= amount", name="refunds_within_amount"
        ),
        UniqueConstraint("provider", "provider_payment_id", name="uq_payments_provider_payment_id"),
        # One payment per request: a request sent again finds its payment by this
        # index instead of an idempotency key of its own, and it serves every lookup
        # by order too (the order reference leads).
        UniqueConstraint(
            "order_reference", "request_key", name="uq_payments_order_reference_request_key"
        ),
        Index(
            "uq_payments_live_order_reference",
            "order_reference",
            unique=True,
            sqlite_where=text(f"NOT ({_DEAD})"),
            postgresql_where=text(f"NOT ({_DEAD})"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    # The caller's id for what is paid for (an order id); the payments service
    # never reads the orders' data.
    order_reference: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(30), index=True)
    provider: Mapped[str] = mapped_column(String(20))
    provider_payment_id: Mapped[str | None] = mapped_column(String(255))
    # The provider's token (tok_..., pm_...), never card data; kept while the
    # payment requires confirmation, so the reconciler can repeat the very request
    # (same parameters, same idempotency key) whose answer was lost.
    payment_method: Mapped[str | None] = mapped_column(String(210))
    failure_code: Mapped[str | None] = mapped_column(String(60))
    failure_message: Mapped[str | None] = mapped_column(String(500))
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    # "<idempotency scope>:<key>" of the request that made it: only that request,
    # retried, may resume a payment whose provider answer was lost.
    request_key: Mapped[str] = mapped_column(String(400))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    # When the reconciler last took it to ask the provider: replicas leave it to
    # that one until the reconcile age has passed again.
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Refund(Base):
    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        UniqueConstraint("payment_id", "request_key", name="uq_refunds_payment_id_request_key"),
        UniqueConstraint("provider_refund_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    payment_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("payments.id", ondelete="RESTRICT"), index=True
    )
    amount: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20))
    provider_refund_id: Mapped[str | None] = mapped_column(String(255))
    failure_code: Mapped[str | None] = mapped_column(String(60))
    # Who asked: an administrator, or None for another service (the orders saga).
    requested_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    request_key: Mapped[str] = mapped_column(String(400))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # As Payment.checked_at.
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ProviderEventRecord(Base):
    """A provider webhook applied (or ignored): its id makes a redelivery change nothing."""

    __tablename__ = "provider_events"

    provider: Mapped[str] = mapped_column(String(20), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(120))
    # What it did: "applied", "ignored" (nothing to change), "unmatched" (no such payment).
    outcome: Mapped[str] = mapped_column(String(20))
    payment_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
