"""Refunds: all or part of a payment back, never more than was taken."""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from panthera.kernel.db import UnitOfWork
from panthera.kernel.money import Money
from panthera.payments import errors, repository
from panthera.payments.events import PaymentRefunded
from panthera.payments.models import (
    OPEN_STATUSES,
    REFUNDABLE_STATUSES,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from panthera.payments.providers import (
    PaymentProvider,
    ProviderRefund,
    ProviderRejected,
    ProviderUnavailable,
    RefundOutcome,
)
from panthera.payments.providers.stripe_webhooks import PAYMENT_ID_KEY, REFUND_ID_KEY
from panthera.payments.service import PaymentView, UnitsOfWork, event_fields, payment_view, touch

log = logging.getLogger("panthera.payments")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RefundRequest:
    # Minor units; None refunds everything that is left.
    amount: int | None
    reason: str
    requested_by: uuid.UUID | None
    request_key: str


async def refund_payment(
    uows: UnitsOfWork, provider: PaymentProvider, payment_id: uuid.UUID, request: RefundRequest
) -> tuple[Payment, Refund]:
    """Give back all or part of a payment, never more than was taken."""
    payment, refund = await _record_refund(uows, payment_id, request)
    if refund.status != RefundStatus.PENDING or refund.provider_refund_id is not None:
        return payment, refund
    return await ask_refund(uows, provider, payment, refund)


async def ask_refund(
    uows: UnitsOfWork, provider: PaymentProvider, payment: Payment, refund: Refund
) -> tuple[Payment, Refund]:
    """Ask the provider for a recorded refund, and apply its answer.

    Always the same request for a refund, so asking again after a lost answer
    gives the money back once.
    """
    assert payment.provider_payment_id is not None
    try:
        answer = await provider.refund(
            provider_payment_id=payment.provider_payment_id,
            amount=refund.amount,
            idempotency_key=f"panthera-refund-{refund.id}",
            metadata={REFUND_ID_KEY: str(refund.id), PAYMENT_ID_KEY: str(payment.id)},
        )
    except ProviderUnavailable as exc:
        log.warning(
            "payment provider did not answer a refund",
            extra={"refund_id": str(refund.id), "error": str(exc)},
        )
        raise errors.PaymentProviderUnavailable() from exc
    except ProviderRejected as exc:
        log.error(
            "payment provider refused a refund",
            extra={"refund_id": str(refund.id), "code": exc.code},
        )
        answer = ProviderRefund(None, RefundOutcome.FAILED, exc.code, exc.message)
    return await settle_refund_by_id(uows, payment.id, refund.id, answer)


async def settle_refund_by_id(
    uows: UnitsOfWork, payment_id: uuid.UUID, refund_id: uuid.UUID, answer: ProviderRefund
) -> tuple[Payment, Refund]:
    async with uows() as uow:
        # Payment first, then refund: the one lock order of every refund path.
        locked = await repository.payment(uow.session, payment_id, for_update=True)
        locked_refund = await repository.refund(uow.session, refund_id, for_update=True)
        assert locked is not None
        assert locked_refund is not None
        settle_refund(
            uow,
            locked,
            locked_refund,
            answer.outcome,
            provider_refund_id=answer.provider_refund_id,
            failure_code=answer.failure_code,
        )
        await uow.commit()
    return locked, locked_refund


async def _record_refund(
    uows: UnitsOfWork, payment_id: uuid.UUID, request: RefundRequest
) -> tuple[Payment, Refund]:
    async with uows() as uow:
        session = uow.session
        payment = await repository.payment(session, payment_id, for_update=True)
        if payment is None:
            raise errors.PaymentNotFound()
        refund = await repository.refund_by_request_key(session, payment.id, request.request_key)
        if refund is not None:
            return payment, refund
        if payment.status not in REFUNDABLE_STATUSES or payment.provider_payment_id is None:
            raise errors.PaymentNotRefundable()
        # Pending refunds count: two refunds racing for the last euro cannot both win.
        remaining = payment.amount - await repository.committed_refunds(session, payment.id)
        amount = remaining if request.amount is None else request.amount
        if amount <= 0 or amount > remaining:
            left = Money(max(remaining, 0), payment.currency).format()
            raise errors.RefundExceedsCapture(
                f"At most {left} {payment.currency} can still be refunded.", remaining=left
            )
        now = _now()
        refund = Refund(
            id=uuid.uuid4(),
            payment_id=payment.id,
            amount=amount,
            reason=request.reason,
            status=RefundStatus.PENDING,
            requested_by=request.requested_by,
            request_key=request.request_key,
            created_at=now,
            updated_at=now,
        )
        session.add(refund)
        await uow.commit()
    return payment, refund


def settle_refund(
    uow: UnitOfWork,
    payment: Payment,
    refund: Refund,
    outcome: RefundOutcome,
    *,
    provider_refund_id: str | None = None,
    failure_code: str | None = None,
) -> bool:
    """Apply what the provider says about a refund; False when it changes nothing."""
    changed = False
    if provider_refund_id and refund.provider_refund_id is None:
        refund.provider_refund_id = provider_refund_id
        changed = True
    if refund.status == RefundStatus.PENDING and outcome is not RefundOutcome.PENDING:
        changed = True
        if outcome is RefundOutcome.FAILED:
            refund.status = RefundStatus.FAILED
            refund.failure_code = (failure_code or "refund_failed")[:60]
        else:
            refund.status = RefundStatus.SUCCEEDED
            payment.amount_refunded += refund.amount
            payment.status = (
                PaymentStatus.REFUNDED
                if payment.amount_refunded >= payment.amount
                else PaymentStatus.PARTIALLY_REFUNDED
            )
            touch(payment)
            uow.publish(
                PaymentRefunded(
                    **event_fields(payment),
                    refund_id=refund.id,
                    refund_amount=refund.amount,
                    amount_refunded=payment.amount_refunded,
                    fully_refunded=payment.status == PaymentStatus.REFUNDED,
                    reason=refund.reason,
                )
            )
    if changed:
        refund.updated_at = _now()
    return changed


async def refund_order(
    uows: UnitsOfWork,
    provider: PaymentProvider,
    order_reference: str,
    *,
    reason: str,
    request_key: str,
    amount: int | None = None,
) -> PaymentView:
    """Give back ``amount`` of an order's payment, or everything left of it (compensation).

    Harmless to repeat: a failed payment, or one refunded already, is answered as is.
    A payment still waiting for the provider is a conflict: ask again later.
    """
    async with uows() as uow:
        session = uow.session
        payment = await repository.live_payment_of_order(
            session, order_reference
        ) or await repository.latest_payment_of_order(session, order_reference)
        if payment is None:
            raise errors.PaymentNotFound()
        if payment.status in OPEN_STATUSES:
            raise errors.PaymentInProgress()
        refundable = payment.status in REFUNDABLE_STATUSES and (
            payment.amount > await repository.committed_refunds(session, payment.id)
        )
        payment_id = payment.id
    if amount is not None:
        if payment.status not in REFUNDABLE_STATUSES:
            raise errors.PaymentNotRefundable()
        await refund_payment(
            uows,
            provider,
            payment_id,
            RefundRequest(amount=amount, reason=reason, requested_by=None, request_key=request_key),
        )
    elif refundable:
        # Another refund may have taken what was left meanwhile: then all is given back.
        with contextlib.suppress(errors.RefundExceedsCapture):
            await refund_payment(
                uows,
                provider,
                payment_id,
                RefundRequest(
                    amount=None, reason=reason, requested_by=None, request_key=request_key
                ),
            )
    async with uows() as uow:
        view = await payment_view(uow.session, payment_id)
    assert view is not None
    return view
