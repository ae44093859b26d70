"""The built-in test provider: Stripe's test tokens, outcomes as webhooks signed Stripe's way."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from panthera.payments.providers import (
    EventKind,
    InvalidWebhook,
    PaymentOutcome,
    ProviderRejected,
    RefundOutcome,
    TestProvider,
)
from panthera.payments.providers.stripe_webhooks import (
    PAYMENT_ID_KEY,
    SIGNATURE_HEADER,
    sign,
    signature_header,
)

SECRET = "whsec_unit_test"
NOW = 1_800_000_000.0


def provider(**options: Any) -> TestProvider:
    return TestProvider(webhook_secret=SECRET, clock=lambda: NOW, **options)


async def pay(test: TestProvider, token: str, key: str = "key-1") -> Any:
    return await test.create_payment(
        amount=1999,
        currency="USD",
        token=token,
        idempotency_key=key,
        metadata={PAYMENT_ID_KEY: "6f1c1a2e-0000-4000-8000-000000000001"},
    )


@pytest.mark.parametrize(
    ("token", "kind", "code"),
    [
        ("tok_visa", EventKind.PAYMENT_SUCCEEDED, None),
        ("pm_card_visa", EventKind.PAYMENT_SUCCEEDED, None),
        ("tok_mastercard", EventKind.PAYMENT_SUCCEEDED, None),
        ("tok_chargeDeclined", EventKind.PAYMENT_FAILED, "card_declined"),
        ("tok_chargeDeclinedInsufficientFunds", EventKind.PAYMENT_FAILED, "insufficient_funds"),
        ("tok_chargeDeclinedProcessingError", EventKind.PAYMENT_FAILED, "processing_error"),
        ("tok_processingError", EventKind.PAYMENT_FAILED, "processing_error"),
    ],
)
async def test_known_tokens_are_accepted_and_answered_by_webhook(
    token: str, kind: EventKind, code: str | None
) -> None:
    test = provider()
    answer = await pay(test, token)
    assert answer.outcome is PaymentOutcome.PROCESSING
    assert answer.provider_payment_id.startswith("pi_test_")
    (body,) = test.webhooks
    event = test.parse_webhook(test.signed_headers(body), body)
    assert event.kind is kind
    assert event.provider_payment_id == answer.provider_payment_id
    assert str(event.payment_id) == "6f1c1a2e-0000-4000-8000-000000000001"
    assert event.failure_code == code


async def test_an_unknown_token_fails_at_once_without_webhook() -> None:
    test = provider()
    answer = await pay(test, "tok_nonsense")
    assert answer.outcome is PaymentOutcome.FAILED
    assert answer.failure_code == "invalid_payment_method"
    assert answer.provider_payment_id is None
    assert not test.webhooks


async def test_the_same_idempotency_key_never_charges_twice() -> None:
    test = provider()
    first = await pay(test, "tok_visa")
    again = await pay(test, "tok_visa")
    assert again == first
    assert len(test.webhooks) == 1
    with pytest.raises(ProviderRejected) as refused:
        await pay(test, "tok_mastercard")
    assert refused.value.code == "idempotency_error"


async def test_refunds_succeed_within_what_was_taken() -> None:
    test = provider()
    answer = await pay(test, "tok_visa")
    refund = await test.refund(
        provider_payment_id=answer.provider_payment_id,
        amount=1000,
        idempotency_key="r1",
        metadata={},
    )
    assert refund.outcome is RefundOutcome.SUCCEEDED
    body = test.webhooks[-1]
    event = test.parse_webhook(test.signed_headers(body), body)
    assert event.kind is EventKind.REFUND_SUCCEEDED
    assert event.provider_refund_id == refund.provider_refund_id
    with pytest.raises(ProviderRejected) as refused:
        await test.refund(
            provider_payment_id=answer.provider_payment_id,
            amount=1000,
            idempotency_key="r2",
            metadata={},
        )
    assert refused.value.code == "amount_too_large"
    declined = await pay(test, "tok_chargeDeclined", key="key-2")
    with pytest.raises(ProviderRejected):
        await test.refund(
            provider_payment_id=declined.provider_payment_id,
            amount=1,
            idempotency_key="r3",
            metadata={},
        )


@pytest.mark.parametrize(
    ("token", "outcome", "code"),
    [
        ("tok_visa", PaymentOutcome.SUCCEEDED, None),
        ("tok_chargeDeclined", PaymentOutcome.FAILED, "card_declined"),
        ("tok_chargeDeclinedInsufficientFunds", PaymentOutcome.FAILED, "insufficient_funds"),
        ("tok_processingError", PaymentOutcome.FAILED, "processing_error"),
    ],
)
async def test_a_payment_is_retrieved_by_a_provider_that_never_saw_it(
    token: str, outcome: PaymentOutcome, code: str | None
) -> None:
    """As Stripe's servers would after our process died: nothing in memory is needed."""
    before = provider()
    answer = await pay(before, token)
    restarted = provider()
    found = await restarted.retrieve_payment(answer.provider_payment_id)
    assert found.provider_payment_id == answer.provider_payment_id
    assert found.outcome is outcome
    assert found.failure_code == code
    # The webhook the first one would have delivered says the same.
    (body,) = before.webhooks
    event = restarted.parse_webhook(restarted.signed_headers(body), body)
    assert (event.provider_payment_id, event.failure_code) == (answer.provider_payment_id, code)


