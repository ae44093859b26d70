"""The built-in test provider: Stripe's test tokens, answered through signed webhooks.

It behaves like Stripe in test mode, without a network: ``create_payment``
accepts the payment at once (``processing``) and the outcome arrives later as a
``payment_intent.succeeded`` or ``payment_intent.payment_failed`` webhook,
signed with Stripe's scheme, which the injected ``deliver`` callable hands to the
payments service's webhook handling (the code behind its webhook endpoint, which
checks the signature). Refunds succeed at once and are confirmed by a ``refund.updated``
webhook.

Like Stripe's servers, it answers ``retrieve_payment`` after a restart: a
payment's id carries the outcome of its token (``pi_test_<outcome>_<hex>``, the
hex derived from the idempotency key, so the same key gives the same id even
in a new process), and is decoded without any state. What lives in memory only
(webhooks not yet delivered, answers kept for idempotency keys, amounts
refunded) a restart forgets; the payments service asks for the outcomes whose
webhook never came. Refunds of payments it has not seen in this process are
accepted when the id decodes to a payment that succeeded.

Tokens (``pm_card_<name>`` is the same as ``tok_<name>``):

==========================================  =============================
``tok_visa``, ``tok_mastercard``, ``tok_amex``  succeeds
``tok_chargeDeclined``                      fails, ``card_declined``
``tok_chargeDeclinedInsufficientFunds``     fails, ``insufficient_funds``
``tok_chargeDeclinedProcessingError``       fails, ``processing_error``
``tok_processingError`` (ours, shorter)     fails, ``processing_error``
anything else                               fails at once, ``invalid_payment_method``
==========================================  =============================
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from panthera.payments.providers import stripe_webhooks
from panthera.payments.providers.port import (
    PaymentOutcome,
    ProviderEvent,
    ProviderPayment,
    ProviderRefund,
    ProviderRejected,
    RefundOutcome,
)

log = logging.getLogger("panthera.payments.test_provider")

# Hands a signed webhook (headers, raw body) to the webhook endpoint; raises when
# it was not accepted, and is then retried with backoff.
WebhookDelivery = Callable[[dict[str, str], bytes], Awaitable[None]]


@dataclass(frozen=True)
class TokenBehaviour:
    """What a test token does: its outcome and, when it fails, Stripe's error."""

    outcome: PaymentOutcome
    code: str | None = None
    decline_code: str | None = None
    message: str | None = None


_SUCCEEDS = TokenBehaviour(PaymentOutcome.SUCCEEDED)
_DECLINED = TokenBehaviour(
    PaymentOutcome.FAILED, "card_declined", "generic_decline", "Your card was declined."
)
_INSUFFICIENT_FUNDS = TokenBehaviour(
    PaymentOutcome.FAILED,
    "card_declined",
    "insufficient_funds",
    "Your card has insufficient funds.",
)
_PROCESSING_ERROR = TokenBehaviour(
    PaymentOutcome.FAILED,
    "processing_error",
    None,
    "An error occurred while processing your card. Try again in a little bit.",
)
TEST_TOKENS: Mapping[str, TokenBehaviour] = {
    "tok_visa": _SUCCEEDS,
    "tok_visa_debit": _SUCCEEDS,
    "tok_mastercard": _SUCCEEDS,
    "tok_amex": _SUCCEEDS,
    "tok_chargeDeclined": _DECLINED,
    "tok_chargeDeclinedInsufficientFunds": _INSUFFICIENT_FUNDS,
    "tok_chargeDeclinedProcessingError": _PROCESSING_ERROR,
    "tok_processingError": _PROCESSING_ERROR,
}
# The outcome part of a payment id; no underscores, so the id splits unambiguously.
OUTCOME_CODES: Mapping[str, TokenBehaviour] = {
    "succeeded": _SUCCEEDS,
    "declined": _DECLINED,
    "insufficientfunds": _INSUFFICIENT_FUNDS,
    "processingerror": _PROCESSING_ERROR,
}
_CODE_OF = {behaviour: code for code, behaviour in OUTCOME_CODES.items()}
_PAYMENT_ID_PREFIX = "pi_test_"
_REFUND_ID_PREFIX = "re_test_"


