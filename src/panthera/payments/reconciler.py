"""Settling what the provider's word never reached: payments and refunds that wait too long.

A webhook may never come (the test provider's deliveries in flight die with its
process; an endpoint down long enough outlasts Stripe's retries), and an answer
may be lost (the process killed between recording a payment and hearing back).
Nothing else would then move the payment: the orders saga would wait, give up,
and be refused its refund for as long as the payment stays open. So, every few
seconds, what has waited longer than ``payment_reconcile_after_seconds`` is
asked about:

* a ``processing`` payment: where it stands at the provider (``retrieve_payment``);
* a ``requires_confirmation`` payment: the very request again, same parameters
  and idempotency key, so the money is taken once however often it is asked;
* a ``pending`` refund: where it stands, or, when the provider's answer never
  came, the very request again.

Answers go through the functions the immediate answers and webhooks use
(``settle_payment``, ``settle_refund``): a settled payment stays settled, so its
event is published once, and a webhook that arrives afterwards changes nothing.

No transaction is held while the provider is asked: rows are claimed first
(``checked_at`` set and committed; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
replicas claim different rows) and are not chosen again before the age has
passed once more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from panthera.kernel.observability import PAYMENTS_RECONCILED
from panthera.payments import errors, repository
from panthera.payments.models import Payment, PaymentStatus, Refund
from panthera.payments.providers import PaymentProvider, ProviderRejected, ProviderUnavailable
from panthera.payments.refunds import ask_refund, settle_refund_by_id
from panthera.payments.service import UnitsOfWork, confirm_payment, settle_by_id

log = logging.getLogger("panthera.payments.reconciler")

_UNANSWERED = (ProviderUnavailable, errors.PaymentProviderUnavailable)


@dataclass(frozen=True)
class Reconciled:
    """What one pass did: rows taken, and how many of them moved."""

    claimed: int
    moved: int


class Reconciler:
    """Asks the provider about payments and refunds that waited too long; see the module."""

    def __init__(
        self,
        *,
        uows: UnitsOfWork,
        provider: Callable[[], PaymentProvider],
        skip_locked: bool,
        after_seconds: float,
        batch_size: int = 50,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._uows = uows
        # Looked up at each pass: the provider in use may be replaced while running.
        self._provider = provider
        self._skip_locked = skip_locked
        self._after = timedelta(seconds=after_seconds)
        self.batch_size = batch_size
        self._clock = clock

    async def reconcile_once(self) -> Reconciled:
        provider = self._provider()
        now = self._clock()
        waiting_since = now - self._after
        async with self._uows() as uow:
            payments = await repository.claim_waiting_payments(
                uow.session,
                provider.name,
                waiting_since=waiting_since,
                now=now,
                skip_locked=self._skip_locked,
                limit=self.batch_size,
            )
            refunds = await repository.claim_pending_refunds(
                uow.session,
                provider.name,
                waiting_since=waiting_since,
                now=now,
                skip_locked=self._skip_locked,
                limit=self.batch_size,
            )
            await uow.commit()
        moved = 0
        # One row that fails in an unforeseen way must not keep the rest of its
        # batch from being asked about, pass after pass.
        for payment in payments:
            try:
                moved += await self._payment(provider, payment)
            except Exception:
                log.exception("reconciling a payment failed", extra={"payment_id": str(payment.id)})
        for refund, paid in refunds:
            try:
                moved += await self._refund(provider, refund, paid)
            except Exception:
                log.exception("reconciling a refund failed", extra={"refund_id": str(refund.id)})
        return Reconciled(len(payments) + len(refunds), moved)

    async def _payment(self, provider: PaymentProvider, payment: Payment) -> bool:
        context = {"payment_id": str(payment.id), "status": payment.status}
        try:
            if payment.status == PaymentStatus.PROCESSING:
                if payment.provider_payment_id is None:
                    log.error("a processing payment without the provider's id", extra=context)
                    return False
                answer = await provider.retrieve_payment(payment.provider_payment_id)
                after = await settle_by_id(
                    self._uows,
                    payment.id,
                    answer.outcome,
                    answer.provider_payment_id,
                    answer.failure_code,
                    answer.failure_message,
                )
            else:
                if payment.payment_method is None:
                    log.error("no token to ask the provider again with", extra=context)
                    return False
                after = await confirm_payment(self._uows, provider, payment, payment.payment_method)
        except _UNANSWERED as exc:
            log.warning(
                "provider did not answer; will ask again", extra={**context, "error": str(exc)}
            )
            return False
        except ProviderRejected as exc:
            # Not a decline: the provider does not know the payment, or refuses to
            # say. Money may be involved: left to an operator, asked again meanwhile.
            log.error(
                "provider refused to say where a payment stands",
                extra={**context, "code": exc.code},
            )
            return False
        if after.status == payment.status:
            return False
        log.info("payment reconciled with the provider", extra={**context, "now": after.status})
        PAYMENTS_RECONCILED.labels(kind="payment", status=after.status).inc()
        return True

    async def _refund(self, provider: PaymentProvider, refund: Refund, payment: Payment) -> bool:
        context = {"refund_id": str(refund.id), "payment_id": str(payment.id)}
        try:
            if refund.provider_refund_id is not None:
                answer = await provider.retrieve_refund(refund.provider_refund_id)
                _, after = await settle_refund_by_id(self._uows, payment.id, refund.id, answer)
            else:
                _, after = await ask_refund(self._uows, provider, payment, refund)
        except _UNANSWERED as exc:
            log.warning(
                "provider did not answer; will ask again", extra={**context, "error": str(exc)}
            )
            return False
        except ProviderRejected as exc:
            log.error(
                "provider refused to say where a refund stands", extra={**context, "code": exc.code}
            )
            return False
        if after.status == refund.status:
            return False
        log.info("refund reconciled with the provider", extra={**context, "now": after.status})
        PAYMENTS_RECONCILED.labels(kind="refund", status=after.status).inc()
        return True