async def test_the_same_key_makes_the_same_payment_in_a_new_process() -> None:
    first = await pay(provider(), "tok_visa")
    again = await pay(provider(), "tok_visa")
    assert again.provider_payment_id == first.provider_payment_id
    other = await pay(provider(), "tok_visa", key="key-2")
    assert other.provider_payment_id != first.provider_payment_id


@pytest.mark.parametrize(
    "unknown",
    [
        "pi_nobody",
        "pi_test_succeeded",
        "pi_test_succeeded_nothex",
        "pi_test_unheardof_0123456789abcdef01234567",
        "pi_0123456789abcdef01234567",
    ],
)
async def test_ids_it_did_not_make_are_not_found(unknown: str) -> None:
    test = provider()
    with pytest.raises(ProviderRejected) as refused:
        await test.retrieve_payment(unknown)
    assert refused.value.code == "resource_missing"
    with pytest.raises(ProviderRejected) as refused:
        await test.refund(provider_payment_id=unknown, amount=1, idempotency_key="r", metadata={})
    assert refused.value.code == "resource_missing"


async def test_refunds_after_a_restart_follow_the_payments_outcome() -> None:
    paid = await pay(provider(), "tok_visa")
    declined = await pay(provider(), "tok_chargeDeclined", key="key-2")
    restarted = provider()
    refund = await restarted.refund(
        provider_payment_id=paid.provider_payment_id, amount=1, idempotency_key="r1", metadata={}
    )
    assert refund.outcome is RefundOutcome.SUCCEEDED
    found = await provider().retrieve_refund(refund.provider_refund_id)
    assert found == refund
    with pytest.raises(ProviderRejected) as refused:
        await restarted.refund(
            provider_payment_id=declined.provider_payment_id,
            amount=1,
            idempotency_key="r2",
            metadata={},
        )
    assert refused.value.code == "charge_not_refundable"
    with pytest.raises(ProviderRejected):
        await restarted.retrieve_refund("re_nobody")


# ---------------------------------------------------------------- signatures


def event_body() -> bytes:
    return orjson.dumps(
        {
            "id": "evt_1",
            "object": "event",
            "type": "payment_intent.succeeded",
            "data": {"object": {"id": "pi_1", "object": "payment_intent", "metadata": {}}},
        }
    )


def test_a_valid_signature_is_accepted() -> None:
    body = event_body()
    headers = {SIGNATURE_HEADER: signature_header(body, SECRET, int(NOW))}
    assert provider().parse_webhook(headers, body).id == "evt_1"


