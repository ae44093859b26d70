"""Taking payments: record, ask the provider, apply its answer (refunds.py, webhooks.py).

A call to the provider never happens inside a database transaction (it may take
seconds, and on SQLite the write lock would stop every other writer). So a
payment is recorded first (``requires_confirmation``), the provider is asked
with an idempotency key derived from the payment's id, and its answer is
applied in a second transaction. When the answer is lost, the payment waits:
the same request retried asks again under the same provider key (the money is
never taken twice), the provider's webhook settles it in any case, because it
carries our payment id in its metadata, and when neither comes the reconciler
(reconciler.py) asks the provider. Refunds work the same way.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.kernel.db import UnitOfWork
from panthera.kernel.money import Money
from panthera.payments import errors, repository
from panthera.payments.events import PaymentFailed, PaymentSucceeded
from panthera.payments.models import OPEN_STATUSES, Payment, PaymentStatus, Refund
from panthera.payments.providers import (
    PaymentOutcome,
    PaymentProvider,
    ProviderRejected,
    ProviderUnavailable,
)
from panthera.payments.providers.stripe_webhooks import PAYMENT_ID_KEY

log = logging.getLogger("panthera.payments")

UnitsOfWork = Callable[[], UnitOfWork]


def _now() -> datetime:
    return datetime.now(UTC)


def touch(payment: Payment) -> None:
    payment.revision += 1
    payment.updated_at = _now()


# ------------------------------------------------------------------ payments


@dataclass(frozen=True)
class PaymentRequest:
    order_reference: str
    user_id: uuid.UUID
    amount: Money
    # The provider's payment method token; never a card number.
    token: str
    # "<idempotency scope>:<key>" of the request.
    request_key: str


@dataclass(frozen=True)
class PaymentView:
    payment: Payment
    refunds: list[Refund]


async def create_payment(
    uows: UnitsOfWork, provider: PaymentProvider, request: PaymentRequest
) -> Payment:
    """Take the money for an order once: record, ask the provider, apply its answer."""
    payment = await _record(uows, provider.name, request)
    if payment.status != PaymentStatus.REQUIRES_CONFIRMATION:
        return payment
    return await confirm_payment(uows, provider, payment, request.token)


async def confirm_payment(
    uows: UnitsOfWork, provider: PaymentProvider, payment: Payment, token: str
) -> Payment:
    """Ask the provider to take a recorded payment, and apply its answer.

    Always the same request for a payment (its parameters and idempotency key
    come from the row), so asking again after a lost answer takes the money once.
    """
    try:
        answer = await provider.create_payment(
            amount=payment.amount,
            currency=payment.currency,
            token=token,
            idempotency_key=f"panthera-payment-{payment.id}",
            metadata={PAYMENT_ID_KEY: str(payment.id), "order_reference": payment.order_reference},
        )
    except ProviderUnavailable as exc:
        log.warning(
            "payment provider did not answer",
            extra={"payment_id": str(payment.id), "error": str(exc)},
        )
        raise errors.PaymentProviderUnavailable() from exc
    except ProviderRejected as exc:
        # Refused outright (an amount under the provider's minimum, a broken
        # configuration): nothing was taken, and asking again would not help.
        log.error(
            "payment provider refused the request",
            extra={"payment_id": str(payment.id), "code": exc.code},
        )
        return await settle_by_id(
            uows, payment.id, PaymentOutcome.FAILED, None, exc.code, exc.message or None
        )
    return await settle_by_id(
        uows,
        payment.id,
        answer.outcome,
        answer.provider_payment_id,
        answer.failure_code,
        answer.failure_message,
    )


async def _record(uows: UnitsOfWork, provider: str, request: PaymentRequest) -> Payment:
    """The payment row of this request: new, or the one an earlier run of it left.

    Inserted straight away: the unique constraints say whether this request (its
    order and key) already made a payment, or another payment of the order is
    live, and only then is anything read.
    """
    now = _now()
    payment = Payment(
        id=uuid.uuid4(),
        order_reference=request.order_reference,
        user_id=request.user_id,
        amount=request.amount.amount,
        currency=request.amount.currency,
        status=PaymentStatus.REQUIRES_CONFIRMATION,
        provider=provider,
        payment_method=request.token,
        amount_refunded=0,
        request_key=request.request_key,
        created_at=now,
        updated_at=now,
        revision=1,
    )
    async with uows() as uow:
        uow.session.add(payment)
        try:
            await uow.commit()
        except IntegrityError:
            pass
        else:
            return payment
    return await _earlier_payment(uows, request)


async def _earlier_payment(uows: UnitsOfWork, request: PaymentRequest) -> Payment:
    """Why a payment of this request could not be recorded: its own earlier one, or a rival."""
    async with uows() as uow:
        session = uow.session
        # The same request run again (its answer was lost): its payment, even a
        # failed one, is the answer; the token is not charged a second time.
        earlier = await repository.payment_of_request(
            session, request.order_reference, request.request_key
        )
        if earlier is not None:
            _refuse_another_request(earlier, request)
            return earlier
        existing = await repository.live_payment_of_order(session, request.order_reference)
    if existing is not None and existing.status not in OPEN_STATUSES:
        raise errors.OrderAlreadyPaid()
    # Under way for another request, or it was between our insert and this read.
    raise errors.PaymentInProgress()


def _refuse_another_request(payment: Payment, request: PaymentRequest) -> None:
    """A request sent again must ask for what it first asked for."""
    same = (
        payment.amount == request.amount.amount
        and payment.currency == request.amount.currency
        and payment.user_id == request.user_id
        # Kept only until the provider answered; resuming asks with the request's token.
        and (payment.payment_method is None or payment.payment_method == request.token)
    )
    if not same:
        raise errors.PaymentRequestMismatch()


async def settle_by_id(
    uows: UnitsOfWork,
    payment_id: uuid.UUID,
    outcome: PaymentOutcome,
    provider_payment_id: str | None,
    failure_code: str | None,
    failure_message: str | None,
) -> Payment:
    async with uows() as uow:
        payment = await settle_open_payment(
            uow,
            payment_id,
            outcome,
            provider_payment_id=provider_payment_id,
            failure_code=failure_code,
            failure_message=failure_message,
        )
        if payment is None:
            payment = await repository.payment(uow.session, payment_id, for_update=True)
            if payment is None:
                raise errors.PaymentNotFound()
            settle_payment(
                uow,
                payment,
                outcome,
                provider_payment_id=provider_payment_id,
                failure_code=failure_code,
                failure_message=failure_message,
            )
        await uow.commit()
    return payment


async def settle_open_payment(
    uow: UnitOfWork,
    payment_id: uuid.UUID,
    outcome: PaymentOutcome,
    *,
    provider_payment_id: str | None = None,
    failure_code: str | None = None,
    failure_message: str | None = None,
    provider: str | None = None,
) -> Payment | None:
    """Move a payment still waiting for the provider in one UPDATE ... RETURNING.

    The common case of :func:`settle_payment`, without reading the row first. None
    when the payment is not waiting (not found, settled, already processing when
    told it is processing, or holding another provider id): the caller then takes
    the general way, a locked read and ``settle_payment``.
    """
    conditions = [Payment.id == payment_id]
    if outcome is PaymentOutcome.PROCESSING:
        conditions.append(Payment.status == PaymentStatus.REQUIRES_CONFIRMATION)
    else:
        conditions.append(Payment.status.in_(OPEN_STATUSES))
    if provider is not None:
        conditions.append(Payment.provider == provider)
    values: dict[str, object] = {
        "payment_method": None,
        "revision": Payment.revision + 1,
        "updated_at": _now(),
    }
    if provider_payment_id:
        conditions.append(
            or_(
                Payment.provider_payment_id.is_(None),
                Payment.provider_payment_id == provider_payment_id,
            )
        )
        values["provider_payment_id"] = provider_payment_id
    if outcome is PaymentOutcome.PROCESSING:
        values["status"] = PaymentStatus.PROCESSING
    elif outcome is PaymentOutcome.SUCCEEDED:
        values["status"] = PaymentStatus.SUCCEEDED
    else:
        failed = outcome is PaymentOutcome.FAILED
        values["status"] = PaymentStatus.FAILED if failed else PaymentStatus.CANCELED
        values["failure_code"] = (failure_code or ("payment_failed" if failed else "canceled"))[:60]
        values["failure_message"] = failure_message[:500] if failure_message else None
    payment: Payment | None = (
        await uow.session.execute(
            update(Payment)
            .where(*conditions)
            .values(values)
            .returning(Payment)
            .execution_options(synchronize_session=False, populate_existing=True)
        )
    ).scalar_one_or_none()
    if payment is not None:
        _publish_outcome(uow, payment)
    return payment


def settle_payment(
    uow: UnitOfWork,
    payment: Payment,
    outcome: PaymentOutcome,
    *,
    provider_payment_id: str | None = None,
    failure_code: str | None = None,
    failure_message: str | None = None,
) -> bool:
    """Apply what the provider says about a payment; False when it changes nothing.

    Only a payment still waiting moves: the provider's immediate answer and its
    webhook may arrive in either order, and a settled payment stays settled.
    """
    changed = False
    if provider_payment_id and payment.provider_payment_id is None:
        payment.provider_payment_id = provider_payment_id
        changed = True
    if payment.status not in OPEN_STATUSES:
        if outcome is PaymentOutcome.SUCCEEDED and payment.status in (
            PaymentStatus.FAILED,
            PaymentStatus.CANCELED,
        ):
            log.error(
                "the provider took money for a payment recorded as failed: refund it there",
                extra={"payment_id": str(payment.id)},
            )
        if changed:
            touch(payment)
        return changed
    if outcome is PaymentOutcome.PROCESSING:
        if payment.status == PaymentStatus.REQUIRES_CONFIRMATION:
            payment.status = PaymentStatus.PROCESSING
            changed = True
    elif outcome is PaymentOutcome.SUCCEEDED:
        payment.status = PaymentStatus.SUCCEEDED
        changed = True
    else:
        failed = outcome is PaymentOutcome.FAILED
        payment.status = PaymentStatus.FAILED if failed else PaymentStatus.CANCELED
        payment.failure_code = (failure_code or ("payment_failed" if failed else "canceled"))[:60]
        payment.failure_message = failure_message[:500] if failure_message else None
        changed = True
    if not changed:
        return False
    # The provider has it now: the token is not needed to ask again.
    payment.payment_method = None
    touch(payment)
    _publish_outcome(uow, payment)
    return True


def _publish_outcome(uow: UnitOfWork, payment: Payment) -> None:
    if payment.status == PaymentStatus.SUCCEEDED:
        uow.publish(
            PaymentSucceeded(
                **event_fields(payment), provider_payment_id=payment.provider_payment_id
            )
        )
    elif payment.status in (PaymentStatus.FAILED, PaymentStatus.CANCELED):
        uow.publish(
            PaymentFailed(
                **event_fields(payment),
                reason=payment.failure_code or "payment_failed",
                message=payment.failure_message,
            )
        )


def event_fields(payment: Payment) -> dict[str, object]:
    return {
        "payment_id": payment.id,
        "order_reference": payment.order_reference,
        "user_id": payment.user_id,
        "amount": payment.amount,
        "currency": payment.currency,
        "provider": payment.provider,
        "revision": payment.revision,
        "occurred_at": payment.updated_at,
    }


async def payment_view(session: AsyncSession, payment_id: uuid.UUID) -> PaymentView | None:
    payment = await repository.payment(session, payment_id)
    if payment is None:
        return None
    return PaymentView(payment, await repository.refunds_of(session, [payment.id]))
