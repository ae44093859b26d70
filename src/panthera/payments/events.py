"""Events the payments service publishes: its public contract.

Amounts are integer minor units of ``currency`` (cents for USD). ``subject`` is
the order reference, which the orders saga correlates on; ``revision`` grows
with every change of the payment, so a consumer can recognise a stale event.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from panthera.kernel.events import EventContract


class _PaymentEvent(EventContract):
    payment_id: uuid.UUID
    order_reference: str
    user_id: uuid.UUID
    amount: int
    currency: str
    provider: str
    revision: int
    occurred_at: datetime

    def subject(self) -> str:
        return self.order_reference


class PaymentSucceeded(_PaymentEvent):
    """The money was taken."""

    event_type = "payment.succeeded"
    version = 1

    provider_payment_id: str | None


class PaymentFailed(_PaymentEvent):
    """The payment will not happen: declined, invalid, or canceled at the provider.

    ``reason`` is a stable code: ``card_declined``, ``insufficient_funds``,
    ``processing_error``, ``invalid_payment_method``, ``authentication_required``,
    ``canceled``...
    """

    event_type = "payment.failed"
    version = 1

    reason: str
    message: str | None


class PaymentRefunded(_PaymentEvent):
    """Money went back: ``refund_amount`` now, ``amount_refunded`` in all so far."""

    event_type = "payment.refunded"
    version = 1

    refund_id: uuid.UUID
    refund_amount: int
    amount_refunded: int
    fully_refunded: bool
    reason: str


PUBLISHED = (PaymentSucceeded, PaymentFailed, PaymentRefunded)