def test_header_names_are_case_insensitive() -> None:
    body = event_body()
    headers = {"stripe-signature": signature_header(body, SECRET, int(NOW))}
    assert provider().parse_webhook(headers, body).provider_payment_id == "pi_1"


def reason(headers: dict[str, str], body: bytes, **options: Any) -> str:
    with pytest.raises(InvalidWebhook) as refused:
        provider(**options).parse_webhook(headers, body)
    return refused.value.reason


def test_a_tampered_body_is_refused() -> None:
    body = event_body()
    headers = {SIGNATURE_HEADER: signature_header(body, SECRET, int(NOW))}
    assert reason(headers, body.replace(b"pi_1", b"pi_2")) == "bad_signature"


def test_another_secret_is_refused() -> None:
    body = event_body()
    headers = {SIGNATURE_HEADER: signature_header(body, "whsec_someone_else", int(NOW))}
    assert reason(headers, body) == "bad_signature"


@pytest.mark.parametrize("age", [301, -301, 3600])
def test_a_stale_or_future_timestamp_is_refused(age: int) -> None:
    body = event_body()
    moment = int(NOW) - age
    headers = {SIGNATURE_HEADER: signature_header(body, SECRET, moment)}
    assert reason(headers, body) == "timestamp_outside_tolerance"


def test_the_tolerance_is_configurable() -> None:
    body = event_body()
    headers = {SIGNATURE_HEADER: signature_header(body, SECRET, int(NOW) - 100)}
    assert reason(headers, body, tolerance_seconds=60) == "timestamp_outside_tolerance"
    assert provider(tolerance_seconds=120).parse_webhook(headers, body).id == "evt_1"


def test_any_of_several_v1_signatures_may_match() -> None:
    body = event_body()
    moment = int(NOW)
    good = sign(body, SECRET, moment)
    rolled = sign(body, "whsec_old_secret", moment)
    header = f"t={moment},v1={rolled},v1={good},v0=ignored"
    assert provider().parse_webhook({SIGNATURE_HEADER: header}, body).id == "evt_1"
    only_wrong = f"t={moment},v1={rolled},v1={'0' * 64}"
    assert reason({SIGNATURE_HEADER: only_wrong}, body) == "bad_signature"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "missing_signature"),
        ("", "missing_signature"),
        ("v1=abc", "malformed_signature"),
        (f"t={int(NOW)}", "malformed_signature"),
        ("t=soon,v1=abc", "malformed_signature"),
        (f"t={int(NOW)},v0=abc", "malformed_signature"),
    ],
)
def test_malformed_headers_are_refused(header: str | None, expected: str) -> None:
    headers = {} if header is None else {SIGNATURE_HEADER: header}
    assert reason(headers, event_body()) == expected


def test_a_signed_body_that_is_not_an_event_is_refused() -> None:
    body = b'{"hello": "world"}'
    headers = {SIGNATURE_HEADER: signature_header(body, SECRET, int(NOW))}
    assert reason(headers, body) == "malformed_payload"


# ------------------------------------------------------------------ delivery


async def test_webhooks_are_delivered_signed_and_retried_until_accepted() -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def flaky(headers: dict[str, str], body: bytes) -> None:
        received.append((headers, body))
        if len(received) < 3:
            raise ConnectionError("endpoint down")

    test = TestProvider(webhook_secret=SECRET, deliver=flaky, retry_base_seconds=0.001)
    await pay(test, "tok_visa")
    await test.drain()
    assert len(received) == 3
    headers, body = received[-1]
    event = test.parse_webhook(headers, body)
    assert event.kind is EventKind.PAYMENT_SUCCEEDED
    assert abs(int(headers[SIGNATURE_HEADER].split(",")[0][2:]) - time.time()) < 5


async def test_close_cancels_deliveries_in_flight() -> None:
    async def never(headers: dict[str, str], body: bytes) -> None:
        raise ConnectionError("down")

    test = TestProvider(webhook_secret=SECRET, deliver=never, retry_base_seconds=60)
    await pay(test, "tok_visa")
    await test.close()
    await test.drain()
