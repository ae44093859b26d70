"""Payment providers: the port, the built-in test provider and Stripe."""

from __future__ import annotations

from panthera.kernel.settings import Environment, PaymentProviderKind, Settings
from panthera.payments.providers.port import (
    EventKind,
    InvalidWebhook,
    PaymentOutcome,
    PaymentProvider,
    ProviderError,
    ProviderEvent,
    ProviderPayment,
    ProviderRefund,
    ProviderRejected,
    ProviderUnavailable,
    RefundOutcome,
)
from panthera.payments.providers.sandbox import TestProvider, WebhookDelivery
from panthera.payments.providers.stripe import StripeProvider

__all__ = [
    "EventKind",
    "InvalidWebhook",
    "PaymentOutcome",
    "PaymentProvider",
    "ProviderError",
    "ProviderEvent",
    "ProviderPayment",
    "ProviderRefund",
    "ProviderRejected",
    "ProviderUnavailable",
    "RefundOutcome",
    "StripeProvider",
    "TestProvider",
    "WebhookDelivery",
    "build_provider",
]


def build_provider(settings: Settings, *, deliver: WebhookDelivery | None) -> PaymentProvider:
    """The provider the settings choose; refuses a configuration that cannot be right.

    ``deliver`` hands the test provider's webhooks to the webhook endpoint.
    """
    tolerance = settings.payment_webhook_tolerance_seconds
    if settings.payment_provider is PaymentProviderKind.STRIPE:
        api_key = settings.stripe_api_key.get_secret_value()
        webhook_secret = settings.stripe_webhook_secret.get_secret_value()
        if not api_key or not webhook_secret:
            raise ValueError(
                "the stripe payment provider needs PANTHERA_STRIPE_API_KEY and "
                "PANTHERA_STRIPE_WEBHOOK_SECRET"
            )
        return StripeProvider(
            api_key=api_key,
            webhook_secret=webhook_secret,
            api_base=settings.stripe_api_base,
            tolerance_seconds=tolerance,
        )
    if settings.environment is Environment.PRODUCTION:
        # Anyone could pay with tok_visa: a shop would hand out goods for nothing.
        raise ValueError("PANTHERA_PAYMENT_PROVIDER=test is refused in production; use stripe")
    return TestProvider(
        webhook_secret=settings.test_provider_webhook_secret.get_secret_value(),
        deliver=deliver,
        tolerance_seconds=tolerance,
    )
