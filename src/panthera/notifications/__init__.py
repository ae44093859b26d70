"""The notifications service: messages to people when something happens to them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter

from panthera.kernel.service import ServiceDefinition, ServiceRuntime


def _router() -> APIRouter:
    from panthera.notifications.endpoints import router

    return router


def _state(runtime: ServiceRuntime) -> dict[str, Any]:
    import httpx

    from panthera.notifications.channels import (
        EmailChannel,
        FileOutbox,
        PushProvider,
        SmsProvider,
        SmtpEmail,
    )
    from panthera.notifications.providers import FcmPush, TwilioSms
    from panthera.notifications.sender import DeliverySender, RetryPolicy
    from panthera.notifications.service import NotificationsDeps, template_environment
    from panthera.notifications.unsubscribe import UnsubscribeTokens

    settings = runtime.settings
    files = FileOutbox(settings.data_dir / "outbox")
    email: EmailChannel = SmtpEmail.from_settings(settings) if settings.smtp_host else files
    sms: SmsProvider = files
    push: PushProvider = files
    if settings.sms_api_url or settings.push_api_url:
        client = httpx.AsyncClient(timeout=settings.http_timeout_seconds)
        runtime.components["notifications_http"] = client
        if settings.sms_api_url:
            sms = TwilioSms(
                client,
                base_url=settings.sms_api_url,
                account_sid=settings.sms_account_sid,
                auth_token=settings.sms_auth_token.get_secret_value(),
                sender=settings.sms_sender,
            )
        if settings.push_api_url:
            push = FcmPush(
                client, url=settings.push_api_url, token=settings.push_api_token.get_secret_value()
            )
    deps = NotificationsDeps(
        email=email,
        sms=sms,
        push=push,
        templates=template_environment(settings.templates_dir),
        sender=settings.mail_sender,
        base_url=settings.public_base_url,
        unsubscribe=UnsubscribeTokens(settings.internal_token.get_secret_value().encode()),
    )
    sender = DeliverySender(
        transactions=runtime.transaction,
        deps=deps,
        policy=RetryPolicy(
            max_attempts=settings.notification_max_attempts,
            base_seconds=settings.notification_retry_base_seconds,
            max_seconds=settings.notification_retry_max_seconds,
            lease_seconds=max(60.0, 6 * max(settings.smtp_timeout_seconds, 10.0)),
        ),
        skip_locked=not runtime.database.is_sqlite,
        poll_seconds=max(1.0, settings.relay_poll_seconds),
    )
    deps.wake = sender.wake
    deps.take_up = sender.take_up
    deps.take_up_lease = sender.lease
    runtime.components["notifications_deps"] = deps
    runtime.components["notifications_sender"] = sender
    # Tests and one-shot commands send what is due before they look or exit.
    runtime.components["drain"] = sender.drain
    return {"notifications_deps": deps}


async def _start(runtime: ServiceRuntime) -> None:
    runtime.components["notifications_sender"].start()


async def _stop(runtime: ServiceRuntime) -> None:
    await runtime.components["notifications_sender"].stop()
    client = runtime.components.pop("notifications_http", None)
    if client is not None:
        await client.aclose()


def _definition() -> ServiceDefinition:
    from panthera.notifications.handlers import SUBSCRIPTIONS, write_batch
    from panthera.notifications.models import EVENT_TABLES, Base

    return ServiceDefinition(
        name="notifications",
        title="Notifications Service API",
        description=(
            "Messages sent to people when something happens to them (email, SMS, push), "
            "their delivery log, and each user's choice of channels."
        ),
        metadata=Base.metadata,
        tables=EVENT_TABLES,
        migrations_dir=Path(__file__).parent / "migrations",
        router=_router,
        state=_state,
        on_start=_start,
        on_stop=_stop,
        subscriptions=SUBSCRIPTIONS,
        # Off the orders' critical path: fewer, larger transactions are worth
        # applying events one batch after another rather than side by side.
        consume_batch=32,
        # Reports and mail can be a fifth of a second late; a transaction per
        # few orders rather than per event or two is what that buys.
        consume_linger=0.2,
        # The messages of all the events a transaction applies, in one insert.
        before_commit=write_batch,
        handlers_on_sql=True,
    )


definition = _definition()

__all__ = ["definition"]