def token_behaviour(token: str) -> TokenBehaviour | None:
    """The behaviour of a test token, or None for a token the provider does not know."""
    if token.startswith("pm_card_"):
        token = "tok_" + token.removeprefix("pm_card_")
    return TEST_TOKENS.get(token)


def payment_id_of(behaviour: TokenBehaviour, idempotency_key: str) -> str:
    """The id of the payment a token of ``behaviour`` makes under ``idempotency_key``."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
    return f"{_PAYMENT_ID_PREFIX}{_CODE_OF[behaviour]}_{digest}"


def behaviour_of_payment_id(provider_payment_id: str) -> TokenBehaviour | None:
    """What the token of a payment did, read from its id; None for an id not made here."""
    if not provider_payment_id.startswith(_PAYMENT_ID_PREFIX):
        return None
    code, _, digest = provider_payment_id.removeprefix(_PAYMENT_ID_PREFIX).partition("_")
    if len(digest) != 24 or any(c not in "0123456789abcdef" for c in digest):
        return None
    return OUTCOME_CODES.get(code)


def _last_payment_error(card: TokenBehaviour) -> dict[str, Any] | None:
    if card.outcome is PaymentOutcome.SUCCEEDED:
        return None
    return {
        "type": "card_error",
        "code": card.code,
        "decline_code": card.decline_code,
        "message": card.message,
    }


@dataclass
class _Charge:
    amount: int
    currency: str
    refunded: int = 0


@dataclass
class _Remembered:
    request_hash: str
    answer: ProviderPayment | ProviderRefund


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _new_id(prefix: str) -> str:
    return f"{prefix}_test_{uuid.uuid4().hex[:24]}"


@dataclass
class TestProvider:
    """A :class:`PaymentProvider` for development and tests; see the module docstring."""

    __test__ = False

    webhook_secret: str
    deliver: WebhookDelivery | None = None
    tolerance_seconds: int = stripe_webhooks.DEFAULT_TOLERANCE_SECONDS
    delivery_delay_seconds: float = 0.0
    max_attempts: int = 5
    retry_base_seconds: float = 0.5
    clock: Callable[[], float] = time.time
    # Every webhook body built, newest last (tests replay them).
    webhooks: deque[bytes] = field(default_factory=lambda: deque(maxlen=1000))
    _charges: dict[str, _Charge] = field(default_factory=dict)
    _answers: dict[str, _Remembered] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def name(self) -> str:
        return "test"

    async def create_payment(
        self,
        *,
        amount: int,
        currency: str,
        token: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> ProviderPayment:
        request_hash = _fingerprint("payment", amount, currency, token, dict(metadata))
        remembered = self._remembered(idempotency_key, request_hash)
        if remembered is not None:
            assert isinstance(remembered, ProviderPayment)
            return remembered
        card = token_behaviour(token)
        if card is None:
            answer = ProviderPayment(
                None,
                PaymentOutcome.FAILED,
                "invalid_payment_method",
                "The payment method is not one of the test provider's tokens.",
            )
        else:
            payment_id = payment_id_of(card, idempotency_key)
            succeeded = card.outcome is PaymentOutcome.SUCCEEDED
            self._charges[payment_id] = _Charge(amount, currency)
            self._schedule(
                "payment_intent.succeeded" if succeeded else "payment_intent.payment_failed",
                {
                    "id": payment_id,
                    "object": "payment_intent",
                    "amount": amount,
                    "currency": currency.lower(),
                    "status": "succeeded" if succeeded else "requires_payment_method",
                    "metadata": dict(metadata),
                    "last_payment_error": _last_payment_error(card),
                },
            )
            answer = ProviderPayment(payment_id, PaymentOutcome.PROCESSING)
        self._answers[idempotency_key] = _Remembered(request_hash, answer)
        return answer

    async def refund(
        self,
        *,
        provider_payment_id: str,
        amount: int,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> ProviderRefund:
        request_hash = _fingerprint("refund", provider_payment_id, amount, dict(metadata))
        remembered = self._remembered(idempotency_key, request_hash)
        if remembered is not None:
            assert isinstance(remembered, ProviderRefund)
            return remembered
        card = behaviour_of_payment_id(provider_payment_id)
        if card is None:
            raise ProviderRejected(
                "resource_missing", f"No such payment_intent: '{provider_payment_id}'"
            )
        if card.outcome is not PaymentOutcome.SUCCEEDED:
            raise ProviderRejected("charge_not_refundable", "The payment did not succeed.")
        charge = self._charges.get(provider_payment_id)
        if charge is not None:
            if amount > charge.amount - charge.refunded:
                raise ProviderRejected("amount_too_large", "More than what is left to refund.")
            charge.refunded += amount
        refund_id = _new_id("re")
        self._schedule(
            "refund.updated",
            {
                "id": refund_id,
                "object": "refund",
                "amount": amount,
                "payment_intent": provider_payment_id,
                "status": "succeeded",
                "metadata": dict(metadata),
            },
        )
        answer = ProviderRefund(refund_id, RefundOutcome.SUCCEEDED)
        self._answers[idempotency_key] = _Remembered(request_hash, answer)
        return answer

    async def retrieve_payment(self, provider_payment_id: str) -> ProviderPayment:
        card = behaviour_of_payment_id(provider_payment_id)
        if card is None:
            raise ProviderRejected(
                "resource_missing", f"No such payment_intent: '{provider_payment_id}'"
            )
        error = _last_payment_error(card)
        if error is None:
            return ProviderPayment(provider_payment_id, PaymentOutcome.SUCCEEDED)
        return ProviderPayment(
            provider_payment_id,
            PaymentOutcome.FAILED,
            stripe_webhooks.failure_code(error),
            card.message,
        )

    async def retrieve_refund(self, provider_refund_id: str) -> ProviderRefund:
        digest = provider_refund_id.removeprefix(_REFUND_ID_PREFIX)
        if not provider_refund_id.startswith(_REFUND_ID_PREFIX) or len(digest) != 24:
            raise ProviderRejected("resource_missing", f"No such refund: '{provider_refund_id}'")
        # Every refund this provider accepts succeeds.
        return ProviderRefund(provider_refund_id, RefundOutcome.SUCCEEDED)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> ProviderEvent:
        stripe_webhooks.verify(
            headers,
            body,
            self.webhook_secret,
            tolerance_seconds=self.tolerance_seconds,
            now=self.clock(),
        )
        return stripe_webhooks.parse_event(body)

    def signed_headers(self, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
        """The headers a webhook of ``body`` is delivered with, signed now (or at ``timestamp``)."""
        moment = int(self.clock()) if timestamp is None else timestamp
        return {
            "Content-Type": "application/json",
            stripe_webhooks.SIGNATURE_HEADER: stripe_webhooks.signature_header(
                body, self.webhook_secret, moment
            ),
        }

    async def drain(self) -> None:
        """Wait until every scheduled webhook was delivered (or given up)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    def _remembered(
        self, idempotency_key: str, request_hash: str
    ) -> ProviderPayment | ProviderRefund | None:
        remembered = self._answers.get(idempotency_key)
        if remembered is None:
            return None
        if remembered.request_hash != request_hash:
            raise ProviderRejected(
                "idempotency_error", "Keys for idempotent requests need the same parameters."
            )
        return remembered.answer

    def _schedule(self, event_type: str, obj: dict[str, Any]) -> None:
        event = {
            "id": _new_id("evt"),
            "object": "event",
            "created": int(self.clock()),
            "livemode": False,
            "type": event_type,
            "data": {"object": obj},
        }
        body = orjson.dumps(event)
        self.webhooks.append(body)
        if self.deliver is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._deliver(body), name=f"test-provider-webhook-{event['id']}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, body: bytes) -> None:
        assert self.deliver is not None
        if self.delivery_delay_seconds:
            await asyncio.sleep(self.delivery_delay_seconds)
        for attempt in range(1, self.max_attempts + 1):
            try:
                # Signed at each attempt, as Stripe does: a retry is not a stale replay.
                await self.deliver(self.signed_headers(body), body)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt == self.max_attempts:
                    log.error("test webhook not delivered; giving up", extra={"error": str(exc)})
                    return
                log.warning("test webhook not delivered; will retry", extra={"error": str(exc)})
                await asyncio.sleep(self.retry_base_seconds * 2 ** (attempt - 1))
