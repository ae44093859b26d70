"""Provider webhooks, applied once each: the event id is kept with the effect."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from panthera.kernel.db import UnitOfWork
from panthera.kernel.sql import Transaction
from panthera.payments import repository
from panthera.payments.models import Payment
from panthera.payments.providers import (
    EventKind,
    InvalidWebhook,
    PaymentOutcome,
    PaymentProvider,
    ProviderEvent,
    RefundOutcome,
)
from panthera.payments.refunds import settle_refund
from panthera.payments.service import (
    ProviderWord,
    UnitsOfWork,
    WrittenPayments,
    settle_known_and_record,
    settle_open_payment,
    settle_open_payment_and_record,
    settle_payment,
)

log = logging.getLogger("panthera.payments")


def _now() -> datetime:
    return datetime.now(UTC)


_PAYMENT_OUTCOMES = {
    EventKind.PAYMENT_SUCCEEDED: PaymentOutcome.SUCCEEDED,
    EventKind.PAYMENT_FAILED: PaymentOutcome.FAILED,
    EventKind.PAYMENT_CANCELED: PaymentOutcome.CANCELED,
    EventKind.PAYMENT_PROCESSING: PaymentOutcome.PROCESSING,
}
_REFUND_OUTCOMES = {
    EventKind.REFUND_SUCCEEDED: RefundOutcome.SUCCEEDED,
    EventKind.REFUND_FAILED: RefundOutcome.FAILED,
}
DUPLICATE = "duplicate"


async def receive_webhook(
    uows: UnitsOfWork,
    provider: PaymentProvider,
    headers: Mapping[str, str],
    body: bytes,
    *,
    transaction: Callable[[], Transaction] | None = None,
    written: WrittenPayments | None = None,
) -> str:
    """Verify a webhook by its signature and apply it; raises InvalidWebhook when forged.

    The webhook endpoint and the test provider's own deliveries both come here.
    """
    try:
        event = provider.parse_webhook(headers, body)
    except InvalidWebhook as exc:
        log.warning("webhook refused", extra={"provider": provider.name, "reason": exc.reason})
        raise
    return await apply_webhook(uows, provider.name, event, transaction=transaction, written=written)


async def apply_webhook(
    uows: UnitsOfWork,
    provider: str,
    event: ProviderEvent,
    *,
    transaction: Callable[[], Transaction] | None = None,
    written: WrittenPayments | None = None,
) -> str:
    """Apply a verified webhook once: ``applied``, ``ignored``, ``unmatched`` or ``duplicate``.

    The event's id is recorded in the same transaction as its effect, so a
    redelivery (providers deliver at least once) finds it and changes nothing. It is
    recorded last, with what it did: a copy finds the id taken and its transaction
    (which changed nothing, the first copy having settled the payment) is let go.
    """
    settled_open = False
    settling = _PAYMENT_OUTCOMES.get(event.kind)
    if settling is not None and event.payment_id is not None and transaction is not None:
        word = ProviderWord(
            outcome=settling,
            provider=provider,
            provider_payment_id=event.provider_payment_id,
            failure_code=event.failure_code,
            failure_message=event.failure_message,
            record={
                "provider": provider,
                "event_id": event.id,
                "type": event.type,
                "received_at": _now(),
                "payload": event.payload,
            },
        )
        known = None
        if written is not None and settling is not PaymentOutcome.PROCESSING:
            known = await written.take(event.payment_id)
        # Waiting for this webhook as this process wrote it: settled, recorded and its
        # event written in one statement, if the row is still as written here.
        if known is not None and await settle_known_and_record(transaction, known, word):
            return "applied"
        # PostgreSQL: ours (from the metadata) and still waiting, settled and recorded
        # in one statement on the driver. A copy of a webhook applied before finds the
        # record taken; a payment not waiting takes the general way below.
        settled_open = True
        async with transaction() as tx:
            done = await settle_open_payment_and_record(tx, event.payment_id, word)
            if done is not None:
                if not done[1]:
                    return DUPLICATE
                await tx.commit()
                return "applied"
    async with uows() as uow:
        outcome, payment_id = await _apply(uow, provider, event, settled_open=settled_open)
        recorded = await repository.record_provider_event(
            uow.session,
            provider=provider,
            event_id=event.id,
            type=event.type,
            outcome=outcome,
            payment_id=payment_id,
            received_at=_now(),
            payload=event.payload,
        )
        if not recorded:
            return DUPLICATE
        await uow.commit()
    return outcome


async def _payment_of_event(
    session: AsyncSession, provider: str, event: ProviderEvent
) -> Payment | None:
    payment = None
    if event.provider_payment_id:
        payment = await repository.payment_by_provider_id(
            session, provider, event.provider_payment_id
        )
    if payment is None and event.payment_id is not None:
        # Our id, from the metadata: the webhook may beat the provider's answer.
        payment = await repository.payment(session, event.payment_id, for_update=True)
        if payment is not None and payment.provider != provider:
            payment = None
    return payment


async def _apply(
    uow: UnitOfWork, provider: str, event: ProviderEvent, *, settled_open: bool = False
) -> tuple[str, uuid.UUID | None]:
    """``settled_open``: the one-statement settling was tried already and did not apply."""
    session = uow.session
    if event.kind in _PAYMENT_OUTCOMES:
        if event.payment_id is not None and not settled_open:
            # Ours (from the metadata) and still waiting: settled in one statement.
            settled = await settle_open_payment(
                uow,
                event.payment_id,
                _PAYMENT_OUTCOMES[event.kind],
                provider_payment_id=event.provider_payment_id,
                failure_code=event.failure_code,
                failure_message=event.failure_message,
                provider=provider,
            )
            if settled is not None:
                return "applied", settled.id
        payment = await _payment_of_event(session, provider, event)
        if payment is None:
            log.warning("webhook for an unknown payment", extra={"event_id": event.id})
            return "unmatched", None
        changed = settle_payment(
            uow,
            payment,
            _PAYMENT_OUTCOMES[event.kind],
            provider_payment_id=event.provider_payment_id,
            failure_code=event.failure_code,
            failure_message=event.failure_message,
        )
        return ("applied" if changed else "ignored"), payment.id
    if event.kind in _REFUND_OUTCOMES:
        refund = None
        if event.provider_refund_id:
            refund = await repository.refund_by_provider_id(session, event.provider_refund_id)
        if refund is None and event.refund_id is not None:
            refund = await repository.refund(session, event.refund_id)
        if refund is None:
            # A refund made at the provider (its dashboard), not through us.
            log.warning("webhook for a refund not made here", extra={"event_id": event.id})
            return "unmatched", None
        # Payment first, then refund: the same lock order as refund_payment.
        payment = await repository.payment(session, refund.payment_id, for_update=True)
        refund = await repository.refund(session, refund.id, for_update=True)
        assert payment is not None
        assert refund is not None
        changed = settle_refund(
            uow,
            payment,
            refund,
            _REFUND_OUTCOMES[event.kind],
            provider_refund_id=event.provider_refund_id,
            failure_code=event.failure_code,
        )
        return ("applied" if changed else "ignored"), payment.id
    return "ignored", None
