"""Request and response bodies of the payments API. Amounts are exact decimal strings."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from panthera.payments.cards import contains_card_number


def _no_card_number(value: str) -> str:
    if contains_card_number(value.encode()):
        raise ValueError("card numbers are never accepted")
    return value


Amount = Annotated[
    str,
    Field(
        pattern=r"^\d{1,12}(\.\d{1,3})?$",
        examples=["19.99"],
        description="A positive decimal string with at most the currency's decimal places.",
    ),
]
Currency = Annotated[
    str, StringConstraints(pattern=r"^[A-Z]{3}$"), Field(examples=["USD"], description="ISO 4217")
]
Reference = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"),
    AfterValidator(_no_card_number),
    Field(description="The order this payment is for (its id)"),
]
PaymentMethodToken = Annotated[
    str,
    StringConstraints(pattern=r"^(tok|pm)_[A-Za-z0-9_]{1,200}$"),
    Field(
        examples=["tok_visa"],
        description="A payment method token from the provider (tok_... or pm_...); "
        "card numbers are refused.",
    ),
]
Reason = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
    AfterValidator(_no_card_number),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PaymentCreate(_Strict):
    orderId: Reference
    amount: Amount
    currency: Currency
    paymentMethod: PaymentMethodToken


class InternalPaymentCreate(PaymentCreate):
    """What the orders saga sends: the payment is made for ``userId``."""

    userId: uuid.UUID


class RefundCreate(_Strict):
    amount: Amount | None = Field(
        default=None, description="Omitted: everything that is left of the payment"
    )
    reason: Reason = "requested_by_customer"


class InternalRefund(_Strict):
    amount: Amount | None = Field(
        default=None, description="Omitted: everything that is left of the payment"
    )
    reason: Reason = "order_cancelled"


class RefundOut(BaseModel):
    refundId: uuid.UUID
    paymentId: uuid.UUID
    amount: str = Field(examples=["5.00"])
    currency: str
    status: str = Field(description="pending, succeeded or failed")
    reason: str
    failureCode: str | None
    createdAt: datetime
    updatedAt: datetime


class PaymentOut(BaseModel):
    paymentId: uuid.UUID
    orderId: str
    userId: uuid.UUID
    amount: str = Field(examples=["19.99"])
    currency: str
    status: str = Field(
        description="requires_confirmation, processing, succeeded, failed, canceled, "
        "partially_refunded or refunded"
    )
    provider: str
    providerPaymentId: str | None
    failureCode: str | None = Field(
        description="Why it failed: card_declined, insufficient_funds, processing_error, "
        "invalid_payment_method..."
    )
    failureMessage: str | None
    amountRefunded: str
    refunds: list[RefundOut]
    createdAt: datetime
    updatedAt: datetime
    revision: int


class WebhookAck(BaseModel):
    received: bool
    duplicate: bool
    outcome: str = Field(description="applied, ignored, unmatched or duplicate")
