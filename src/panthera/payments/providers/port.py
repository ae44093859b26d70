"""The payment provider port: what the payments service needs from Stripe or its stand-in."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class PaymentOutcome(StrEnum):
    """Where a payment stands at the provider right after it was asked to take it."""

    SUCCEEDED = "succeeded"
    # Accepted; the outcome arrives later as a webhook.
    PROCESSING = "processing"
    FAILED = "failed"
    CANCELED = "canceled"


class RefundOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    PENDING = "pending"
    FAILED = "failed"


class EventKind(StrEnum):
    """What a provider's webhook means for the payments service."""

    PAYMENT_SUCCEEDED = "payment_succeeded"
    PAYMENT_FAILED = "payment_failed"
    PAYMENT_CANCELED = "payment_canceled"
    PAYMENT_PROCESSING = "payment_processing"
    REFUND_SUCCEEDED = "refund_succeeded"
    REFUND_FAILED = "refund_failed"
    # Verified, but of a type nothing here reacts to.
    IGNORED = "ignored"


@dataclass(frozen=True)
class ProviderPayment:
    """Where a payment stands at the provider: its first answer, or what it says when asked."""

    provider_payment_id: str | None
    outcome: PaymentOutcome
    failure_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True)
class ProviderRefund:
    provider_refund_id: str | None
    outcome: RefundOutcome
    failure_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True)
class ProviderEvent:
    """A verified webhook, reduced to what the payments service acts on.

    ``payment_id`` and ``refund_id`` are ours, echoed back from the metadata we
    gave the provider: they find the row even before its provider id is stored.
    """

    id: str
    type: str
    kind: EventKind
    provider_payment_id: str | None = None
    payment_id: uuid.UUID | None = None
    provider_refund_id: str | None = None
    refund_id: uuid.UUID | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


class ProviderError(Exception):
    """The provider could not be asked, or refused the request itself."""


class ProviderUnavailable(ProviderError):
    """No answer (network, timeout, 429, 5xx): the outcome is unknown, retry with the same key."""


class ProviderRejected(ProviderError):
    """The provider answered and refused the request (not a card decline)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class InvalidWebhook(ProviderError):
    """A webhook that is not provably the provider's: bad signature, stale, or malformed.

    ``reason`` is a stable code, safe to log and to answer with.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PaymentProvider(Protocol):
    """A card payment provider. Card numbers never come here: only its tokens."""

    @property
    def name(self) -> str:
        """The provider's name, as in ``/webhooks/{name}`` and the ``provider`` column."""

    async def create_payment(
        self,
        *,
        amount: int,
        currency: str,
        token: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> ProviderPayment:
        """Take ``amount`` minor units with the payment method ``token``.

        A decline is an answer (``FAILED`` with a code), not an exception. The same
        ``idempotency_key`` never takes the money twice.
        """

    async def refund(
        self,
        *,
        provider_payment_id: str,
        amount: int,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> ProviderRefund:
        """Give back ``amount`` minor units of a payment that succeeded."""

    async def retrieve_payment(self, provider_payment_id: str) -> ProviderPayment:
        """Where the provider's payment ``provider_payment_id`` stands now.

        Webhooks may never come (an endpoint down for too long, a process killed
        with outcomes in flight): asking is how a payment that waits too long is
        settled. An id the provider does not know is :class:`ProviderRejected`.
        """

    async def retrieve_refund(self, provider_refund_id: str) -> ProviderRefund:
        """Where the provider's refund ``provider_refund_id`` stands now."""

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> ProviderEvent:
        """The webhook's event once signature and age are verified; else :class:`InvalidWebhook`."""

    async def close(self) -> None:
        """Release connections and background work."""
