"""Request and response bodies of the orders API. Amounts are exact decimal strings."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from panthera.orders.states import OrderStatus

Amount = Annotated[
    str,
    Field(
        pattern=r"^\d{1,12}(\.\d{1,3})?$",
        examples=["19.99"],
        description="A positive decimal string with at most the currency's decimal places.",
    ),
]
PaymentMethodToken = Annotated[
    str,
    StringConstraints(pattern=r"^(tok|pm)_[A-Za-z0-9_]{1,200}$"),
    Field(
        examples=["tok_visa"],
        description="A payment method token from the provider (tok_... or pm_...). "
        "The test provider's: tok_visa succeeds, tok_chargeDeclined is declined, "
        "tok_chargeDeclinedInsufficientFunds fails for funds, "
        "tok_chargeDeclinedProcessingError fails with a provider error.",
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrderItemIn(_Strict):
    productId: uuid.UUID
    quantity: int = Field(ge=1, le=1000)
    variantId: uuid.UUID | None = Field(
        default=None, description="Which variant, for a product that has several"
    )


class OrderCreate(_Strict):
    items: list[OrderItemIn] = Field(min_length=1, max_length=100)
    shippingAddress: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)
    ]
    paymentMethod: PaymentMethodToken


class OrderCreated(BaseModel):
    orderId: uuid.UUID
    status: OrderStatus = Field(examples=["PENDING"])
    totalAmount: str = Field(examples=["39.98"])
    currency: str = Field(examples=["USD"])


class OrderItemOut(BaseModel):
    productId: uuid.UUID
    variantId: uuid.UUID
    sku: str
    name: str
    quantity: int
    unitPrice: str = Field(examples=["19.99"], description="The catalog's price when ordered")
    lineTotal: str = Field(examples=["39.98"])


class StatusChangeOut(BaseModel):
    status: OrderStatus
    reason: str | None
    at: datetime


class OrderOut(BaseModel):
    orderId: uuid.UUID
    userId: uuid.UUID
    items: list[OrderItemOut]
    status: OrderStatus
    totalAmount: str = Field(examples=["39.98"])
    currency: str
    amountRefunded: str = Field(examples=["0.00"])
    shippingAddress: str
    cancelReason: str | None = Field(
        description="Why it was cancelled: out_of_stock, card_declined, insufficient_funds, "
        "payment_error, reservation_expired, timed_out, cancelled_by_customer, "
        "cancelled_by_staff..."
    )
    cancelMessage: str | None
    trackingNumber: str | None
    carrier: str | None
    paymentId: uuid.UUID | None
    statusHistory: list[StatusChangeOut]
    createdAt: datetime
    updatedAt: datetime
    revision: int


class OrderSummary(BaseModel):
    orderId: uuid.UUID
    userId: uuid.UUID
    status: OrderStatus
    totalAmount: str = Field(examples=["39.98"])
    currency: str
    itemCount: int
    cancelReason: str | None
    createdAt: datetime
    updatedAt: datetime


class ShipmentIn(_Strict):
    trackingNumber: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)
    ]
    carrier: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
        | None
    ) = None


class CancelIn(_Strict):
    message: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] | None = None


class RefundIn(_Strict):
    amount: Amount | None = Field(
        default=None, description="Omitted: everything that is left of the payment"
    )
    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)
    ] = "requested_by_customer"
