"""Messages the platform sends when other services' events arrive."""

from __future__ import annotations

from typing import Any

from panthera.kernel.db import UnitOfWork
from panthera.kernel.events import Envelope
from panthera.kernel.service import ServiceRuntime, Subscription
from panthera.notifications.service import NotificationsDeps, send_email
from panthera.users.events import (
    EmailVerificationRequested,
    PasswordResetRequested,
    RegistrationAttemptedForExistingAccount,
)


def _deps(runtime: ServiceRuntime) -> NotificationsDeps:
    deps: NotificationsDeps = runtime.components["notifications_deps"]
    return deps


async def on_verification_requested(
    runtime: ServiceRuntime, uow: UnitOfWork, event: Any, envelope: Envelope
) -> None:
    assert isinstance(event, EmailVerificationRequested)
    await send_email(
        _deps(runtime),
        uow,
        event_id=envelope.id,
        user_id=event.user_id,
        to=event.email,
        template="email_verification",
        context={
            "first_name": event.first_name,
            "token": event.token,
            "expires_at": event.expires_at,
        },
    )


async def on_password_reset_requested(
    runtime: ServiceRuntime, uow: UnitOfWork, event: Any, envelope: Envelope
) -> None:
    assert isinstance(event, PasswordResetRequested)
    await send_email(
        _deps(runtime),
        uow,
        event_id=envelope.id,
        user_id=event.user_id,
        to=event.email,
        template="password_reset",
        context={
            "first_name": event.first_name,
            "token": event.token,
            "expires_at": event.expires_at,
        },
    )


async def on_registration_attempted(
    runtime: ServiceRuntime, uow: UnitOfWork, event: Any, envelope: Envelope
) -> None:
    assert isinstance(event, RegistrationAttemptedForExistingAccount)
    await send_email(
        _deps(runtime),
        uow,
        event_id=envelope.id,
        user_id=event.user_id,
        to=event.email,
        template="registration_attempted",
        context={"first_name": event.first_name},
    )


SUBSCRIPTIONS = (
    Subscription(EmailVerificationRequested, on_verification_requested),
    Subscription(PasswordResetRequested, on_password_reset_requested),
    Subscription(RegistrationAttemptedForExistingAccount, on_registration_attempted),
)
