"""Turning payment rows into API bodies."""

from __future__ import annotations

from collections.abc import Sequence

from panthera.kernel.money import Money
from panthera.payments.models import Payment, Refund
from panthera.payments.schemas import PaymentOut, RefundOut


def refund_out(refund: Refund, currency: str) -> RefundOut:
    return RefundOut(
        refundId=refund.id,
        paymentId=refund.payment_id,
        amount=Money(refund.amount, currency).format(),
        currency=currency,
        status=refund.status,
        reason=refund.reason,
        failureCode=refund.failure_code,
        createdAt=refund.created_at,
        updatedAt=refund.updated_at,
    )


def payment_out(payment: Payment, refunds: Sequence[Refund] = ()) -> PaymentOut:
    return PaymentOut(
        paymentId=payment.id,
        orderId=payment.order_reference,
        userId=payment.user_id,
        amount=Money(payment.amount, payment.currency).format(),
        currency=payment.currency,
        status=payment.status,
        provider=payment.provider,
        providerPaymentId=payment.provider_payment_id,
        failureCode=payment.failure_code,
        failureMessage=payment.failure_message,
        amountRefunded=Money(payment.amount_refunded, payment.currency).format(),
        refunds=[refund_out(refund, payment.currency) for refund in refunds],
        createdAt=payment.created_at,
        updatedAt=payment.updated_at,
        revision=payment.revision,
    )
