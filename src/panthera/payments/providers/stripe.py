"""Stripe, through its PaymentIntents and Refunds APIs (form-encoded, over httpx).

A payment is one ``POST /v1/payment_intents`` that creates and confirms: the
token becomes the payment method (``payment_method_data[card][token]=tok_...``,
or ``payment_method=pm_...``), ``payment_method_types[0]=card`` keeps it to cards
(no redirect methods, so no ``return_url``), and our ids go in ``metadata`` so
webhooks find their rows. Every POST carries an ``Idempotency-Key``, which makes
retrying it safe: connection errors, 409 (the same key in flight), 429 and 5xx
are retried with backoff, then reported as :class:`ProviderUnavailable`. Reads
(``GET /v1/payment_intents/{id}``, ``GET /v1/refunds/{id}``) are retried the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from panthera.payments.providers import stripe_webhooks
from panthera.payments.providers.port import (
    PaymentOutcome,
    ProviderEvent,
    ProviderPayment,
    ProviderRefund,
    ProviderRejected,
    ProviderUnavailable,
    RefundOutcome,
)

DEFAULT_API_BASE = "https://api.stripe.com"
# Pinned so that the objects' shapes do not change under us with the account's default.
STRIPE_API_VERSION = "2024-06-20"
_RETRYABLE = frozenset({409, 429, 500, 502, 503, 504})
# Errors about the payment method itself: the customer's to fix, not ours.
_PAYMENT_METHOD_CODES = frozenset(
    {
        "resource_missing",
        "token_already_used",
        "payment_method_invalid_parameter",
        "payment_method_unactivated",
        "payment_method_unexpected_state",
        "invalid_number",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "invalid_cvc",
        "expired_card",
        "incorrect_number",
    }
)
_REFUND_STATUSES = {
    "succeeded": RefundOutcome.SUCCEEDED,
    "pending": RefundOutcome.PENDING,
    "requires_action": RefundOutcome.PENDING,
    "failed": RefundOutcome.FAILED,
    "canceled": RefundOutcome.FAILED,
}


def _error_of(body: Mapping[str, Any]) -> dict[str, Any]:
    error = body.get("error")
    return error if isinstance(error, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _rejection(status: int, body: Mapping[str, Any]) -> ProviderRejected:
    error = _error_of(body)
    return ProviderRejected(
        _text(error.get("code")) or f"http_{status}", _text(error.get("message")) or ""
    )


def _refund_of(refund: Mapping[str, Any]) -> ProviderRefund:
    outcome = _REFUND_STATUSES.get(str(refund.get("status")), RefundOutcome.PENDING)
    return ProviderRefund(
        _text(refund.get("id")),
        outcome,
        _text(refund.get("failure_reason")) if outcome is RefundOutcome.FAILED else None,
    )


class StripeProvider:
    """A :class:`PaymentProvider` backed by Stripe (or anything speaking its API)."""

    def __init__(
        self,
        *,
        api_key: str,
        webhook_secret: str,
        api_base: str = DEFAULT_API_BASE,
        tolerance_seconds: int = stripe_webhooks.DEFAULT_TOLERANCE_SECONDS,
        timeout_seconds: float = 20.0,
        max_retries: int = 2,
        retry_base_seconds: float = 0.5,
        api_version: str | None = STRIPE_API_VERSION,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not api_key:
            raise ValueError("the Stripe provider needs an API key")
        if not webhook_secret:
            raise ValueError("the Stripe provider needs the webhook endpoint's signing secret")
        headers = {"Authorization": f"Bearer {api_key}"}
        if api_version:
            headers["Stripe-Version"] = api_version
        self._client = httpx.AsyncClient(
            base_url=api_base.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout_seconds, connect=min(5.0, timeout_seconds)),
            transport=transport,
        )
        self._webhook_secret = webhook_secret
        self._tolerance = tolerance_seconds
        self._max_retries = max_retries
        self._retry_base = retry_base_seconds
        self._clock = clock

    @property
    def name(self) -> str:
        return "stripe"

    async def create_payment(
        self,
        *,
        amount: int,
        currency: str,
        token: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> ProviderPayment:
        form = {
            "amount": str(amount),
            "currency": currency.lower(),
            "confirm": "true",
            "payment_method_types[0]": "card",
        }
        if token.startswith("pm_"):
            form["payment_method"] = token
        else:
            form["payment_method_data[type]"] = "card"
            form["payment_method_data[card][token]"] = token
        form.update({f"metadata[{key}]": value for key, value in metadata.items()})
        status, body = await self._post("/v1/payment_intents", form, idempotency_key)
        if 200 <= status < 300:
            return await self._payment_of(body)
        error = _error_of(body)
        intent = error.get("payment_intent")
        intent_id = _text(intent.get("id")) if isinstance(intent, dict) else None
        message = _text(error.get("message"))
        if status == 402 or error.get("type") == "card_error":
            return ProviderPayment(
                intent_id, PaymentOutcome.FAILED, stripe_webhooks.failure_code(error), message
            )
        param = error.get("param")
        if error.get("code") in _PAYMENT_METHOD_CODES or (
            isinstance(param, str) and param.startswith("payment_method")
        ):
            return ProviderPayment(
                intent_id, PaymentOutcome.FAILED, "invalid_payment_method", message
            )
        raise ProviderRejected(_text(error.get("code")) or f"http_{status}", message or "")

    async def refund(
        self,
        *,
        provider_payment_id: str,
        amount: int,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> ProviderRefund:
        form = {"payment_intent": provider_payment_id, "amount": str(amount)}
        form.update({f"metadata[{key}]": value for key, value in metadata.items()})
        status, body = await self._post("/v1/refunds", form, idempotency_key)
        if not 200 <= status < 300:
            raise _rejection(status, body)
        return _refund_of(body)

    async def retrieve_payment(self, provider_payment_id: str) -> ProviderPayment:
        status, body = await self._send("GET", f"/v1/payment_intents/{provider_payment_id}")
        if not 200 <= status < 300:
            raise _rejection(status, body)
        return await self._payment_of(body)

    async def retrieve_refund(self, provider_refund_id: str) -> ProviderRefund:
        status, body = await self._send("GET", f"/v1/refunds/{provider_refund_id}")
        if not 200 <= status < 300:
            raise _rejection(status, body)
        return _refund_of(body)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> ProviderEvent:
        stripe_webhooks.verify(
            headers,
            body,
            self._webhook_secret,
            tolerance_seconds=self._tolerance,
            now=self._clock(),
        )
        return stripe_webhooks.parse_event(body)

    async def close(self) -> None:
        await self._client.aclose()

    async def _payment_of(self, intent: Mapping[str, Any]) -> ProviderPayment:
        intent_id = _text(intent.get("id"))
        status = intent.get("status")
        if status == "succeeded":
            return ProviderPayment(intent_id, PaymentOutcome.SUCCEEDED)
        if status in ("processing", "requires_capture"):
            return ProviderPayment(intent_id, PaymentOutcome.PROCESSING)
        if status == "canceled":
            return ProviderPayment(intent_id, PaymentOutcome.CANCELED, "canceled")
        if status == "requires_payment_method":
            error = intent.get("last_payment_error")
            error = error if isinstance(error, dict) else None
            return ProviderPayment(
                intent_id,
                PaymentOutcome.FAILED,
                stripe_webhooks.failure_code(error),
                _text(error.get("message")) if error else None,
            )
        # requires_action (3-D Secure): the customer would have to authenticate in
        # a browser, which a server-side confirmation cannot offer. Cancel it so
        # it cannot complete later behind our back.
        if intent_id is not None:
            with contextlib.suppress(ProviderUnavailable, ProviderRejected):
                await self._post(
                    f"/v1/payment_intents/{intent_id}/cancel", {}, f"cancel-{intent_id}"
                )
        return ProviderPayment(
            intent_id,
            PaymentOutcome.FAILED,
            "authentication_required",
            "The card needs authentication, which this checkout does not support.",
        )

    async def _post(
        self, path: str, form: Mapping[str, str], idempotency_key: str
    ) -> tuple[int, dict[str, Any]]:
        return await self._send("POST", path, form, {"Idempotency-Key": idempotency_key})

    async def _send(
        self,
        method: str,
        path: str,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        problem = "no answer"
        for attempt in range(self._max_retries + 1):
            if attempt:
                await asyncio.sleep(self._retry_base * 2 ** (attempt - 1))
            try:
                response = await self._client.request(
                    method,
                    path,
                    data=dict(form) if form is not None else None,
                    headers=dict(headers or {}),
                )
            except httpx.TransportError as exc:
                problem = type(exc).__name__
                continue
            should_retry = response.headers.get("Stripe-Should-Retry")
            if response.status_code in _RETRYABLE and should_retry != "false":
                problem = f"HTTP {response.status_code}"
                continue
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                if response.status_code >= 500:
                    problem = f"HTTP {response.status_code}"
                    continue
                raise ProviderRejected("malformed_response", f"HTTP {response.status_code}")
            return response.status_code, body
        raise ProviderUnavailable(f"Stripe did not answer {method} {path}: {problem}")
