"""Reactions to other services' events: the recipients directory and the messages they cause.

Which event sends what:

- ``user.registered``: a welcome mail (not transactional: it honours unsubscribing);
- verification, password reset and "someone tried your address": a mail each;
- ``order.confirmed``, ``.shipped``, ``.delivered``, ``.cancelled`` and
  ``payment.refunded``: a mail, and a text and a push where the user opted in.

``order.refunded`` sends nothing: each refund is already told from
``payment.refunded``, which the money's own service publishes once per refund;
both would mail the shopper twice about one refund.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from panthera.kernel.events import Envelope, EventContract
from panthera.kernel.money import InvalidAmount, Money
from panthera.kernel.service import EventHandler, ServiceRuntime, Subscription
from panthera.kernel.sql import Transaction
from panthera.notifications.service import (
    NotificationsDeps,
    forget_recipient,
    notify_user,
    remember_recipient,
    send_email,
    write_queued,
)
from panthera.orders.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderDelivered,
    OrderLine,
    OrderShipped,
)
from panthera.payments.events import PaymentRefunded
from panthera.users.events import (
    EmailVerificationRequested,
    PasswordResetRequested,
    RegistrationAttemptedForExistingAccount,
    UserDeleted,
    UserRegistered,
    UserUpdated,
)

# What a shopper reads for each cancellation reason the orders service names.
CANCELLATION_REASONS = {
    "out_of_stock": "some items are out of stock",
    "card_declined": "the card was declined",
    "insufficient_funds": "the card was declined for insufficient funds",
    "payment_error": "the payment could not be taken",
    "reservation_expired": "the payment did not arrive in time",
    "timed_out": "the payment did not arrive in time",
    "cancelled_by_customer": "you cancelled it",
    "cancelled_by_staff": "our team cancelled it",
}


def _deps(runtime: ServiceRuntime) -> NotificationsDeps:
    deps: NotificationsDeps = runtime.components["notifications_deps"]
    return deps


def money(amount: int, currency: str) -> str:
    """``12.50 EUR``; an unknown currency shows its minor units rather than failing a message."""
    try:
        return f"{Money(amount, currency).format()} {currency}"
    except InvalidAmount:
        return f"{amount} {currency} (minor units)"


def order_reference(order_id: object) -> str:
    """The short reference shoppers see: the first eight characters of the id."""
    return str(order_id).replace("-", "")[:8].upper()


def _lines(items: tuple[OrderLine, ...], currency: str) -> list[dict[str, Any]]:
    return [
        {
            "name": line.name,
            "sku": line.sku,
            "quantity": line.quantity,
            "unit_price": money(line.unit_price, currency),
            "line_total": money(line.line_total, currency),
        }
        for line in items
    ]


def _order_context(event: Any) -> dict[str, Any]:
    context: dict[str, Any] = {
        "order_id": str(event.order_id),
        "order_reference": order_reference(event.order_id),
        "total": money(event.total_amount, event.currency),
        "status": event.status,
    }
    if hasattr(event, "items"):
        context["items"] = _lines(event.items, event.currency)
    return context


def _shipped_context(event: OrderShipped) -> dict[str, Any]:
    return {
        **_order_context(event),
        "tracking_number": event.tracking_number,
        "carrier": event.carrier or "",
    }


def _cancelled_context(event: OrderCancelled) -> dict[str, Any]:
    reason = CANCELLATION_REASONS.get(event.reason, "it could not be completed")
    return {**_order_context(event), "reason": reason, "reason_code": event.reason}


def _refund_context(event: PaymentRefunded) -> dict[str, Any]:
    return {
        "order_reference": order_reference(event.order_reference),
        "order_id": event.order_reference,
        "refund_amount": money(event.refund_amount, event.currency),
        "amount_refunded": money(event.amount_refunded, event.currency),
        "payment_total": money(event.amount, event.currency),
        "fully_refunded": event.fully_refunded,
    }


def _link_context(event: Any) -> dict[str, Any]:
    return {"first_name": event.first_name, "token": event.token, "expires_at": event.expires_at}


def _mail(template: str, context: Callable[[Any], dict[str, Any]]) -> EventHandler:
    """A handler that mails the address the event names with ``template``."""

    async def handle(
        runtime: ServiceRuntime, tx: Transaction, event: Any, envelope: Envelope
    ) -> None:
        await send_email(
            _deps(runtime),
            tx,
            event_id=envelope.id,
            user_id=event.user_id,
            to=event.email,
            template=template,
            context=context(event),
        )

    return handle


def _notify(template: str, context: Callable[[Any], dict[str, Any]]) -> EventHandler:
    """A handler that tells the event's user, on every channel they chose."""

    async def handle(
        runtime: ServiceRuntime, tx: Transaction, event: Any, envelope: Envelope
    ) -> None:
        values = context(event)
        await notify_user(
            _deps(runtime),
            tx,
            event_id=envelope.id,
            user_id=event.user_id,
            template=template,
            context=values,
            data={"type": envelope.type, "orderId": str(values.get("order_id", ""))},
        )

    return handle


