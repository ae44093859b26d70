"""Stripe's webhook scheme, shared by the Stripe adapter and the built-in test provider.

A webhook carries ``Stripe-Signature: t=<unix time>,v1=<hex>[,v1=<hex>...]``; each
``v1`` is HMAC-SHA256, keyed with the endpoint's secret, of ``"<t>.<raw body>"``.
Several ``v1`` appear while a secret is being rolled; any one matching is enough.
The timestamp bounds replays: a captured webhook is refused after ``tolerance``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from panthera.payments.providers.port import EventKind, InvalidWebhook, ProviderEvent

SIGNATURE_HEADER = "Stripe-Signature"
DEFAULT_TOLERANCE_SECONDS = 300
# Metadata keys we give the provider, echoed in its webhooks.
PAYMENT_ID_KEY = "panthera_payment_id"
REFUND_ID_KEY = "panthera_refund_id"
# Stripe's generic decline says nothing more than "card_declined".
_UNINFORMATIVE_DECLINES = frozenset({"generic_decline", "do_not_honor"})


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The hex ``v1`` signature of ``body`` sent at ``timestamp``."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(body: bytes, secret: str, timestamp: int) -> str:
    """A ``Stripe-Signature`` header value for ``body``."""
    return f"t={timestamp},v1={sign(body, secret, timestamp)}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Refuse, with :class:`InvalidWebhook`, a body the secret's holder did not sign just now."""
    if not secret:
        raise InvalidWebhook("no_secret_configured")
    header = _header(headers, SIGNATURE_HEADER)
    if not header:
        raise InvalidWebhook("missing_signature")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise InvalidWebhook("malformed_signature") from None
        elif name == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise InvalidWebhook("malformed_signature")
    expected = sign(body, secret, timestamp)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise InvalidWebhook("bad_signature")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise InvalidWebhook("timestamp_outside_tolerance")


def failure_code(error: Mapping[str, Any] | None) -> str:
    """Our failure code for a Stripe error or ``last_payment_error``.

    The decline code when it says more than "declined" (``insufficient_funds``),
    else the error code (``card_declined``, ``processing_error``).
    """
    if not error:
        return "payment_failed"
    decline = error.get("decline_code")
    if isinstance(decline, str) and decline and decline not in _UNINFORMATIVE_DECLINES:
        return decline
    code = error.get("code")
    return code if isinstance(code, str) and code else "card_declined"


def _uuid(value: object) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


_PAYMENT_EVENTS = {
    "payment_intent.succeeded": EventKind.PAYMENT_SUCCEEDED,
    "payment_intent.payment_failed": EventKind.PAYMENT_FAILED,
    "payment_intent.canceled": EventKind.PAYMENT_CANCELED,
    "payment_intent.processing": EventKind.PAYMENT_PROCESSING,
}
_REFUND_EVENTS = frozenset(
    {"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"}
)


def parse_event(body: bytes) -> ProviderEvent:
    """A Stripe event object (already verified) as a :class:`ProviderEvent`."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidWebhook("malformed_payload") from None
    if not isinstance(payload, dict):
        raise InvalidWebhook("malformed_payload")
    event_id, event_type = payload.get("id"), payload.get("type")
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not _text(event_id) or not _text(event_type) or not isinstance(obj, dict):
        raise InvalidWebhook("malformed_payload")
    assert isinstance(event_id, str)
    assert isinstance(event_type, str)
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    kind = EventKind.IGNORED
    if obj.get("object") == "payment_intent" and event_type in _PAYMENT_EVENTS:
        kind = _PAYMENT_EVENTS[event_type]
        error = obj.get("last_payment_error")
        failed = kind is EventKind.PAYMENT_FAILED
        return ProviderEvent(
            id=event_id,
            type=event_type,
            kind=kind,
            provider_payment_id=_text(obj.get("id")),
            payment_id=_uuid(metadata.get(PAYMENT_ID_KEY)),
            failure_code=failure_code(error if isinstance(error, dict) else None)
            if failed
            else None,
            failure_message=_text(error.get("message"))
            if failed and isinstance(error, dict)
            else None,
            payload=payload,
        )
    if obj.get("object") == "refund" and event_type in _REFUND_EVENTS:
        status = obj.get("status")
        if status == "succeeded":
            kind = EventKind.REFUND_SUCCEEDED
        elif status in ("failed", "canceled"):
            kind = EventKind.REFUND_FAILED
        return ProviderEvent(
            id=event_id,
            type=event_type,
            kind=kind,
            provider_payment_id=_text(obj.get("payment_intent")),
            payment_id=_uuid(metadata.get(PAYMENT_ID_KEY)),
            provider_refund_id=_text(obj.get("id")),
            refund_id=_uuid(metadata.get(REFUND_ID_KEY)),
            failure_code=_text(obj.get("failure_reason"))
            if kind is EventKind.REFUND_FAILED
            else None,
            payload=payload,
        )
    return ProviderEvent(id=event_id, type=event_type, kind=EventKind.IGNORED, payload=payload)
