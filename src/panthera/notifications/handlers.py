"""Messages the platform sends when other services' events arrive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from panthera.kernel.db import UnitOfWork
from panthera.kernel.events import Envelope, EventContract
from panthera.kernel.service import EventHandler, ServiceRuntime, Subscription
from panthera.notifications.service import NotificationsDeps, send_email
from panthera.users.events import (
    EmailVerificationRequested,
    PasswordResetRequested,
    RegistrationAttemptedForExistingAccount,
)


def _deps(runtime: ServiceRuntime) -> NotificationsDeps:
    deps: NotificationsDeps = runtime.components["notifications_deps"]
    return deps


def _link_context(event: Any) -> dict[str, Any]:
    return {"first_name": event.first_name, "token": event.token, "expires_at": event.expires_at}


def _mail(template: str, context: Callable[[Any], dict[str, Any]]) -> EventHandler:
    """A handler that mails the event's user with ``template``."""

    async def handle(
        runtime: ServiceRuntime, uow: UnitOfWork, event: Any, envelope: Envelope
    ) -> None:
        await send_email(
            _deps(runtime),
            uow,
            event_id=envelope.id,
            user_id=event.user_id,
            to=event.email,
            template=template,
            context=context(event),
        )

    return handle


_MAILS: tuple[tuple[type[EventContract], str, Callable[[Any], dict[str, Any]]], ...] = (
    (EmailVerificationRequested, "email_verification", _link_context),
    (PasswordResetRequested, "password_reset", _link_context),
    (
        RegistrationAttemptedForExistingAccount,
        "registration_attempted",
        lambda event: {"first_name": event.first_name},
    ),
)

SUBSCRIPTIONS = tuple(
    Subscription(contract, _mail(template, context)) for contract, template, context in _MAILS
)