async def on_user_registered(
    runtime: ServiceRuntime, tx: Transaction, event: UserRegistered, envelope: Envelope
) -> None:
    takes_marketing = await remember_recipient(
        tx,
        user_id=event.user_id,
        email=event.email,
        first_name=event.first_name,
        last_name=event.last_name,
        phone_number=None,
        revision=0,
    )
    if takes_marketing:
        await send_email(
            _deps(runtime),
            tx,
            event_id=envelope.id,
            user_id=event.user_id,
            to=event.email,
            template="welcome",
            context={"first_name": event.first_name},
            transactional=False,
        )


async def on_user_updated(
    runtime: ServiceRuntime, tx: Transaction, event: UserUpdated, envelope: Envelope
) -> None:
    await remember_recipient(
        tx,
        user_id=event.user_id,
        email=event.email,
        first_name=event.first_name,
        last_name=event.last_name,
        phone_number=event.phone_number,
        revision=event.revision,
    )


async def on_user_deleted(
    runtime: ServiceRuntime, tx: Transaction, event: UserDeleted, envelope: Envelope
) -> None:
    await forget_recipient(tx, event.user_id)


async def write_batch(runtime: ServiceRuntime, tx: Transaction) -> None:
    """Once per consuming transaction: the messages all its events queued."""
    await write_queued(tx)


_MAILS: tuple[tuple[type[EventContract], str, Callable[[Any], dict[str, Any]]], ...] = (
    (EmailVerificationRequested, "email_verification", _link_context),
    (PasswordResetRequested, "password_reset", _link_context),
    (
        RegistrationAttemptedForExistingAccount,
        "registration_attempted",
        lambda event: {"first_name": event.first_name},
    ),
)

_NOTICES: tuple[tuple[type[EventContract], str, Callable[[Any], dict[str, Any]]], ...] = (
    (OrderConfirmed, "order_confirmed", _order_context),
    (OrderShipped, "order_shipped", _shipped_context),
    (OrderDelivered, "order_delivered", _order_context),
    (OrderCancelled, "order_cancelled", _cancelled_context),
    (PaymentRefunded, "refund_issued", _refund_context),
)

# Every template the service renders, for the test that renders them all.
TEMPLATES = (
    "welcome",
    *(template for _, template, _ in _MAILS),
    *(template for _, template, _ in _NOTICES),
)

SUBSCRIPTIONS = (
    Subscription(UserRegistered, on_user_registered),
    Subscription(UserUpdated, on_user_updated),
    Subscription(UserDeleted, on_user_deleted),
    *(Subscription(contract, _mail(template, context)) for contract, template, context in _MAILS),
    *(
        Subscription(contract, _notify(template, context))
        for contract, template, context in _NOTICES
    ),
)
