"""The Stripe adapter against a local endpoint that speaks the Stripe API calls it makes."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest

from panthera.payments.providers import (
    EventKind,
    InvalidWebhook,
    PaymentOutcome,
    ProviderRejected,
    ProviderUnavailable,
    RefundOutcome,
    StripeProvider,
)
from panthera.payments.providers.stripe import STRIPE_API_VERSION
from panthera.payments.providers.stripe_webhooks import SIGNATURE_HEADER, sign, signature_header
from tests.payments.conftest import PaymentsService
from tests.payments.fake_stripe import API_KEY, FakeStripe

WEBHOOK_SECRET = "whsec_stripe_test"


def stripe(fake: FakeStripe, **options: Any) -> StripeProvider:
    return StripeProvider(
        api_key=API_KEY,
        webhook_secret=WEBHOOK_SECRET,
        transport=fake.transport(),
        retry_base_seconds=0.001,
        **options,
    )


async def pay(provider: StripeProvider, token: str, key: str = "panthera-payment-1") -> Any:
    return await provider.create_payment(
        amount=1999,
        currency="EUR",
        token=token,
        idempotency_key=key,
        metadata={"panthera_payment_id": "p1", "order_reference": "order-1"},
    )


async def test_create_and_confirm_in_one_form_encoded_call() -> None:
    fake = FakeStripe()
    answer = await pay(stripe(fake), "tok_visa")
    assert answer.outcome is PaymentOutcome.SUCCEEDED
    assert answer.provider_payment_id.startswith("pi_")
    (request,) = fake.requests
    assert request.url == "https://api.stripe.com/v1/payment_intents"
    assert request.headers["Idempotency-Key"] == "panthera-payment-1"
    assert request.headers["Stripe-Version"] == STRIPE_API_VERSION
    (form,) = fake.forms("/v1/payment_intents")
    assert form == {
        "amount": "1999",
        "currency": "eur",
        "confirm": "true",
        "payment_method_types[0]": "card",
        "payment_method_data[type]": "card",
        "payment_method_data[card][token]": "tok_visa",
        "metadata[panthera_payment_id]": "p1",
        "metadata[order_reference]": "order-1",
    }


async def test_payment_method_ids_are_passed_as_payment_method() -> None:
    fake = FakeStripe()
    answer = await pay(stripe(fake), "pm_card_visa")
    assert answer.outcome is PaymentOutcome.SUCCEEDED
    (form,) = fake.forms("/v1/payment_intents")
    assert form["payment_method"] == "pm_card_visa"
    assert "payment_method_data[card][token]" not in form


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("tok_chargeDeclined", "card_declined"),
        ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("tok_chargeDeclinedProcessingError", "processing_error"),
        ("tok_unknown", "invalid_payment_method"),
        ("tok_threeDSecure2Required", "authentication_required"),
    ],
)
async def test_declines_are_answers_with_our_codes(token: str, code: str) -> None:
    answer = await pay(stripe(FakeStripe()), token)
    assert answer.outcome is PaymentOutcome.FAILED
    assert answer.failure_code == code


async def test_an_authentication_required_intent_is_canceled() -> None:
    fake = FakeStripe()
    answer = await pay(stripe(fake), "tok_threeDSecure2Required")
    cancel = fake.requests[-1]
    assert cancel.url.path == f"/v1/payment_intents/{answer.provider_payment_id}/cancel"


async def test_server_errors_are_retried_with_the_same_idempotency_key() -> None:
    fake = FakeStripe(fail_next=2)
    answer = await pay(stripe(fake), "tok_visa")
    assert answer.outcome is PaymentOutcome.SUCCEEDED
    assert len(fake.requests) == 3
    assert {r.headers["Idempotency-Key"] for r in fake.requests} == {"panthera-payment-1"}
    assert len(fake.intents) == 1


async def test_a_provider_that_keeps_failing_is_unavailable() -> None:
    fake = FakeStripe(fail_next=10)
    with pytest.raises(ProviderUnavailable):
        await pay(stripe(fake, max_retries=1), "tok_visa")
    assert len(fake.requests) == 2


async def test_network_errors_are_unavailable() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    provider = StripeProvider(
        api_key=API_KEY,
        webhook_secret=WEBHOOK_SECRET,
        transport=httpx.MockTransport(down),
        retry_base_seconds=0.001,
    )
    with pytest.raises(ProviderUnavailable):
        await pay(provider, "tok_visa")


async def test_a_wrong_api_key_is_a_rejection_not_a_decline() -> None:
    provider = StripeProvider(
        api_key="sk_test_wrong", webhook_secret=WEBHOOK_SECRET, transport=FakeStripe().transport()
    )
    with pytest.raises(ProviderRejected):
        await pay(provider, "tok_visa")


async def test_refunds_go_to_the_refunds_api() -> None:
    fake = FakeStripe()
    provider = stripe(fake)
    paid = await pay(provider, "tok_visa")
    refund = await provider.refund(
        provider_payment_id=paid.provider_payment_id,
        amount=500,
        idempotency_key="panthera-refund-1",
        metadata={"panthera_refund_id": "r1"},
    )
    assert refund.outcome is RefundOutcome.SUCCEEDED
    assert refund.provider_refund_id.startswith("re_")
    (form,) = fake.forms("/v1/refunds")
    assert form == {
        "payment_intent": paid.provider_payment_id,
        "amount": "500",
        "metadata[panthera_refund_id]": "r1",
    }
    assert fake.requests[-1].headers["Idempotency-Key"] == "panthera-refund-1"
    with pytest.raises(ProviderRejected) as refused:
        await provider.refund(
            provider_payment_id=paid.provider_payment_id,
            amount=1500,
            idempotency_key="panthera-refund-2",
            metadata={},
        )
    assert refused.value.code == "amount_too_large"


@pytest.mark.parametrize(
    ("token", "outcome", "code"),
    [
        ("tok_visa", PaymentOutcome.SUCCEEDED, None),
        ("tok_chargeDeclined", PaymentOutcome.FAILED, "card_declined"),
        ("tok_chargeDeclinedInsufficientFunds", PaymentOutcome.FAILED, "insufficient_funds"),
    ],
)
async def test_a_payment_intent_is_retrieved(
    token: str, outcome: PaymentOutcome, code: str | None
) -> None:
    fake = FakeStripe()
    provider = stripe(fake)
    paid = await pay(provider, token)
    found = await provider.retrieve_payment(paid.provider_payment_id)
    assert (found.provider_payment_id, found.outcome) == (paid.provider_payment_id, outcome)
    assert found.failure_code == code
    request = fake.requests[-1]
    assert request.method == "GET"
    assert request.url.path == f"/v1/payment_intents/{paid.provider_payment_id}"
    assert "Idempotency-Key" not in request.headers


async def test_a_retrieved_intent_in_flight_is_processing_until_it_is_not() -> None:
    fake = FakeStripe()
    provider = stripe(fake)
    paid = await pay(provider, "tok_visa")
    intent = fake.intents[paid.provider_payment_id]
    intent["status"] = "processing"
    assert (await provider.retrieve_payment(intent["id"])).outcome is PaymentOutcome.PROCESSING
    intent["status"] = "requires_payment_method"
    intent["last_payment_error"] = {"code": "card_declined", "decline_code": "lost_card"}
    failed = await provider.retrieve_payment(intent["id"])
    assert (failed.outcome, failed.failure_code) == (PaymentOutcome.FAILED, "lost_card")
    intent["status"] = "canceled"
    assert (await provider.retrieve_payment(intent["id"])).outcome is PaymentOutcome.CANCELED


async def test_retrieving_is_retried_and_an_unknown_intent_is_a_rejection() -> None:
    fake = FakeStripe()
    provider = stripe(fake)
    paid = await pay(provider, "tok_visa")
    fake.fail_next = 2
    found = await provider.retrieve_payment(paid.provider_payment_id)
    assert found.outcome is PaymentOutcome.SUCCEEDED
    with pytest.raises(ProviderRejected) as refused:
        await provider.retrieve_payment("pi_nobody")
    assert refused.value.code == "resource_missing"
    fake.fail_next = 10
    with pytest.raises(ProviderUnavailable):
        await provider.retrieve_payment(paid.provider_payment_id)


async def test_a_refund_is_retrieved() -> None:
    fake = FakeStripe()
    provider = stripe(fake)
    paid = await pay(provider, "tok_visa")
    refund = await provider.refund(
        provider_payment_id=paid.provider_payment_id,
        amount=500,
        idempotency_key="panthera-refund-1",
        metadata={},
    )
    fake.refunds[refund.provider_refund_id]["status"] = "pending"
    pending = await provider.retrieve_refund(refund.provider_refund_id)
    assert pending.outcome is RefundOutcome.PENDING
    fake.refunds[refund.provider_refund_id].update(status="failed", failure_reason="lost")
    failed = await provider.retrieve_refund(refund.provider_refund_id)
    assert (failed.outcome, failed.failure_code) == (RefundOutcome.FAILED, "lost")
    with pytest.raises(ProviderRejected):
        await provider.retrieve_refund("re_nobody")


def test_a_configurable_base_url() -> None:
    provider = StripeProvider(
        api_key=API_KEY, webhook_secret=WEBHOOK_SECRET, api_base="http://127.0.0.1:12111/"
    )
    assert str(provider._client.base_url) == "http://127.0.0.1:12111"


def test_webhooks_are_verified_with_stripes_scheme() -> None:
    provider = stripe(FakeStripe())
    body = orjson.dumps(
        {
            "id": "evt_1",
            "type": "payment_intent.payment_failed",
            "data": {
                "object": {
                    "id": "pi_1",
                    "object": "payment_intent",
                    "metadata": {"panthera_payment_id": "0b7bd9f4-4a8a-4b07-9a43-8e64b0c0ff2f"},
                    "last_payment_error": {
                        "code": "card_declined",
                        "decline_code": "insufficient_funds",
                    },
                }
            },
        }
    )
    now = int(time.time())
    header = f"t={now},v1={sign(body, 'whsec_previous', now)},v1={sign(body, WEBHOOK_SECRET, now)}"
    event = provider.parse_webhook({SIGNATURE_HEADER: header}, body)
    assert event.kind is EventKind.PAYMENT_FAILED
    assert event.failure_code == "insufficient_funds"
    stale = {SIGNATURE_HEADER: signature_header(body, WEBHOOK_SECRET, now - 301)}
    with pytest.raises(InvalidWebhook):
        provider.parse_webhook(stale, body)


def test_missing_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="API key"):
        StripeProvider(api_key="", webhook_secret=WEBHOOK_SECRET)
    with pytest.raises(ValueError, match="signing secret"):
        StripeProvider(api_key=API_KEY, webhook_secret="")


async def test_the_service_with_stripe_settles_at_once_and_ignores_the_echo(
    payments: PaymentsService,
) -> None:
    fake = FakeStripe()
    await payments.deps.provider.close()
    payments.deps.provider = stripe(fake)
    user = payments.caller()
    response = await payments.client.post(
        "/webhooks/stripe", content=b"{}", headers={SIGNATURE_HEADER: "t=1,v1=00"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_webhook"
    created = await payments.client.post(
        "/payments",
        json={"orderId": "o-1", "amount": "19.99", "currency": "EUR", "paymentMethod": "tok_visa"},
        headers=user.with_key("k1"),
    )
    assert created.status_code == 201, created.text
    payment = created.json()
    assert payment["status"] == "succeeded"
    (form,) = fake.forms("/v1/payment_intents")
    assert form["metadata[panthera_payment_id]"] == payment["paymentId"]
    assert fake.requests[0].headers["Idempotency-Key"] == f"panthera-payment-{payment['paymentId']}"
    # Stripe's own webhook for it, arriving after the answer: recorded, changes nothing.
    body = orjson.dumps(
        {
            "id": "evt_stripe_1",
            "type": "payment_intent.succeeded",
            "data": {
                "object": {
                    "id": payment["providerPaymentId"],
                    "object": "payment_intent",
                    "status": "succeeded",
                    "metadata": {"panthera_payment_id": payment["paymentId"]},
                }
            },
        }
    )
    headers = {SIGNATURE_HEADER: signature_header(body, WEBHOOK_SECRET, int(time.time()))}
    echo = await payments.client.post("/webhooks/stripe", content=body, headers=headers)
    assert echo.status_code == 200, echo.text
    assert echo.json() == {"received": True, "duplicate": False, "outcome": "ignored"}
    assert len(await payments.events("payment.succeeded")) == 1
    declined = await payments.client.post(
        "/payments",
        json={
            "orderId": "o-2",
            "amount": "5.00",
            "currency": "EUR",
            "paymentMethod": "tok_chargeDeclinedInsufficientFunds",
        },
        headers=user.with_key("k2"),
    )
    assert declined.json()["status"] == "failed"
    assert declined.json()["failureCode"] == "insufficient_funds"
    (failed,) = await payments.events("payment.failed")
    assert failed.payload["reason"] == "insufficient_funds"
